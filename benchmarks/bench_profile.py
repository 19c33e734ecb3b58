"""Wall time and peak memory of ``balmm.profile`` on ROSMAP and on simulated data.

Each case runs in a fresh child process so its peak resident memory (ru_maxrss)
is its own. Prints one line per case; record the figures in docs/benchmarks.md
together with the machine (``nproc``, CPU model).

    .venv/bin/python benchmarks/bench_profile.py                 # rosmap, 10k, 100k
    .venv/bin/python benchmarks/bench_profile.py --cases rosmap --threads 2
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import time


def _case(name: str, threads: int | None, max_samples: int, queue) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
    import balmm
    from balmm.data.io import example_path, read_h5mu
    from balmm.data.simulate import simulate

    t0 = time.perf_counter()
    if name == "rosmap":
        data = read_h5mu(example_path("rosmap"))
    else:
        n = {"10k": 10_000, "100k": 100_000}[name]
        data = simulate(n_samples=n, missing_rate=0.1, seed=0)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    r = balmm.profile(data, max_samples=max_samples, threads=threads)
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(
        {
            "case": name,
            "n_samples": len(data.obs),
            "n_train_used": r.dataset["n_train_used"],
            "load_s": t_load,
            "profile_s": wall,
            "peak_mb": peak_mb,
            "strongest": r.strongest,
            "stages": {k: round(v, 1) for k, v in r.timings_s.items()},
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="rosmap,10k,100k")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch/BLAS threads (default: balmm's)"
    )
    ap.add_argument("--max-samples", type=int, default=2000)
    args = ap.parse_args()
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs visible, "
        f"python {platform.python_version()}"
    )
    ctx = mp.get_context("spawn")
    for name in args.cases.split(","):
        q = ctx.Queue()
        p = ctx.Process(target=_case, args=(name, args.threads, args.max_samples, q))
        p.start()
        res = q.get()
        p.join()
        print(
            f"{res['case']:>7}: n={res['n_samples']} (probes on {res['n_train_used']}) "
            f"load {res['load_s']:.1f} s, profile {res['profile_s']:.1f} s, "
            f"peak RSS {res['peak_mb']:.0f} MB, strongest={res['strongest']}  "
            f"stages {res['stages']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
