"""Multi-seed results of ``balmm train`` for docs/results.md.

    .venv/bin/python benchmarks/results_train.py [--data PATH ...] [--seeds 5] \
        [--balancers balmm none concat] [--noise] [--json out.json] \
        [--label-col COL] [--split-col COL]

For each balancer, trains with seeds 0..N-1 (each seed changes the validation split
and the initialisation; the test split is the dataset's) and prints mean ± sd of
test fused accuracy / macro-F1 / AUROC, each head's test macro-F1 and the
under-optimisation gap. ``--noise`` adds a pure-noise modality (200 standard-normal
features, same samples) to measure how much an uninformative assay costs.
"""

from __future__ import annotations

import argparse
import json
import time

import anndata as ad
import numpy as np
import pandas as pd

from balmm.data.io import load_inputs
from balmm.training.fit import train


def add_noise(data, seed: int = 12345, n_features: int = 200):
    rng = np.random.default_rng(seed)
    ids = data.obs.index
    x = rng.standard_normal((len(ids), n_features)).astype(np.float32)
    var = pd.DataFrame(index=[f"noise_{i}" for i in range(n_features)])
    noise = ad.AnnData(X=x, obs=pd.DataFrame(index=ids.copy()), var=var)
    data.mods["noise"] = noise
    return data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", nargs="*", default=[])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--balancers", nargs="+", default=["balmm", "none", "concat"])
    ap.add_argument("--noise", action="store_true")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides key=value (JSON)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--label-col", default=None, help="as balmm train's --label-col")
    ap.add_argument("--split-col", default=None, help="as balmm train's --split-col")
    args = ap.parse_args()
    opts = {k: v for k, v in (("label_col", args.label_col), ("split_col", args.split_col)) if v}
    data = load_inputs(args.data, **opts)
    if args.noise:
        data = add_noise(data)
    ov = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    rows = []
    for bal in args.balancers:
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            r = train(data, balancer=bal, seed=seed, **ov)
            m = r.metrics
            row = {"balancer": bal, "seed": seed, "seconds": time.perf_counter() - t0}
            for k in ("accuracy", "macro_f1", "auroc"):
                row[f"fused_{k}"] = m["test"]["fused"][k]
            for mod, v in m["test"]["modalities"].items():
                row[f"head_f1:{mod}"] = v.get("macro_f1")
            for mod, v in m["imbalance"]["under_optimisation_gap"].items():
                row[f"gap:{mod}"] = v["gap_test"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    df = pd.DataFrame(rows)
    agg = df.drop(columns="seed").groupby("balancer", sort=False).agg(["mean", "std"])
    pd.set_option("display.width", 250)
    print(agg.round(3).to_string())
    if args.json:
        df.to_json(args.json, orient="records", indent=1)


if __name__ == "__main__":
    main()
