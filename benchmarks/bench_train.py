"""Speed of ``balmm train`` (figures for docs/benchmarks.md).

    .venv/bin/python benchmarks/bench_train.py [--threads 2] [--n 100000] [--device cpu]

1. End to end: the default ``balmm train`` on the bundled ROSMAP example, as a
   subprocess (imports, preprocessing, both stages, evaluation, every output file),
   wall-clock seconds; repeated ``--repeats`` times, best and median reported.
2. Throughput: stage-2 training steps (balmm balancer, three modalities) on generated
   data with ``--n`` samples, as samples/s, and the model's FLOP/s (forward + backward
   counted as 3x the forward multiply-adds x 2) against the measured float32 matmul
   peak of the same device and thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def end_to_end(threads: int, repeats: int) -> dict:
    times = []
    exe = Path(sys.executable).with_name("balmm")
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            subprocess.run([str(exe), "-q", "train", "--out", f"{tmp}/o", "--threads",
                            str(threads)], check=True, capture_output=True)  # fmt: skip
            times.append(time.perf_counter() - t0)
            m = json.loads(Path(f"{tmp}/o/timing.json").read_text())
    return {"best_s": min(times), "median_s": statistics.median(times), "runs": times,
            "in_process_train_s": m["total_s"]}  # fmt: skip


def matmul_peak(device: torch.device, n: int = 2048, reps: int = 10) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def throughput(n: int, device: torch.device, batch: int, steps: int) -> dict:
    from balmm.config import TrainConfig
    from balmm.model.fusion import MultiModalNet
    from balmm.training.balancers import make_balancer

    feats = {"mrna": 2000, "methylation": 2000, "mirna": 500}
    cfg = TrainConfig(batch_size=batch)
    rng = np.random.default_rng(0)
    X = {m: torch.as_tensor(rng.standard_normal((n, p), dtype=np.float32), device=device)
         for m, p in feats.items()}  # fmt: skip
    M = {m: torch.ones(n, dtype=torch.bool, device=device) for m in feats}
    y = torch.as_tensor(rng.integers(0, 3, n), device=device)
    torch.manual_seed(0)
    model = MultiModalNet(feats, 3, hidden=cfg.hidden, embed_dim=cfg.embed_dim).to(device)
    bal = make_balancer("balmm", list(feats), cfg, {m: (0.5, 0.4) for m in feats})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    perm = torch.randperm(n, device=device)

    def step(i):
        rows = perm[(i * batch) % (n - batch) :][:batch]
        out = model({m: x[rows] for m, x in X.items()}, {m: mk[rows] for m, mk in M.items()})
        loss, _ = bal.loss(model, out, y[rows], {m: mk[rows] for m, mk in M.items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    for i in range(5):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    h, d, c = cfg.hidden, cfg.embed_dim, 3
    macs = sum(p * h + h * d + d * c for p in feats.values()) + (len(feats) * (d + 1)) * c
    flops_per_sample = 3 * 2 * macs  # forward + backward ~ 3x forward
    sps = steps * batch / dt
    return {"batch": batch, "samples_per_s": sps, "model_flops_per_s": sps * flops_per_sample,
            "flops_per_sample": flops_per_sample, "epoch_s_for_n": n / sps}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    dev = torch.device(args.device)
    res: dict = {"device": str(dev), "threads": args.threads, "cpu_count": os.cpu_count()}
    if dev.type == "cuda":
        res["gpu"] = torch.cuda.get_device_name(0)
    if not args.skip_e2e:
        res["rosmap_end_to_end"] = end_to_end(args.threads, args.repeats)
    peak = matmul_peak(dev)
    res["matmul_peak_flops_per_s"] = peak
    res["throughput"] = []
    for batch in (64, 512, 4096):
        t = throughput(
            args.n, dev, batch, args.steps if batch < 4096 else max(20, args.steps // 10)
        )
        t["fraction_of_peak"] = t["model_flops_per_s"] / peak
        res["throughput"].append(t)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
