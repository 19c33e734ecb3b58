"""balmm inspect / convert through the CLI, and every bad-input case -> exit 2, one line."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from balmm.cli import main
from balmm.data.io import example_path, read_h5mu
from datagen import frames, write_mogonet, write_named


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _fail(capsys, argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    line = _err(capsys)
    for n in needles:
        assert n in line, line
    return line


@pytest.fixture
def named(tmp_path):
    specs = write_named(tmp_path)
    return specs, ["--labels", str(tmp_path / "labels.csv")]


def test_inspect_default_example(capsys):
    assert main(["inspect"]) == 0
    out = capsys.readouterr().out
    assert "mrna" in out and "methylation" in out and "351" in out
    assert "0 (= Normal control)" in out and "118" in out and "55" in out


def test_inspect_json_and_partial_pairing(tmp_path, capsys):
    # Like the TCGA-BRCA subset: the third assay exists for the training samples only.
    mods, y = frames(30, n_feat=(6, 4, 3))
    train, test = y.index[:20], y.index[20:]
    specs, tests = [], []
    for name, df in mods.items():
        df.loc[train].to_csv(tmp_path / f"{name}_train.csv")
        specs.append(f"{name}={tmp_path / f'{name}_train.csv'}")
        if name != "m2":
            df.loc[test].to_csv(tmp_path / f"{name}_test.csv")
            tests += ["--test", f"{name}={tmp_path / f'{name}_test.csv'}"]
    y.to_frame().to_csv(tmp_path / "labels.csv")
    argv = ["inspect", *specs, *tests, "--labels", str(tmp_path / "labels.csv"), "--json"]
    assert main(argv) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["modalities"]["m2"]["n_test"] == 0
    assert info["pairing"]["modalities"]["m2"] == {"present": 20, "missing": 10}
    assert info["labels"]["test"] == {"case": 5, "ctrl": 5}


def test_convert_round_trips_identically(tmp_path, capsys, named):
    specs, lab = named
    out = tmp_path / "o" / "data.h5mu"
    assert main(["convert", *specs, *lab, "--seed", "4", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["inspect", *specs, *lab, "--seed", "4", "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert main(["inspect", str(out), "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    before.pop("source"), after.pop("source")
    assert before == after
    r = read_h5mu(out)
    mods, y = frames()
    for name, df in mods.items():
        np.testing.assert_allclose(r.mods[name].X, df.to_numpy(np.float32), rtol=1e-6)
        assert list(r.mods[name].obs_names) == list(df.index)
        assert list(r.mods[name].var_names) == list(df.columns)
    assert (r.obs["label"] == y).all()
    assert not list(tmp_path.joinpath("o").glob(".*tmp*"))  # no temp file left behind


def test_convert_example_round_trip(tmp_path, capsys):
    out = tmp_path / "r.h5mu"
    assert main(["convert", "--out", str(out)]) == 0
    a, b = read_h5mu(example_path("rosmap")), read_h5mu(out)
    assert a.obs.equals(b.obs) and a.label_mapping == b.label_mapping
    for m in a.mods:
        np.testing.assert_array_equal(a.mods[m].X, b.mods[m].X)


def test_path_missing(capsys, tmp_path):
    _fail(capsys, ["inspect", f"a={tmp_path / 'nope.csv'}"], "nope.csv", "not found")
    _fail(capsys, ["inspect", str(tmp_path / "nope.h5mu")], "nope.h5mu", "not found")


def test_unknown_extension(capsys, tmp_path):
    (tmp_path / "x.xlsx").write_text("a")
    _fail(capsys, ["inspect", f"a={tmp_path / 'x.xlsx'}"], "x.xlsx", "unknown extension")


def test_corrupt_h5ad_and_h5mu(capsys, tmp_path):
    mods, _ = frames()
    a = ad.AnnData(mods["m0"].to_numpy(np.float32))
    a.write_h5ad(tmp_path / "ok.h5ad")
    raw = (tmp_path / "ok.h5ad").read_bytes()
    (tmp_path / "cut.h5ad").write_bytes(raw[: len(raw) // 2])
    _fail(
        capsys,
        ["inspect", f"a={tmp_path / 'cut.h5ad'}", "--allow-unlabelled"],
        "cut.h5ad",
        "not a readable .h5ad",
    )
    (tmp_path / "bad.h5mu").write_bytes(b"not hdf5 at all" * 10)
    _fail(capsys, ["inspect", str(tmp_path / "bad.h5mu")], "bad.h5mu", "not a readable .h5mu")


def test_non_numeric_value_names_row_and_column(capsys, tmp_path, named):
    specs, lab = named
    path = specs[0].split("=", 1)[1]
    df = pd.read_csv(path, index_col=0)
    df = df.astype(object)
    df.loc["s007", "m0_f3"] = "high"
    df.to_csv(path)
    _fail(capsys, ["inspect", *specs, *lab], "m0.csv", "'high'", "'s007'", "'m0_f3'")


def test_inf_rejected_but_nan_reported(capsys, tmp_path, named):
    specs, lab = named
    path = specs[1].split("=", 1)[1]
    df = pd.read_csv(path, index_col=0)
    df.iloc[2, 1] = np.nan
    df.to_csv(path)
    assert main(["inspect", *specs, *lab, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["modalities"]["m1"]["missing_values"] == 1
    df.iloc[3, 0] = np.inf
    df.to_csv(path)
    _fail(capsys, ["inspect", *specs, *lab], "infinite", "'s003'", "'m1_f0'")


def test_duplicate_sample_ids_and_feature_names(capsys, tmp_path, named):
    specs, lab = named
    path = specs[0].split("=", 1)[1]
    text = Path(path).read_text().splitlines()
    Path(path).write_text("\n".join([*text, text[1]]) + "\n")
    _fail(capsys, ["inspect", *specs, *lab], "duplicate sample ID", "'s000'")
    header = text[0].split(",")
    header[2] = header[1]
    Path(path).write_text("\n".join([",".join(header), *text[1:]]) + "\n")
    _fail(capsys, ["inspect", *specs, *lab], "duplicate column name", "'m0_f0'")


def test_no_shared_sample(capsys, tmp_path):
    mods, y = frames()
    mods["m0"].to_csv(tmp_path / "a.csv")
    mods["m1"].rename(index=lambda s: "X" + s).to_csv(tmp_path / "b.csv")
    y.to_frame().to_csv(tmp_path / "y.csv")
    _fail(
        capsys,
        [
            "inspect",
            f"a={tmp_path / 'a.csv'}",
            f"b={tmp_path / 'b.csv'}",
            "--labels",
            str(tmp_path / "y.csv"),
        ],
        "shares no sample ID",
    )


def test_labels_missing_for_some_samples_are_reported(capsys, tmp_path, named):
    specs, _ = named
    y = frames()[1]
    y.iloc[:25].to_frame().to_csv(tmp_path / "part.csv")
    assert main(["inspect", *specs, "--labels", str(tmp_path / "part.csv")]) == 0
    out = capsys.readouterr().out
    assert "5 of 30 samples have no label" in out and "dropped from supervised" in out
    y.rename(index=lambda s: "zz" + s).to_frame().to_csv(tmp_path / "none.csv")
    _fail(
        capsys,
        ["inspect", *specs, "--labels", str(tmp_path / "none.csv")],
        "none.csv",
        "none of its 30 sample IDs",
    )


def test_too_few_classes(capsys, tmp_path, named):
    specs, _ = named
    pd.DataFrame({"y": ["a"] * 30}, index=frames()[1].index).to_csv(tmp_path / "one.csv")
    _fail(
        capsys,
        ["inspect", *specs, "--labels", str(tmp_path / "one.csv")],
        "only class 'a'",
        "at least 2 classes",
    )
    lab = pd.DataFrame(
        {"y": ["a"] * 29 + ["b"], "split": ["train"] * 20 + ["test"] * 10}, index=frames()[1].index
    )
    lab.to_csv(tmp_path / "rare.csv")
    _fail(
        capsys,
        ["inspect", *specs, "--labels", str(tmp_path / "rare.csv"), "--label-col", "y"],
        "class 'b'",
        "0 training sample",
    )


def test_zero_features_or_samples(capsys, tmp_path, named):
    specs, lab = named
    path = specs[0].split("=", 1)[1]
    ids = pd.read_csv(path, index_col=0).index
    pd.DataFrame(index=pd.Index(ids, name="sample")).to_csv(path)
    _fail(capsys, ["inspect", *specs, *lab], "m0.csv", "0 features")
    pd.DataFrame(columns=["f1", "f2"], index=pd.Index([], name="sample")).to_csv(path)
    _fail(capsys, ["inspect", *specs, *lab], "m0.csv", "0 samples")


def test_mogonet_row_counts_disagree(capsys, tmp_path):
    write_mogonet(tmp_path)
    lines = (tmp_path / "2_tr.csv").read_text().splitlines()
    (tmp_path / "2_tr.csv").write_text("\n".join(lines[:-1]) + "\n")
    _fail(capsys, ["inspect", str(tmp_path)], "row counts disagree", "2_tr.csv: 19", "1_tr.csv: 20")


def test_mogonet_test_labels_without_test_matrices(capsys, tmp_path):
    write_mogonet(tmp_path)
    for f in tmp_path.glob("[0-9]_te.csv"):
        f.unlink()
    _fail(capsys, ["inspect", str(tmp_path)], "labels_te.csv has 10 rows", "no k_te.csv matrix")


def test_label_column_missing_and_repeated_name(capsys, tmp_path, named):
    specs, lab = named
    _fail(
        capsys,
        ["inspect", *specs, *lab, "--label-col", "subtype"],
        "label column 'subtype' not found",
        "labels.csv",
    )
    _fail(
        capsys,
        ["inspect", specs[0], specs[0].replace("m0=", "m0="), *lab],
        "modality name 'm0' given more than once",
    )


def test_convert_needs_h5mu_suffix(capsys, tmp_path):
    _fail(capsys, ["convert", "--out", str(tmp_path / "x.h5ad")], "must end in .h5mu")


def test_bad_split_values_and_unknown_test_modality(capsys, tmp_path, named):
    specs, _ = named
    y = frames()[1]
    lab = y.to_frame().assign(part=["train"] * 20 + ["validation"] + ["test"] * 9)
    lab.to_csv(tmp_path / "lab.csv")
    _fail(
        capsys,
        ["inspect", *specs, "--labels", str(tmp_path / "lab.csv"), "--split-col", "part"],
        "split column 'part'",
        "'s020'",
        "'validation'",
    )
    _fail(
        capsys,
        ["inspect", *specs, "--labels", str(tmp_path / "lab.csv"), "--split-col", "fold"],
        "split column 'fold' not found",
    )
    _fail(
        capsys,
        [
            "inspect",
            *specs,
            "--labels",
            str(tmp_path / "lab.csv"),
            "--label-col",
            "label",
            "--test",
            f"prot={tmp_path / 'm0.csv'}",
        ],
        "'prot' is not one of the modalities",
    )
