"""Side by side: Flexynesis and balmm on ROSMAP, same split, same machine.

Installs nothing. Give it a Python interpreter that has flexynesis installed
(``--flexynesis-python`` or the ``FLEXYNESIS_PYTHON`` environment variable); balmm
runs with the interpreter running this script. Each tool runs as its own child
process, so its wall time and peak resident memory (``os.wait4`` rusage, which
includes the child's own children) are measured the same way.

Steps: read ROSMAP (MOGONET layout, its 245/106 train/test split) with balmm's
reader; write the same samples and split in Flexynesis' layout
(``train/`` and ``test/``, one ``NAME.csv`` per modality with features as rows and
samples as columns, plus ``clin.csv``); run Flexynesis' command-line entry point (DirectPred,
intermediate fusion, ``--hpo_iter`` trials) and ``python -m balmm train``; score both
on the same test samples with the same scikit-learn metrics (balanced accuracy,
macro-F1, AUROC) and print them with wall time, peak memory and balmm/Flexynesis
ratios.

Example::

    python benchmarks/bench_flexynesis.py --flexynesis-python /tmp/flexenv/bin/python \\
        --threads 2 --hpo-iter 5
    python benchmarks/bench_flexynesis.py --only balmm   # check the balmm half alone
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from balmm.training.metrics import classification_metrics

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROSMAP = REPO.parent / "shared" / "data" / "mogonet_rosmap"
FLEX_PREFIX = "class_"


def run_measured(cmd: list[str], env: dict[str, str], log: Path) -> dict:
    """Run ``cmd``; return wall seconds, peak RSS (MB) and exit code."""
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss * scale, "rc": proc.returncode}


def scores(y_true: list[str], proba: pd.DataFrame, classes: list[str]) -> dict:
    """Balanced accuracy, macro-F1 and AUROC from class probabilities (columns = classes),
    computed exactly as balmm's own metrics.json (``classification_metrics``)."""
    y = np.array([classes.index(v) for v in y_true])
    m = classification_metrics(y, proba[classes].to_numpy(dtype=float), classes)
    return {k: m[k] for k in ("balanced_accuracy", "macro_f1", "auroc")}


def write_flexynesis_layout(data, folder: Path) -> list[str]:
    """The balmm dataset (with its split) as Flexynesis train/ and test/ folders."""
    for split in ("train", "test"):
        ids = data.ids(split)
        out = folder / split
        out.mkdir(parents=True, exist_ok=True)
        for name, m in data.mods.items():
            sub = m[m.obs_names.isin(ids)]
            x = sub.X.toarray() if hasattr(sub.X, "toarray") else np.asarray(sub.X)
            # Flexynesis: features as rows, samples as columns, first column = feature ID.
            # Header row = sample IDs only, as in Flexynesis' documentation (a named index
            # column clashes with its internal 'feature' column).
            pd.DataFrame(x.T, index=list(sub.var_names), columns=list(sub.obs_names)).to_csv(
                out / f"{name}.csv", index_label=False
            )
        clin = data.obs.loc[ids, ["label"]].astype(str)
        # Text labels, so Flexynesis treats the target as categorical, not numeric.
        clin["label"] = FLEX_PREFIX + clin["label"]
        clin.index.name = "sample_id"
        clin.to_csv(out / "clin.csv")
    return list(data.mods)


def flexynesis_scores(outdir: Path, prefix: str, data) -> dict:
    """Scores from Flexynesis' predicted_labels.csv (test rows), else its stats.csv."""
    test_ids = data.ids("test")
    truth = FLEX_PREFIX + data.obs.loc[test_ids, "label"].astype(str)
    classes = sorted(truth.unique())
    pred_file = outdir / f"{prefix}.predicted_labels.csv"
    if pred_file.is_file():
        df = pd.read_csv(pred_file)
        cols = {c.lower(): c for c in df.columns}
        if {"sample_id", "class_label", "probability"} <= set(cols):
            if "split" in cols:
                df = df[df[cols["split"]] == "test"]
            if "method" in cols and df[cols["method"]].nunique() > 1:
                # Baseline models (if enabled) share the file: keep Flexynesis' own model.
                own = df[cols["method"]].astype(str).str.contains("DirectPred")
                df = df[own] if own.any() else df
            wide = df.pivot_table(index=cols["sample_id"], columns=cols["class_label"],
                                  values=cols["probability"])  # fmt: skip
            wide.columns = wide.columns.astype(str)
            wide.index = wide.index.astype(str)
            common = [s for s in test_ids if s in wide.index]
            if common and set(classes) <= set(wide.columns):
                out = scores(truth.loc[common].tolist(), wide.loc[common], classes)
                out["n_test"] = len(common)
                out["source"] = pred_file.name
                return out
    stats_file = outdir / f"{prefix}.stats.csv"
    if stats_file.is_file():
        st = pd.read_csv(stats_file)
        metric = st[[c for c in st.columns if c.lower() == "metric"][0]].astype(str).str.lower()
        value = st[[c for c in st.columns if c.lower() == "value"][0]]
        found = dict(zip(metric, value, strict=True))
        pick = {
            "balanced_accuracy": ["balanced_acc", "balanced_accuracy"],
            "macro_f1": ["f1_score", "macro_f1", "f1"],
            "auroc": ["average_auroc", "auroc", "roc_auc"],
        }
        out = {k: next((float(found[n]) for n in names if n in found), float("nan"))
               for k, names in pick.items()}  # fmt: skip
        out["source"] = stats_file.name + " (Flexynesis' own metric definitions)"
        return out
    raise RuntimeError(f"no Flexynesis predictions or stats in {outdir}")


def balmm_scores(outdir: Path) -> dict:
    m = json.loads((outdir / "metrics.json").read_text())["test"]["fused"]
    return {k: float(m[k]) for k in ("balanced_accuracy", "macro_f1", "auroc")} | {
        "n_test": m.get("n"),
        "source": "metrics.json",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flexynesis-python", default=os.environ.get("FLEXYNESIS_PYTHON"),
                    help="Python with flexynesis installed (or env FLEXYNESIS_PYTHON)")  # fmt: skip
    ap.add_argument("--rosmap", type=Path, default=DEFAULT_ROSMAP, help="MOGONET ROSMAP folder")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for both tools")
    ap.add_argument("--hpo-iter", type=int, default=5, help="Flexynesis tuning trials")
    ap.add_argument("--seed", type=int, default=0, help="balmm seed")
    ap.add_argument("--workdir", type=Path, default=None, help="keep files here (default: tmp)")
    ap.add_argument("--only", choices=["balmm", "flexynesis"], default=None)
    ap.add_argument("--flexynesis-args", default="--disable_marker_finding",
                    help="extra Flexynesis options (default: skip marker finding)")  # fmt: skip
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    from balmm.data.io import load_inputs

    if args.only != "balmm" and not args.flexynesis_python:
        ap.error("give --flexynesis-python (or FLEXYNESIS_PYTHON), or use --only balmm")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="balmm-vs-flexynesis-"))
    work.mkdir(parents=True, exist_ok=True)
    data = load_inputs([str(args.rosmap)])
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(args.threads)
    results: dict[str, dict] = {}

    if args.only != "flexynesis":
        out = work / "balmm_out"
        cmd = [sys.executable, "-m", "balmm", "--quiet", "train", str(args.rosmap), "--out",
               str(out), "--seed", str(args.seed), "--device", "cpu"]  # fmt: skip
        r = run_measured(cmd, env, work / "balmm.log")
        if r["rc"] != 0:
            print(f"balmm failed (exit {r['rc']}); see {work / 'balmm.log'}", file=sys.stderr)
            return 1
        results["balmm"] = r | balmm_scores(out)

    if args.only != "balmm":
        flex_data = work / "flexynesis_data"
        names = write_flexynesis_layout(data, flex_data)
        out = work / "flexynesis_out"
        out.mkdir(exist_ok=True)
        # The console-script entry point (flexynesis.__main__:main); `python -m flexynesis`
        # does not call main() in recent releases.
        launcher = "import sys; from flexynesis.__main__ import main; sys.exit(main())"
        cmd = [args.flexynesis_python, "-c", launcher, "--data_path", str(flex_data),
               "--model_class", "DirectPred", "--target_variables", "label",
               "--data_types", ",".join(names), "--hpo_iter", str(args.hpo_iter),
               "--fusion_type", "intermediate", "--threads", str(args.threads),
               "--outdir", str(out), "--prefix", "rosmap",
               *args.flexynesis_args.split()]  # fmt: skip
        r = run_measured(cmd, env, work / "flexynesis.log")
        if r["rc"] != 0:
            print(f"flexynesis failed (exit {r['rc']}); see {work / 'flexynesis.log'}",
                  file=sys.stderr)  # fmt: skip
            return 1
        results["flexynesis"] = r | flexynesis_scores(out, "rosmap", data)

    print(f"ROSMAP ({data.split_source}); {args.threads} threads; files in {work}")
    keys = ["wall_s", "peak_rss_mb", "balanced_accuracy", "macro_f1", "auroc"]
    print(f"{'tool':<12}" + "".join(f"{k:>19}" for k in keys))
    for tool, r in results.items():
        print(f"{tool:<12}" + "".join(f"{r[k]:>19.3f}" for k in keys))
    if len(results) == 2:
        b, f = results["balmm"], results["flexynesis"]
        print(f"{'balmm/flex':<12}" + "".join(f"{b[k] / f[k]:>19.3f}" for k in keys))
    for tool, r in results.items():
        print(f"{tool}: metrics from {r['source']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
