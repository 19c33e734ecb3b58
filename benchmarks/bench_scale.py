"""Growth curve of ``balmm train`` and ``balmm predict`` with the number of samples (figures
for docs/benchmarks.md).

    .venv/bin/python benchmarks/bench_scale.py --sizes 10000,100000,1000000 --epochs 1 [--backed]

Per size:

1. Generated data, written once as a real ``.h5mu`` (mudata, uncompressed) under
   ``--data-dir`` and reused: 3 classes; ``rna`` 2000 sparse counts at about 10% density
   (CSR), ``adt`` 200 dense and ``atac`` 500 dense features, each with a class signal.
2. ``balmm train`` and then ``balmm predict`` on it, each in a fresh process: wall time, peak
   RSS (``wait4``'s ``ru_maxrss`` of that process), wall time per stage (train's
   ``timing.json``), peak RSS per stage (the process's RSS sampled every 0.25 s, placed in
   the stages by timing.json's times), and stage-2 samples/s (fit samples x stage-2
   epochs / stage-2 seconds, its per-epoch validation scoring included) with its fraction
   of the measured float32 matmul peak (model FLOPs per sample = 3 x 2 x the multiply-adds
   of its Linear layers).
3. The reference: a plain PyTorch loop over the same network (the trained model's class and
   feature counts, same batch size), in-memory random tensors, one AdamW step per batch on
   the summed cross-entropy of its heads, in this process.

``--epochs N`` is passed to train as ``--epochs N --set pretrain_epochs=N`` (every stage);
without it train runs its defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

FEATURES = {"rna": 2000, "adt": 200, "atac": 500}
DENSITY = 0.10
N_CLASSES = 3


def generate(n: int, path: Path, seed: int = 0) -> None:
    """Write the ``n``-sample dataset to ``path`` (row chunks bound the working memory)."""
    import anndata as ad
    import mudata as md
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, n)
    ids = pd.Index([f"c{i:07d}" for i in range(n)], name="sample")
    per_row = int(FEATURES["rna"] * DENSITY)
    chunks = []
    for start in range(0, n, 100_000):
        yc = y[start : start + 100_000]
        cols = np.sort(rng.integers(0, FEATURES["rna"], (len(yc), per_row)), axis=1)
        vals = rng.poisson(2.0, cols.shape).astype(np.float32) + 1
        vals *= 1 + 3 * ((cols // 200) == yc[:, None])  # class c: genes 200c..200c+199 up
        indptr = np.arange(0, cols.size + 1, per_row)
        m = sp.csr_matrix((vals.ravel(), cols.ravel(), indptr), shape=(len(yc), FEATURES["rna"]))
        m.sum_duplicates()
        chunks.append(m)
    mods = {"rna": ad.AnnData(sp.vstack(chunks, format="csr"))}
    del chunks
    for name in ("adt", "atac"):
        p = FEATURES[name]
        centres = rng.normal(0, 0.03, (N_CLASSES, p)).astype(np.float32)  # a weak signal
        x = np.empty((n, p), dtype=np.float32)
        for start in range(0, n, 100_000):
            sl = slice(start, start + 100_000)
            x[sl] = centres[y[sl]] + rng.standard_normal((len(y[sl]), p), dtype=np.float32)
        mods[name] = ad.AnnData(x)
    for name, a in mods.items():
        a.obs_names = ids
        a.var_names = [f"{name}_{j}" for j in range(a.n_vars)]
    mdata = md.MuData(mods)
    mdata.obs["label"] = pd.Categorical([f"type{c}" for c in y])
    mdata.write(path)


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_measured(cmd: list[str]) -> dict:
    """Run ``cmd``; its wall time, exit code and peak RSS (this process only, wait4), and
    its RSS sampled every 0.25 s (``rss_samples``: [seconds since start, MB])."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    samples: list[list[float]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.25):
            rss = _rss_mb(proc.pid)
            if rss is not None:
                samples.append([round(time.time() - t0, 2), round(rss, 1)])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stderr = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    wall = time.time() - t0
    rc = os.waitstatus_to_exitcode(status)
    # CPU seconds (user + system) as well as wall: on a shared machine they move far less
    # with the load, so growth is compared on them
    out = {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
           "peak_rss_mb": usage.ru_maxrss / 1024, "rc": rc, "t0": t0,
           "rss_samples": samples}  # fmt: skip
    if rc != 0:
        out["stderr_tail"] = stderr.decode(errors="replace")[-2000:]
    return out


def stage_peaks(measured: dict, stages: dict, run: Path) -> dict:
    """Peak sampled RSS (MB) of each phase of a train run: the phases' durations come from
    its timing.json (``stages``), placed in time by timing.json's own modification time (the
    first output file written, right after training); ``load`` is everything before
    preprocessing (imports, reading), ``write`` the output files."""
    write_start = (run / "timing.json").stat().st_mtime - measured["t0"]
    edges = {"write": (write_start, float("inf"))}
    t = write_start - stages.get("total_s", 0.0)
    edges["load"] = (0.0, t)
    for key in ("preprocess_s", "stage1_s", "stage2_s", "evaluate_s"):
        edges[key[:-2]] = (t, t + stages.get(key, 0.0))
        t += stages.get(key, 0.0)
    peaks = {}
    for name, (a, b) in edges.items():
        inside = [mb for s, mb in measured["rss_samples"] if a <= s < b]
        peaks[name] = max(inside) if inside else None
    return peaks


def matmul_peak(threads: int, n: int = 2048, reps: int = 10) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def flops_per_sample(model) -> float:
    import torch

    macs = sum(m.in_features * m.out_features for m in model.modules()
               if isinstance(m, torch.nn.Linear))  # fmt: skip
    return 3 * 2 * macs  # forward + backward ~ 3x the forward


def plain_loop(model_dir: Path, batch: int, threads: int, steps: int = 300) -> dict:
    """Samples/s of a plain PyTorch loop over the trained network's architecture."""
    import torch

    from balmm.model.bundle import load_bundle

    torch.set_num_threads(threads)
    model = load_bundle(model_dir, torch.device("cpu")).model
    for p in model.parameters():  # a fresh start is as good as the trained weights here
        p.requires_grad_(True)
    feats = json.loads((model_dir / "model.json").read_text())["n_features"]
    n = 20 * batch
    g = torch.Generator().manual_seed(0)
    X = {m: torch.randn(n, p, generator=g) for m, p in feats.items()}
    M = {m: torch.ones(n, dtype=torch.bool) for m in feats}
    y = torch.randint(0, model.n_classes, (n,), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ce = torch.nn.CrossEntropyLoss()
    model.train()

    def step(i: int) -> None:
        r = torch.arange((i * batch) % n, (i * batch) % n + batch) % n
        out = model({m: x[r] for m, x in X.items()}, {m: mk[r] for m, mk in M.items()})
        loss = ce(out["fused"], y[r]) + sum(ce(v, y[r]) for v in out["logits"].values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(5):
        step(i)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    sps = steps * batch / (time.perf_counter() - t0)
    return {"samples_per_s": sps, "flops_per_sample": flops_per_sample(model)}


def one_size(n: int, args: argparse.Namespace, peak: float) -> dict:
    data = Path(args.data_dir) / f"scale_{n}.h5mu"
    res: dict = {"n": n, "data": str(data)}
    if not data.exists():
        t0 = time.perf_counter()
        data.parent.mkdir(parents=True, exist_ok=True)
        tmp = data.with_suffix(".tmp.h5mu")
        generate(n, tmp)
        tmp.rename(data)
        res["generate_s"] = time.perf_counter() - t0
    res["data_mb"] = data.stat().st_size / 2**20
    exe = str(Path(sys.executable).with_name("balmm"))
    mode = ["--backed"] if args.backed else ["--in-memory"]
    with tempfile.TemporaryDirectory(prefix="balmm-scale-", dir=args.work_dir) as tmp:
        cmd = [exe, "-q", "train", str(data), "--out", f"{tmp}/run", "--threads",
               str(args.threads), *mode]  # fmt: skip
        if args.epochs is not None:
            cmd += ["--epochs", str(args.epochs), "--set", f"pretrain_epochs={args.epochs}"]
        res["train"] = run_measured(cmd)
        if res["train"]["rc"] != 0:
            return res
        run = Path(tmp) / "run"
        res["train"]["stages_s"] = json.loads((run / "timing.json").read_text())
        res["train"]["stage_peak_rss_mb"] = stage_peaks(res["train"], res["train"]["stages_s"],
                                                        run)  # fmt: skip
        metrics = json.loads((run / "metrics.json").read_text())
        res["test_fused_accuracy"] = metrics["test"]["fused"]["accuracy"]
        n_fit = metrics["protocol"]["n_fit"]
        epochs2 = sum(1 for line in (run / "history.jsonl").read_text().splitlines()
                      if json.loads(line).get("stage") == "stage2")  # fmt: skip
        cfg = json.loads((run / "model" / "model.json").read_text())["config"]
        s2 = res["train"]["stages_s"]["stage2_s"]
        ref = plain_loop(run / "model", int(cfg["batch_size"]), args.threads)
        res["batch"] = int(cfg["batch_size"])
        sps = n_fit * epochs2 / s2 if s2 > 0 else float("nan")
        res["stage2_samples_per_s"] = sps
        res["stage2_fraction_of_peak"] = sps * ref["flops_per_sample"] / peak
        res["plain_loop_samples_per_s"] = ref["samples_per_s"]
        res["plain_loop_fraction_of_peak"] = ref["samples_per_s"] * ref["flops_per_sample"] / peak
        res["predict"] = run_measured([exe, "-q", "predict", str(run), str(data), "--out",
                                       f"{tmp}/pred", *mode])  # fmt: skip
    res["train_s_per_1k_samples"] = res["train"]["wall_s"] / n * 1000
    res["train_cpu_s_per_1k_samples"] = res["train"]["cpu_s"] / n * 1000
    res["train_rss_kb_per_sample"] = res["train"]["peak_rss_mb"] * 1024 / n
    if args.samples_to:  # the RSS timelines in a file of their own; kept out of the summary
        with open(args.samples_to, "a") as f:
            f.write(
                json.dumps(
                    {
                        "n": n,
                        "backed": args.backed,
                        "train": res["train"]["rss_samples"],
                        "predict": res.get("predict", {}).get("rss_samples"),
                    }
                )
                + "\n"
            )
    for key in ("train", "predict"):
        if key in res:
            res[key].pop("rss_samples", None)
            res[key].pop("t0", None)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--backed", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "balmm-scale"))
    ap.add_argument("--work-dir", default=None, help="where the runs go (created if missing)")
    ap.add_argument("--samples-to", default=None, help="append the RSS timelines (JSON lines)")
    args = ap.parse_args()
    if args.work_dir:
        Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    peak = matmul_peak(args.threads)
    print(json.dumps({"matmul_peak_gflops": peak / 1e9, "threads": args.threads,
                      "cpu_count": os.cpu_count(), "backed": args.backed}), flush=True)  # fmt: skip
    done = []
    for n in (int(s) for s in args.sizes.split(",")):
        done.append(one_size(n, args, peak))
        print(json.dumps(done[-1]), flush=True)
    ok = [r for r in done if r.get("train", {}).get("rc") == 0]
    if len(ok) >= 2:
        print(json.dumps({"growth": growth(ok)}), flush=True)


def growth(rows: list[dict]) -> list[dict]:
    """Per-sample and marginal (per extra sample) train CPU time and peak RSS between
    consecutive sizes: the marginal figures leave out what does not grow with n (imports,
    the report's fixed-size plots, the markers' fixed-size refits)."""
    out = []
    for a, b in zip(rows, rows[1:], strict=False):
        ta, tb = a["train"]["cpu_s"], b["train"]["cpu_s"]
        ma, mb = a["train"]["peak_rss_mb"], b["train"]["peak_rss_mb"]
        dn = b["n"] - a["n"]
        out.append({
            "from": a["n"], "to": b["n"],
            "per_sample_cpu_ratio": (tb / b["n"]) / (ta / a["n"]),
            "per_sample_rss_ratio": (mb / b["n"]) / (ma / a["n"]),
            "marginal_cpu_ms_per_sample": (tb - ta) / dn * 1000,
            "marginal_kb_per_sample": (mb - ma) * 1024 / dn,
        })  # fmt: skip
    return out


if __name__ == "__main__":
    main()
