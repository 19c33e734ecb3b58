"""Where a small ``balmm train`` spends its time (figures for docs/benchmarks.md).

    .venv/bin/python benchmarks/small_run_phases.py [--repeats 3] [-- TRAIN ARGS...]

Runs ``balmm -q train --out TMP`` (the bundled ROSMAP example unless TRAIN ARGS name
inputs) in a fresh Python process per repeat, with timers around the imports, the
report's markers and figures, and the CLI as a whole; training's own stages come from the
run's timing.json; ``wall_s`` is the whole process, start-up included. Prints one JSON
object per repeat and the per-phase minimum.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

# what runs in each fresh process: the CLI as the console script runs it, phases timed
_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from balmm.cli.common import imports_out_of_gc
with imports_out_of_gc():  # what `balmm train` imports before training, as it does
    import matplotlib.figure, scanpy, balmm.cli, balmm.training.fit  # noqa: E401, F401
imports = time.perf_counter() - t0
from balmm.training import report
times = {}
def timed(name, fn):
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            times[name] = times.get(name, 0.0) + time.perf_counter() - t
    return wrapper
report._markers = timed("markers", report._markers)
report._plots = timed("plots", report._plots)
report.write_outputs_into = timed("outputs", report.write_outputs_into)
out, args = sys.argv[1], sys.argv[2:]
sys.argv = ["balmm", "-q", "train", *args, "--out", out]
def figures():  # run() ends the process itself, after the atexit handlers
    cli = time.perf_counter() - t1
    stages = json.load(open(out + "/timing.json"))
    print(json.dumps({"imports_s": imports, "cli_s": cli, **stages,
                      **{k + "_s": v for k, v in times.items()}}), flush=True)
import atexit
atexit.register(figures)
t1 = time.perf_counter()
balmm.cli.run()
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("train_args", nargs="*", help="after --: inputs and options for train")
    a = ap.parse_args()
    runs = []
    for _ in range(a.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", _CHILD, f"{tmp}/out", *a.train_args],
                                 check=True, capture_output=True, text=True)  # fmt: skip
            wall = time.perf_counter() - t0
            runs.append({"wall_s": wall, **json.loads(res.stdout.strip().splitlines()[-1])})
            print(json.dumps({k: round(v, 2) for k, v in runs[-1].items()}))
    best = {k: round(min(r[k] for r in runs), 2) for k in runs[0]}
    print(json.dumps({"min": best}))


if __name__ == "__main__":
    main()
