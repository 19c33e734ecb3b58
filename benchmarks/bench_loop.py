"""Training-loop efficiency: balmm's TrainLoop against a plain PyTorch loop over the same
model, loss, optimiser and batches, in the same process (figures for docs/benchmarks.md).

    .venv/bin/python benchmarks/bench_loop.py [--n 20000] [--batch 512] [--threads 1]
        [--device cpu|cuda] [--compile] [--bf16] [--backed]

Generated data: three dense modalities of 2000, 2000 and 500 features, 3 classes; ``mlp``
encoders (hidden 128, embedding 64), the ``balmm`` balancer's loss (fused + weighted heads,
modality dropout 0.15 as in stage 2), AdamW. Both loops run whole epochs over the same
shuffled minibatches; balmm's also records per-step losses and gradient norms (its
history). Samples/s and model FLOP/s against the measured float32 matmul peak of the
same device and thread count. ``loop_throughput`` is importable (bench_scale.py).

``--backed``: the features in files on disk (as ``balmm train --backed`` keeps them), read
a minibatch at a time; balmm's loop with its prefetching loader on and off (the next
minibatch read in a background thread), against the plain loop on in-memory tensors.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from balmm.config import TrainConfig
from balmm.data.matrix import DiskMatrix
from balmm.model.fusion import MultiModalNet
from balmm.training import loop as loop_mod
from balmm.training.balancers import make_balancer
from balmm.training.loop import LoopSpec, TrainLoop
from balmm.training.minibatch import batches, random_streams
from balmm.training.tensors import RowSource, Split

FEATURES = {"mrna": 2000, "methylation": 2000, "mirna": 500}


def matmul_peak(device: torch.device, n: int = 2048, reps: int = 10) -> float:
    """float32 FLOP/s of an n x n matmul on ``device`` (the reference peak)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _split(n: int, device: torch.device, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    X = {m: torch.as_tensor(rng.standard_normal((n, p), dtype=np.float32), device=device)
         for m, p in FEATURES.items()}  # fmt: skip
    M = {m: torch.ones(n, dtype=torch.bool, device=device) for m in FEATURES}
    y = torch.as_tensor(rng.integers(0, 3, n), device=device)
    return Split(pd.RangeIndex(n).astype(str), X, M, y)


def on_disk(s: Split, folder: Path) -> Split:
    """``s`` with its features written to files in ``folder`` and read a batch at a time."""
    X = {}
    for m, x in s.X.items():
        mat = DiskMatrix(folder / f"{m}.f32", *x.shape)
        mat.append(x.cpu().numpy())
        X[m] = RowSource(mat, np.arange(len(s)), s.y.device)
    return Split(s.ids, X, s.M, s.y)


def backed_throughput(n: int, batch: int, epochs: int, device: str, rounds: int = 3) -> dict:
    """samples/s of balmm's loop on features read from disk, with the prefetching loader on
    and off (best of ``rounds`` alternating runs), and of the plain in-memory loop."""
    dev = torch.device(device)
    cfg = TrainConfig(batch_size=batch, hidden=128, embed_dim=64)
    fit, val = _split(n, dev, 0), _split(256, dev, 1)
    times: dict[str, list[float]] = {"plain": [], "prefetch_on": [], "prefetch_off": []}
    with tempfile.TemporaryDirectory(prefix="balmm-bench-loop-") as tmp:
        disk = on_disk(fit, Path(tmp))
        for _ in range(rounds):
            times["plain"].append(plain_epochs(fit, cfg, epochs))
            for flag in (True, False):
                loop_mod.PREFETCH = flag
                key = "prefetch_on" if flag else "prefetch_off"
                times[key].append(balmm_epochs(disk, val, cfg, epochs))
        loop_mod.PREFETCH = True
    sps = {k: n * epochs / min(v) for k, v in times.items()}
    return {
        "n": n, "batch": batch, "epochs": epochs, "backed": True,
        **{f"{k}_samples_per_s": v for k, v in sps.items()},
        "ratio_on_to_off": sps["prefetch_on"] / sps["prefetch_off"],
        "ratio_on_to_plain": sps["prefetch_on"] / sps["plain"],
        "seconds": times,
    }  # fmt: skip


def flops_per_sample(cfg: TrainConfig) -> int:
    """Forward + backward (3x the forward's multiply-adds x 2) of the mlp model."""
    h, d, c = cfg.hidden, cfg.embed_dim, 3
    macs = sum(p * h + h * d + d * c for p in FEATURES.values()) + len(FEATURES) * (d + 1) * c
    return 3 * 2 * macs


def _model_and_balancer(cfg: TrainConfig, device: torch.device):
    torch.manual_seed(0)
    model = MultiModalNet(FEATURES, 3, encoder="mlp", hidden=cfg.hidden,
                          embed_dim=cfg.embed_dim).to(device)  # fmt: skip
    bal = make_balancer("balmm", list(FEATURES), cfg, {m: (0.5, 0.4) for m in FEATURES})
    return model, bal.to(device)


def balmm_epochs(fit: Split, val: Split, cfg: TrainConfig, epochs: int) -> float:
    """Seconds for ``epochs`` epochs of balmm's TrainLoop (no validation pass in between)."""
    device = fit.y.device
    model, bal = _model_and_balancer(cfg, device)
    spec = LoopSpec("stage2", "bench", epochs=10**6, patience=0, score_head="fused",
                    modality_dropout=cfg.modality_dropout)  # fmt: skip
    loop = TrainLoop(model, lambda mdl, o, y, mk, rows: bal.loss(mdl, o, y, mk), fit, val,
                     cfg, spec, random_streams(0, "bench"), balancer=bal)  # fmt: skip
    loop.epoch = 1
    loop._epoch()  # warm-up (and compilation, with compile)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(epochs):
        loop.epoch += 1
        loop._epoch()
    _sync(device)
    return time.perf_counter() - t0


def plain_epochs(fit: Split, cfg: TrainConfig, epochs: int) -> float:
    """Seconds for ``epochs`` epochs of a plain PyTorch loop: same model, loss, optimiser,
    batch size, row gathering and precision; nothing recorded."""
    device = fit.y.device
    model, bal = _model_and_balancer(cfg, device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(0)
    model.train()
    # the same precision as balmm's loop: bf16 autocast with bf16 on CUDA
    use_bf16 = cfg.bf16 and device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16)

    def epoch() -> None:
        for rows in batches(len(fit), cfg.batch_size, rng, False):
            r = torch.as_tensor(rows, device=device)
            ms = {m: mk[r] for m, mk in fit.M.items()}
            with autocast:
                out = model({m: x[r] for m, x in fit.X.items()}, ms)
                loss, _ = bal.loss(model, out, fit.y[r], ms)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    epoch()  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(epochs):
        epoch()
    _sync(device)
    return time.perf_counter() - t0


def loop_throughput(
    n: int = 20_000,
    batch: int = 512,
    epochs: int = 2,
    device: str = "cpu",
    compile: bool = False,
    bf16: bool = False,
    rounds: int = 2,
) -> dict:
    """samples/s of balmm's loop and of the plain loop (best of ``rounds`` alternating
    runs, so load on a shared machine hits both alike), and their ratio."""
    dev = torch.device(device)
    cfg = TrainConfig(batch_size=batch, hidden=128, embed_dim=64, compile=compile, bf16=bf16)
    fit, val = _split(n, dev, 0), _split(256, dev, 1)
    t_balmm, t_plain = [], []
    for _ in range(rounds):
        t_plain.append(plain_epochs(fit, cfg, epochs))
        t_balmm.append(balmm_epochs(fit, val, cfg, epochs))
    sps_balmm = n * epochs / min(t_balmm)
    sps_plain = n * epochs / min(t_plain)
    fps = flops_per_sample(cfg)
    return {
        "n": n, "batch": batch, "epochs": epochs, "compile": compile, "bf16": bf16,
        "balmm_samples_per_s": sps_balmm, "plain_samples_per_s": sps_plain,
        "ratio_balmm_to_plain": sps_balmm / sps_plain,
        "balmm_model_flops_per_s": sps_balmm * fps, "flops_per_sample": fps,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--batch", type=int, nargs="+", default=[512, 4096])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compile", action="store_true", help="also measure compile=True")
    ap.add_argument("--bf16", action="store_true", help="also measure bf16 (CUDA)")
    ap.add_argument("--backed", action="store_true",
                    help="features on disk: the prefetching loader on and off")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    res: dict = {"device": str(dev), "threads": args.threads, "torch": torch.__version__}
    if dev.type == "cuda":
        res["gpu"] = torch.cuda.get_device_name(0)
    peak = matmul_peak(dev)
    res["matmul_peak_flops_per_s"] = peak
    variants = [(False, False)]
    if args.compile:
        variants.append((True, False))
    if args.bf16:
        variants.append((False, True))
    res["runs"] = []
    if args.backed:
        for batch in args.batch:
            t = backed_throughput(args.n, batch, args.epochs, args.device)
            res["runs"].append(t)
            print(json.dumps(t), file=sys.stderr, flush=True)
        print(json.dumps(res, indent=1))
        return
    for batch in args.batch:
        for comp, bf in variants:
            t = loop_throughput(args.n, batch, args.epochs, args.device, comp, bf)
            t["fraction_of_peak"] = t["balmm_model_flops_per_s"] / peak
            res["runs"].append(t)
            print(json.dumps(t), file=sys.stderr, flush=True)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
