"""Complementary simulation: how close does each balancer get to the Bayes accuracy?

``simulate --scenario complementary`` (3 classes; ``strong`` tells class0 from the rest,
``weak`` tells class2 from the rest; only together do they separate all three), one
dataset per seed (n samples, 30% stratified test split), every balancer trained with that
seed, plus the ``stacked-logreg`` and ``logreg`` floors. Prints, per method, the mean test
accuracy and its gap to the fused Bayes accuracy stored by the simulator (the expected
accuracy of the true classifier; the test split's own sampling noise, about
sqrt(p (1 - p) / 180) = 0.03 per seed at n = 600, is not removed).

    .venv/bin/python benchmarks/complementary_sim.py [--n 600] [--seeds 5] \
        [--balancers balmm none] [--set key=json ...] [--jobs 2] [--json rows.json]
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd


def _data(n: int, seed: int):
    from balmm.data.simulate import SCENARIOS, simulate

    n_classes, mods = SCENARIOS["complementary"]
    return simulate(n_samples=n, n_classes=n_classes, modalities=mods, seed=seed)


def _job(job: tuple) -> list[dict]:
    n, seed, method, overrides = job
    warnings.filterwarnings("ignore")
    from balmm.bench.classic import classic_floors
    from balmm.training.fit import train

    data = _data(n, seed)
    bayes = data.uns["simulation"]["bayes_accuracy"]
    base = {"seed": seed, "bayes_fused": bayes["fused"]}
    base.update({f"bayes_{m}": v for m, v in bayes["modalities"].items()})
    if method == "classic":
        rows = classic_floors(
            data, data.ids("train"), data.ids("test"), seed=seed,
            methods=["logreg", "stacked-logreg"],
        )  # fmt: skip
        return [{**base, "method": r["method"], "accuracy": r["accuracy"],
                 "macro_f1": r["macro_f1"]} for r in rows]  # fmt: skip
    m = train(data, balancer=method, seed=seed, threads=1, **overrides).metrics["test"]
    row = {**base, "method": method, "accuracy": m["fused"]["accuracy"],
           "macro_f1": m["fused"]["macro_f1"]}  # fmt: skip
    row.update({f"head_acc:{k}": v["accuracy"] for k, v in m["modalities"].items()})
    return [row]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--balancers", nargs="+", default=["balmm", "none"])
    ap.add_argument("--set", nargs="*", default=[], help="config overrides key=json")
    ap.add_argument("--no-classic", action="store_true")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    methods = list(args.balancers) + ([] if args.no_classic else ["classic"])
    jobs = [(args.n, s, m, overrides) for m in methods for s in range(args.seeds)]
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        rows = [r for out in pool.map(_job, jobs) for r in out]
    df = pd.DataFrame(rows)
    df["gap_to_bayes"] = df["accuracy"] - df["bayes_fused"]
    if args.json:
        df.to_json(args.json, orient="records", indent=1)
    pd.set_option("display.width", 200)
    summary = df.groupby("method", sort=False)[["accuracy", "gap_to_bayes", "macro_f1"]].agg(
        ["mean", "std"]
    )
    print(f"n = {args.n}, seeds 0-{args.seeds - 1}; Bayes accuracy (fused) "
          f"{df['bayes_fused'].mean():.3f} (mean over seeds)")  # fmt: skip
    print(summary.round(3).to_string())
    if "none" in set(df["method"]):
        acc = df.pivot(index="seed", columns="method", values="accuracy")
        for m in acc.columns.drop("none"):
            d = acc[m] - acc["none"]
            print(f"{m} - none: {d.mean():+.3f} (per seed {np.round(d.to_numpy(), 3).tolist()})")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
