"""Time and memory of the data layer: reading, pairing and train-only preprocessing.

Generates a sparse count modality (.h5ad, single-cell sized) and a dense CSV modality, then
measures ``load_inputs``, ``Preprocessor.fit`` and ``Preprocessor.transform``.

    .venv/bin/python benchmarks/bench_data.py [--cells 20000] [--genes 5000] [--density 0.05]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from balmm.data.io import load_inputs
from balmm.data.preprocess import Preprocessor


def peak_rss_mb() -> float:
    """Peak resident memory of this process image (VmHWM; ru_maxrss survives exec on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(folder: Path, max_features: int) -> None:
    """Runs in a fresh process so peak RSS is the data layer's, not the generator's."""
    print(f"after imports: peak RSS {peak_rss_mb():.0f} MB")
    t0 = time.perf_counter()
    data = load_inputs([f"rna={folder / 'rna.h5ad'}", f"adt={folder / 'adt.csv.gz'}"])
    t1 = time.perf_counter()
    print(
        f"load_inputs: {t1 - t0:.2f} s (rna stays sparse: {sp.issparse(data.mods['rna'].X)}); "
        f"peak RSS so far {peak_rss_mb():.0f} MB"
    )
    pre = Preprocessor(max_features=max_features)
    train = data.ids("train")
    pre.fit(data, train)
    t2 = time.perf_counter()
    print(
        f"Preprocessor.fit ({len(train)} train samples): {t2 - t1:.2f} s; rna counts "
        f"detected: {pre.summary()['rna']['is_count']}; peak RSS so far {peak_rss_mb():.0f} MB"
    )
    out = pre.transform(data, data.ids())
    t3 = time.perf_counter()
    shapes = {m: v.shape for m, v in out.X.items()}
    print(f"Preprocessor.transform (all samples): {t3 - t2:.2f} s -> {shapes}")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=20000)
    parser.add_argument("--genes", type=int, default=5000)
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--dense-features", type=int, default=500)
    parser.add_argument("--max-features", type=int, default=2000)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        measure(args.measure, args.max_features)
        return
    rng = np.random.default_rng(0)
    ids = [f"c{i:06d}" for i in range(args.cells)]
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        x = sp.random(
            args.cells,
            args.genes,
            density=args.density,
            format="csr",
            random_state=0,
            data_rvs=lambda n: rng.poisson(5, n) + 1,
        ).astype(np.float32)
        labels = rng.choice(["a", "b", "c"], args.cells)
        a = ad.AnnData(x, obs=pd.DataFrame({"label": labels}, index=ids))
        a.var_names = [f"g{j}" for j in range(args.genes)]
        a.write_h5ad(tmp / "rna.h5ad")
        dense = pd.DataFrame(
            rng.normal(size=(args.cells, args.dense_features)).astype(np.float32),
            index=ids,
            columns=[f"p{j}" for j in range(args.dense_features)],
        )
        dense.index.name = "sample"
        dense.to_csv(tmp / "adt.csv.gz", float_format="%.4g")
        del a, x, dense
        print(
            f"input: {args.cells} samples; rna {args.genes} genes sparse "
            f"(density {args.density}); adt {args.dense_features} dense features (csv.gz)"
        )
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--measure",
                str(tmp),
                "--max-features",
                str(args.max_features),
            ],
            check=True,
        )


if __name__ == "__main__":
    main()
