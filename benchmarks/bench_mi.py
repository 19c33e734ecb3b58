"""Speed and accuracy of the MI estimators on jointly Gaussian data with known MI.

Needs only numpy and torch (runs on a bare GPU machine with ``PYTHONPATH=src``):

    .venv/bin/python benchmarks/bench_mi.py --device cpu --sizes 2000,10000
    PYTHONPATH=src python3 benchmarks/bench_mi.py --device cuda --sizes 2000,20000,100000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from balmm.profiling.mi import gaussian_mi, gaussian_mi_true, infonce_mi, ksg_mi


def pair(n: int, rhos: list[float], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    r = np.asarray(rhos)
    a = rng.standard_normal((n, len(r)))
    return a, r * a + np.sqrt(1 - r**2) * rng.standard_normal((n, len(r)))


def timed(fn, *args, **kw) -> tuple[float, float]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    v = fn(*args, **kw)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return v, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="2000,10000")
    ap.add_argument("--infonce-steps", type=int, default=300)
    args = ap.parse_args()
    dev = args.device
    name = torch.cuda.get_device_name(0) if dev.startswith("cuda") else "cpu"
    print(f"device {dev} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads")
    rhos = [0.8, 0.5, 0.3, 0.0, 0.0]  # 5+5 dims, like profile's PCA embeddings
    truth = gaussian_mi_true(rhos)
    ksg_mi(*pair(500, rhos), device=dev)  # warm-up (CUDA context, kernels)
    for n in [int(s) for s in args.sizes.split(",")]:
        a, b = pair(n, rhos)
        k, tk = timed(ksg_mi, a, b, device=dev)
        g, tg = timed(gaussian_mi, a, b)
        peak = ""
        if dev.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            ksg_mi(a, b, device=dev)
            peak = f", KSG peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
        print(
            f"n={n}: truth {truth:.3f} bits | KSG {k:.3f} ({tk:.2f} s) | "
            f"Gaussian {g:.3f} ({tg:.3f} s){peak}",
            flush=True,
        )
    a, b = pair(20000, rhos)
    v, t = timed(infonce_mi, a, b, device=dev, steps=args.infonce_steps, batch_size=512)
    print(f"InfoNCE n=20000, batch 512, {args.infonce_steps} steps: {v:.3f} bits ({t:.1f} s)")


if __name__ == "__main__":
    main()
