"""Small generated input files in every supported layout (for the data-layer tests), and
small in-memory training splits (for the cross-fitting tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def frames(n: int = 30, n_feat: tuple[int, ...] = (6, 4), seed: int = 0, prefix: str = "s"):
    """Modality frames (samples x features) and a label series with two string classes."""
    rng = np.random.default_rng(seed)
    ids = [f"{prefix}{i:03d}" for i in range(n)]
    y = np.array(["ctrl", "case"])[np.arange(n) % 2]
    mods = {}
    for k, p in enumerate(n_feat):
        x = rng.normal(size=(n, p)) + (y == "case")[:, None] * 1.0
        mods[f"m{k}"] = pd.DataFrame(
            x, index=pd.Index(ids, name="sample"), columns=[f"m{k}_f{j}" for j in range(p)]
        )
    return mods, pd.Series(y, index=pd.Index(ids, name="sample"), name="label")


def write_named(folder: Path, n: int = 30, ext: str = ".csv", seed: int = 0) -> list[str]:
    """NAME=PATH files and a labels.csv; returns the INPUTS list."""
    folder.mkdir(parents=True, exist_ok=True)
    mods, y = frames(n, seed=seed)
    sep = "\t" if ".tsv" in ext else ","
    specs = []
    for name, df in mods.items():
        path = folder / f"{name}{ext}"
        df.to_csv(path, sep=sep)
        specs.append(f"{name}={path}")
    y.to_frame().to_csv(folder / "labels.csv")
    return specs


def write_mogonet(folder: Path, n_tr: int = 20, n_te: int = 10, seed: int = 0) -> dict:
    """A MOGONET folder: headerless k_tr/k_te matrices, k_featname, labels_tr/te (floats)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    y_tr = np.arange(n_tr) % 2
    y_te = np.arange(n_te) % 2
    out = {"y_tr": y_tr, "y_te": y_te}
    for k, names in (
        (1, [f"ENSG{j:011d}" for j in range(5)]),
        (2, [f"cg{j:08d}" for j in range(4)]),
    ):
        for split, y in (("tr", y_tr), ("te", y_te)):
            x = rng.random((len(y), len(names))) + y[:, None]
            np.savetxt(folder / f"{k}_{split}.csv", x, delimiter=",")
            out[f"{k}_{split}"] = x
        (folder / f"{k}_featname.csv").write_text("\n".join(names) + "\n")
    np.savetxt(folder / "labels_tr.csv", y_tr.astype(float), delimiter=",")
    np.savetxt(folder / "labels_te.csv", y_te.astype(float), delimiter=",")
    return out


def write_flexynesis(folder: Path, n_tr: int = 20, n_te: int = 8, seed: int = 0) -> dict:
    """A Flexynesis folder: train/ and test/ with features x samples CSVs and clin.csv."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n, off in (("train", n_tr, 0), ("test", n_te, 1000)):
        d = folder / split
        d.mkdir(parents=True, exist_ok=True)
        ids = [f"p{off + i}" for i in range(n)]
        y = np.array(["A", "B", "C"])[np.arange(n) % 3]
        for name, p in (("gex", 5), ("cnv", 3)):
            x = pd.DataFrame(
                rng.normal(size=(p, n)), index=[f"{name}_{j}" for j in range(p)], columns=ids
            )
            x.index.name = "feature"
            x.to_csv(d / f"{name}.csv")
            out[f"{split}_{name}"] = x
        clin = pd.DataFrame({"subtype": y, "age": rng.integers(30, 80, n)}, index=ids)
        clin.index.name = "sample"
        clin.to_csv(d / "clin.csv")
        out[f"{split}_clin"] = clin
    return out


def two_assay_split(rng: np.random.Generator, n: int = 120, n_features: int = 10,
                    n_missing_b: int = 0):  # fmt: skip
    """A training split of two assays with two classes: ``a`` separates them by 1.5 on its
    first feature, ``b`` by 0.8; ``n_missing_b`` random samples lack ``b``."""
    import torch

    from balmm.training.tensors import Split

    y = np.arange(n) % 2
    X, M = {}, {}
    for m, shift in (("a", 1.5), ("b", 0.8)):
        x = rng.normal(size=(n, n_features)).astype(np.float32)
        x[:, 0] += shift * y
        X[m] = torch.as_tensor(x)
        M[m] = torch.ones(n, dtype=torch.bool)
    if n_missing_b:
        M["b"][rng.choice(n, n_missing_b, replace=False)] = False
    return Split(pd.Index([f"s{i}" for i in range(n)]), X, M, torch.as_tensor(y))
