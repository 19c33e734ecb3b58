"""Choose ``balmm train`` defaults by cross-validation on the TRAINING split only.

The test split of the dataset is dropped before anything else: every fold's
"test" part is a held-out fold of the training samples, and ``train`` carves its
own validation split from the remaining folds, exactly as in a real run.

    .venv/bin/python benchmarks/tune_train.py --folds 5 \
        --grid '{"late_heads": [true, false]}' [--data PATH] [--threads 2]

Prints one line per configuration: mean and sd over folds of fused accuracy,
macro-F1 and AUROC.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np

from balmm.bench.run import cv_fold
from balmm.data.io import load_inputs
from balmm.training.fit import train


def cv_score(data, overrides: dict, folds: int, seed: int) -> dict:
    sub = data.subset(data.ids("train"))
    res = []
    for k in range(folds):
        r = train(cv_fold(sub, folds, seed, k), seed=seed + k, **overrides)
        f = r.metrics["test"]["fused"]
        res.append((f["accuracy"], f["macro_f1"], f["auroc"]))
    a = np.array(res)
    return {"mean": a.mean(0).tolist(), "sd": a.std(0, ddof=1).tolist()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", nargs="*", default=[])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grid", default="{}")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    data = load_inputs(args.data)
    grid = json.loads(args.grid)
    keys = list(grid)
    for values in itertools.product(*[grid[k] for k in keys]) if keys else [()]:
        ov = dict(zip(keys, values, strict=True))
        t0 = time.perf_counter()
        s = cv_score(data, {**ov, "threads": args.threads}, args.folds, args.seed)
        m, sd = s["mean"], s["sd"]
        print(
            f"{json.dumps(ov)}  acc {m[0]:.3f}±{sd[0]:.3f}  F1 {m[1]:.3f}±{sd[1]:.3f}  "
            f"AUROC {m[2]:.3f}±{sd[2]:.3f}  ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
