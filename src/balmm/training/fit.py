"""``balmm train``: stage 1 (unimodal training + cross-modal distillation) and
stage 2 (balanced joint training), under a validation protocol that never looks
at the test split until the final evaluation.

Data flow: split training samples into fit / validation (stratified) -> fit the
preprocessing on the fit samples -> stage 1 -> distillation plan -> KD ->
stage 2 with the chosen balancer -> select the epoch with the best validation
fused macro-F1 -> evaluate validation and test once -> metrics, predictions,
bundle, report.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from balmm.data.dataset import MultiOmicsData
from balmm.data.splits import stratified_split
from balmm.errors import InputError
from balmm.model.fusion import MultiModalNet
from balmm.outputs import OutputRun
from balmm.profiling import mi as mi_mod
from balmm.profiling.plan import pair_lookup
from balmm.progress import NULL_PROGRESS, Progress
from balmm.threads import default_threads
from balmm.training import kd as kd_mod
from balmm.training.balancers import FUSED, Balancer, make_balancer, masked_ce
from balmm.training.config import TrainConfig, _coerce
from balmm.training.metrics import bootstrap_f1, macro_f1

logger = logging.getLogger("balmm")


# ----------------------------------------------------------------------------- tensors
@dataclass
class Split:
    """One set of samples as tensors: features and presence per modality, labels."""

    ids: pd.Index
    X: dict[str, torch.Tensor]
    M: dict[str, torch.Tensor]
    y: torch.Tensor
    adj: torch.Tensor | None = None  # gcn: adjacency over [graph nodes]; see graph_rows
    graph_rows: torch.Tensor | None = None  # gcn: rows of the graph holding these samples
    gX: dict[str, torch.Tensor] | None = None  # gcn: node features of the whole graph
    gM: dict[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.ids)


def _split_from(processed, idx: np.ndarray, device: torch.device) -> Split:
    ids = processed.ids[idx]
    X = {m: torch.as_tensor(np.ascontiguousarray(x[idx]), device=device)
         for m, x in processed.X.items()}  # fmt: skip
    M = {m: torch.as_tensor(mk[idx], device=device) for m, mk in processed.mask.items()}
    y = torch.as_tensor(processed.y[idx], device=device)
    return Split(ids, X, M, y)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a CUDA device is an error."""
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA device is available")
    return mi_mod.resolve_device(device)


# ----------------------------------------------------------------------------- forward
def forward(
    model: MultiModalNet, s: Split, rows: torch.Tensor | None = None, masks=None
) -> dict[str, Any]:
    """Model outputs for the samples of ``s`` (``rows``: a subset of them, mlp only; a
    gcn split always runs on its whole graph)."""
    if s.adj is not None:  # gcn: run on the whole graph, keep this split's rows
        gm = s.gM if masks is None else masks
        return _take(model(s.gX, gm, s.adj), s.graph_rows)
    if rows is None:
        return model(s.X, s.M if masks is None else masks)
    xs = {m: x[rows] for m, x in s.X.items()}
    ms = {m: mk[rows] for m, mk in s.M.items()} if masks is None else masks
    return model(xs, ms)


def _take(out: dict, sel: torch.Tensor) -> dict:
    return {
        "z": {m: z[sel] for m, z in out["z"].items()},
        "logits": {m: v[sel] for m, v in out["logits"].items()},
        "fused": out["fused"][sel],
    }


@torch.no_grad()
def infer(model: MultiModalNet, s: Split, batch: int = 8192) -> dict[str, np.ndarray]:
    """Class probabilities of every head and the embeddings, in eval mode."""
    model.eval()
    if s.adj is not None or len(s) <= batch:
        outs = [forward(model, s)]
    else:
        outs = [
            forward(model, s, torch.arange(i, min(i + batch, len(s)), device=s.y.device))
            for i in range(0, len(s), batch)
        ]
    res: dict[str, np.ndarray] = {
        FUSED: torch.cat([torch.softmax(o["fused"], 1) for o in outs]).cpu().numpy()
    }
    for m in outs[0]["logits"]:
        res[m] = torch.cat([torch.softmax(o["logits"][m], 1) for o in outs]).cpu().numpy()
    for m in outs[0]["z"]:
        res[f"z:{m}"] = torch.cat([o["z"][m] for o in outs]).cpu().numpy()
    return res


def head_f1(proba: dict[str, np.ndarray], s: Split, n_classes: int) -> dict[str, float]:
    """Validation macro-F1 of every head (a modality head over the samples that have it)."""
    y = s.y.cpu().numpy()
    out = {FUSED: macro_f1(y, proba[FUSED].argmax(1), n_classes)}
    for m in s.M:
        if m in proba:
            mk = s.M[m].cpu().numpy() & (y >= 0)
            out[m] = macro_f1(y[mk], proba[m][mk].argmax(1), n_classes)
    return out


def _val_loss(proba: np.ndarray, y: np.ndarray) -> float:
    keep = y >= 0
    if not keep.any():
        return float("nan")
    return float(-np.log(np.clip(proba[keep, y[keep]], 1e-12, 1)).mean())


def _score_val(
    model: MultiModalNet, val: Split, score_head: str, select_on_loss: bool
) -> tuple[dict[str, float], float, tuple[float, float]]:
    """Validation macro-F1 of every head, the validation loss of ``score_head``, and the
    selection key (higher is better; ties broken by the other criterion)."""
    proba = infer(model, val)
    f1s = head_f1(proba, val, model.n_classes)
    vloss = _val_loss(proba[score_head], val.y.cpu().numpy())
    key = (-vloss, f1s[score_head]) if select_on_loss else (f1s[score_head], -vloss)
    return f1s, vloss, key


# ----------------------------------------------------------------------------- loop
def random_streams(seed: int, *scope: str) -> tuple[np.random.Generator, torch.Generator]:
    """Random streams for one part of training (a stage, a modality), seeded from
    ``(seed, *scope)`` alone; torch's global generator (initialisation, dropout) is
    reseeded too. So a modality's training never depends on which other modalities are
    present or in which order, and an assay left out of the fusion cannot change the
    fused model through the random numbers it would otherwise consume."""
    words = [zlib.crc32(part.encode()) for part in scope]
    state = np.random.SeedSequence([seed % 2**63, *words]).generate_state(3, dtype=np.uint64)
    torch.manual_seed(int(state[0]))
    return np.random.default_rng(int(state[1])), torch.Generator().manual_seed(int(state[2]))


def _batches(n: int, batch_size: int, rng: np.random.Generator, graph: bool) -> list[np.ndarray]:
    if graph:
        return [np.arange(n)]
    perm = rng.permutation(n)
    # drop a last batch of one sample: norm layers and BatchNorm need more than one row
    out = [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(out) > 1 and len(out[-1]) < 2:
        out[-2] = np.concatenate([out[-2], out[-1]])
        out.pop()
    return out


def _drop_modalities(
    masks: dict[str, torch.Tensor], p: float, gen: torch.Generator, skip: set[str] = frozenset()
) -> dict[str, torch.Tensor]:
    """Randomly hide present modalities (each with probability p), keeping >= 1 per sample,
    so the fusion head learns to predict from any subset (e.g. BRCA test lacks protein).
    Modalities in ``skip`` (left out of the fusion) are neither dropped nor drawn for."""
    names = [m for m in masks if m not in skip]
    if p <= 0 or len(names) < 2:
        return masks
    present = torch.stack([masks[m] for m in names], 1)
    drop = torch.rand(present.shape, generator=gen).to(present.device) < p
    kept = present & ~drop
    empty = kept.sum(1) == 0
    kept[empty] = present[empty]
    return {**masks, **{m: kept[:, i] for i, m in enumerate(names)}}


def _grad_norms(model: MultiModalNet) -> dict[str, float]:
    """Gradient norm per encoder (for history.jsonl)."""
    owners, squares = [], []
    for m, enc in model.encoders.items():
        for p in enc.parameters():
            if p.grad is not None:
                owners.append(m)
                squares.append(p.grad.pow(2).sum())
    # one host transfer per batch instead of one per parameter tensor (a sync each on CUDA)
    values = torch.stack(squares).tolist() if squares else []
    sq = dict.fromkeys(model.encoders, 0.0)
    for m, v in zip(owners, values, strict=True):
        sq[m] += v
    return {m: math.sqrt(v) for m, v in sq.items()}


def _fit_loop(
    model: MultiModalNet,
    loss_fn,
    fit: Split,
    val: Split,
    cfg: TrainConfig,
    epochs: int,
    patience: int,
    score_head: str,
    rng: np.random.Generator,
    gen: torch.Generator,
    progress: Progress,
    key: str,
    desc: str,
    extra_params: list | None = None,
    balancer: Balancer | None = None,
    modality_dropout: float = 0.0,
    require_epoch: bool = False,
    lr_scale: float = 1.0,
    select_on_loss: bool = False,
    frozen: set[str] = frozenset(),
) -> tuple[dict, list[dict], float]:
    """Train ``model`` for up to ``epochs``; keep the state with the best validation
    macro-F1 of ``score_head`` (ties: lower validation loss). The encoders named in
    ``frozen`` stay as they are (eval mode, no gradient). Returns
    (best state dict, per-epoch history, best score)."""
    for m in frozen:
        model.encoders[m].requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad] + list(extra_params or [])
    opt = torch.optim.AdamW(params, lr=cfg.lr * lr_scale, weight_decay=cfg.weight_decay)
    graph = fit.adj is not None
    best_key: tuple[float, float] | None = None
    best_state = copy.deepcopy(model.state_dict())
    best_score = float("nan")
    if not require_epoch:  # epoch 0 = the starting point (e.g. stage-1 encoders) competes too
        f0, _, best_key = _score_val(model, val, score_head, select_on_loss)
        best_score = f0[score_head]
    history: list[dict] = []
    stale = 0
    progress.start(key, desc, total=epochs)
    for epoch in range(1, epochs + 1):
        model.train()
        for m in frozen:  # eval mode: no dropout draws, so no effect on the others' streams
            model.encoders[m].eval()
        sums: dict[str, float] = {}
        gsum: dict[str, float] = {}
        nb = 0
        for rows in _batches(len(fit), cfg.batch_size, rng, graph):
            r = torch.as_tensor(rows, device=fit.y.device)
            base = fit.gM if graph else {m: mk[r] for m, mk in fit.M.items()}
            masks = (
                _drop_modalities(base, modality_dropout, gen, model.fusion_off)
                if modality_dropout
                else base
            )
            out = forward(model, fit, None if graph else r, masks=masks)
            sel_masks = {m: mk[fit.graph_rows] for m, mk in masks.items()} if graph else masks
            y = fit.y[r] if not graph else fit.y
            total, parts = loss_fn(model, out, y, sel_masks, r)
            opt.zero_grad(set_to_none=True)
            total.backward()
            if balancer is not None:
                balancer.after_backward(model, out, y, sel_masks, gen)
            for m, g in _grad_norms(model).items():
                gsum[m] = gsum.get(m, 0.0) + g
            opt.step()
            losses = torch.stack([total.detach(), *(v.detach() for v in parts.values())])
            for k, v in zip(["total", *parts], losses.tolist(), strict=True):
                sums[k] = sums.get(k, 0.0) + v
            nb += 1
        rec: dict[str, Any] = {"stage": key, "epoch": epoch}
        rec["loss"] = {k: v / nb for k, v in sums.items()}
        rec["grad_norm"] = {k: v / nb for k, v in gsum.items()}
        if epoch % cfg.eval_every == 0 or epoch == epochs:
            f1s, vloss, cand = _score_val(model, val, score_head, select_on_loss)
            rec["val_f1"] = f1s
            rec["val_loss"] = vloss
            if best_key is None or cand > best_key:
                best_key, best_state = cand, copy.deepcopy(model.state_dict())
                best_score = f1s[score_head]
                stale = 0
                rec["selected"] = True
            else:
                stale += cfg.eval_every
            if balancer is not None:
                balancer.end_epoch(f1s)
        if balancer is not None:
            rec["weights"] = balancer.weights()
            rec["ogm_coef"] = dict(balancer.last_coef)
        history.append(rec)
        live = {"val_f1": rec.get("val_f1", {}).get(score_head, float("nan"))}
        if balancer is not None:
            live.update({f"f1_{k}": v for k, v in rec.get("val_f1", {}).items() if k != FUSED})
            live.update({f"w_{k}": v for k, v in rec["weights"].items()})
        progress.update(key, 1, **live)
        if patience and stale >= patience:
            break
    progress.finish(key)
    return best_state, history, best_score


# ----------------------------------------------------------------------------- result
@dataclass
class TrainResult:
    metrics: dict
    history: list[dict]
    predictions: pd.DataFrame
    config: TrainConfig
    plan: list[dict] = field(default_factory=list)
    model: MultiModalNet | None = None
    preprocessor: Any = None
    embeddings: Any = None  # AnnData
    out: Path | None = None
    label_mapping: dict = field(default_factory=dict)
    graph_state: dict | None = None  # gcn: training graph for inductive prediction
    # stage 1 per modality: encoder/head state trained alone ("state") and after KD
    stage1_states: dict = field(default_factory=dict)
    # one row per sample: which modalities it has, label, split (written as pairing.csv)
    pairing: pd.DataFrame | None = None


def _resolve_config(config: TrainConfig | None, overrides: dict[str, Any]) -> TrainConfig:
    cfg = config if config is not None else TrainConfig()
    changes = {k: _coerce(k, v, "train() arguments") for k, v in overrides.items() if v is not None}
    return cfg.replace(**changes)


def _encoder_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    return {
        "hidden": cfg.hidden,
        "embed_dim": cfg.embed_dim,
        "norm": cfg.norm,
        "activation": cfg.activation,
        "dropout": cfg.dropout,
        "input_dropout": cfg.input_dropout,
    }


def build_model(n_features: dict[str, int], n_classes: int, cfg: TrainConfig) -> MultiModalNet:
    return MultiModalNet(
        n_features,
        n_classes,
        encoder=cfg.encoder,
        early_fusion=cfg.balancer == "concat",
        late_heads=cfg.late_heads,
        **_encoder_kwargs(cfg),
    )


def _check_data(data: MultiOmicsData) -> None:
    if not data.mods:
        raise InputError("no modality to train on")
    train_ids = data.ids("train")
    if len(train_ids) < 10:
        raise InputError(f"only {len(train_ids)} labelled training samples: need at least 10")
    y = data.y(train_ids)
    counts = np.bincount(y, minlength=len(data.classes))
    if (counts > 0).sum() < 2:
        raise InputError("the training split has fewer than two classes")
    if counts[counts > 0].min() < 2:
        bad = data.classes[int(np.argmin(np.where(counts > 0, counts, 10**9)))]
        raise InputError(f"class {bad!r} has a single training sample: cannot validate")


def train(
    data: MultiOmicsData,
    config: TrainConfig | None = None,
    out: str | Path | OutputRun | None = None,
    device: str | None = None,
    progress: Progress = NULL_PROGRESS,
    **overrides: Any,
) -> TrainResult:
    """Train a balanced multimodal classifier on the ``train`` split of ``data``,
    evaluate it once on the ``test`` split, and (with ``out``) write every output.

    ``overrides`` are :class:`TrainConfig` fields (``balancer="none"``, ``epochs=10``, ...).
    """
    if device is not None:
        overrides["device"] = device
    cfg = _resolve_config(config, overrides)
    _check_data(data)
    t0 = time.perf_counter()
    dev = resolve_device(cfg.device)
    threads_before = torch.get_num_threads()
    n_cells = sum(a.n_obs * a.n_vars for a in data.mods.values())
    # threads = 0 (auto): one thread for omics-sized data, where the matrices are so small
    # that extra threads only add synchronisation (3x slower on a busy 2-core machine)
    want = cfg.threads or (1 if n_cells < 100_000_000 and dev.type == "cpu" else default_threads())
    from threadpoolctl import threadpool_limits

    if want:
        torch.set_num_threads(want)
    try:
        # numpy/scikit-learn BLAS pools too: oversubscribed threads make PCA or a small
        # logistic regression 50x slower on a shared machine
        with threadpool_limits(limits=want or None):
            return _train(data, cfg, out, dev, progress, t0)
    finally:
        torch.set_num_threads(threads_before)


def _train(data, cfg, out, dev, progress, t0) -> TrainResult:
    from balmm.data.preprocess import Preprocessor

    classes = data.classes
    n_classes = len(classes)
    train_ids = data.ids("train")
    fit_ids, val_ids = stratified_split(train_ids, data.y(train_ids), cfg.val_size, cfg.seed)
    test_ids = data.ids("test", labelled=False)
    progress.start("prep", "preprocess", total=1)
    pre = Preprocessor(
        max_features=cfg.max_features, log1p=cfg.log1p, scale=cfg.scale, clip=cfg.clip
    ).fit(data, fit_ids)
    all_ids = fit_ids.append(val_ids).append(test_ids)
    proc = pre.transform(data, all_ids)
    progress.finish("prep")
    n_fit, n_val = len(fit_ids), len(val_ids)
    idx_fit = np.arange(n_fit)
    idx_val = np.arange(n_fit, n_fit + n_val)
    idx_test = np.arange(n_fit + n_val, len(all_ids))
    sets = {
        "fit": _split_from(proc, idx_fit, dev),
        "val": _split_from(proc, idx_val, dev),
        "test": _split_from(proc, idx_test, dev),
    }
    graph_info: dict[str, Any] = {}  # gcn: the graph's description (metrics.json)
    graph_state: dict[str, torch.Tensor] | None = None  # gcn: what a bundle needs
    if cfg.encoder == "gcn":
        from balmm.model.graph import attach_graphs

        graph_info, graph_state = attach_graphs(proc, idx_fit, idx_val, idx_test, sets, cfg, dev)
    mods = list(proc.X)
    n_features = {m: int(proc.X[m].shape[1]) for m in mods}

    # ---------------------------------------------------------------- stage 1
    need_stage1 = cfg.balancer == "balmm" or cfg.measure_imbalance
    stage1: dict[str, dict] = {}
    history: list[dict] = []
    plan: list[dict] = []
    label_mi: dict[str, tuple[float, float]] = {}  # modality -> (estimate, lower CI)
    label_mi_ci: dict[str, tuple[float, float]] = {}  # modality -> (lower, upper CI)
    tv = slice(0, n_fit + n_val)  # the fit and validation samples (contiguous in proc)
    y_train = proc.y[tv]
    for m in mods:
        has = proc.mask[m][tv]
        xm = proc.X[m][tv][has]
        est, lo, hi = kd_mod.label_mi_probe(xm, y_train[has], n_classes, cfg.n_boot, cfg.seed)
        label_mi[m] = (est, lo)
        label_mi_ci[m] = (lo, hi)
    if need_stage1 and cfg.pretrain_epochs > 0:
        stage1, h1 = _stage1(mods, n_features, n_classes, sets, cfg, progress)
        history += h1
        if cfg.kd and len(mods) > 1:
            plan, h_kd = _distil(mods, n_features, n_classes, sets, stage1, label_mi, cfg,
                                 progress)  # fmt: skip
            history += h_kd

    # ---------------------------------------------------------------- stage 2
    random_streams(cfg.seed, "stage2", "init")
    model = build_model(n_features, n_classes, cfg).to(dev)
    balancer = make_balancer(cfg.balancer, mods, cfg, label_mi).to(dev)
    model.fusion_off = set(balancer.excluded)
    warm = cfg.balancer == "balmm" and cfg.pretrain_init and bool(stage1)
    lr_scale = cfg.stage2_lr_scale if warm else 1.0
    if warm:
        for m in mods:
            st = stage1[m].get("kd_state") or stage1[m]["state"]
            model.encoders[m].load_state_dict(st["encoder"])
            model.heads[m].load_state_dict(st["head"])
    # balmm: an assay left out of the fusion keeps its stage-1 encoder (not forced); only
    # its head goes on learning, as a probe. With its own random streams per stage this
    # makes the fused model the same whether or not such an assay is given (tested).
    frozen = set(balancer.excluded) if warm else set()
    rng, gen = random_streams(cfg.seed, "stage2")
    best_state, h2, _ = _fit_loop(
        model, lambda mdl, o, y, mk, rows: balancer.loss(mdl, o, y, mk), sets["fit"],
        sets["val"], cfg, cfg.epochs, cfg.patience, FUSED, rng, gen, progress, "stage2",
        f"stage 2 ({cfg.balancer})",
        extra_params=balancer.parameters(), balancer=balancer,
        modality_dropout=cfg.modality_dropout if cfg.balancer != "concat" else 0.0,
        require_epoch=not (warm and cfg.stage2_select_start), lr_scale=lr_scale, frozen=frozen,
    )  # fmt: skip
    history += h2
    model.load_state_dict(best_state)
    selected = max((h for h in h2 if h.get("selected")), key=lambda h: h["epoch"], default=None)
    final_weights = selected["weights"] if selected else balancer.weights()

    # ---------------------------------------------------------------- evaluate once
    from balmm.training.evaluate import evaluate

    result = evaluate(
        model=model, sets=sets, classes=classes, cfg=cfg, stage1=stage1, plan=plan,
        label_mi=label_mi, label_mi_ci=label_mi_ci, graph_info=graph_info, balancer=balancer,
        final_weights=final_weights, selected_epoch=selected["epoch"] if selected else 0,
        data=data, preprocessor=pre, history=history, device=dev, seconds=time.perf_counter() - t0,
    )  # fmt: skip
    result.label_mapping = dict(data.label_mapping)
    result.stage1_states = {
        m: {k: st[k] for k in ("state", "kd_state") if k in st} for m, st in stage1.items()
    }
    result.graph_state = graph_state
    if out is not None:
        from balmm.training.report import write_outputs

        progress.start("write", "write outputs", total=1)
        result.out = write_outputs(
            result, out if isinstance(out, OutputRun) else Path(out), data=data
        )
        progress.finish("write")
    return result


# ----------------------------------------------------------------------------- stage 1
def _unimodal_loss(m: str, smoothing: float):
    def fn(model, out, y, masks, rows):
        ce = masked_ce(out["logits"][m], y, masks[m], smoothing)
        return ce, {m: ce}

    return fn


def _single(s: Split, m: str) -> Split:
    """A view of ``s`` restricted to modality ``m``."""
    return Split(
        s.ids, {m: s.X[m]}, {m: s.M[m]}, s.y, s.adj, s.graph_rows,
        None if s.gX is None else {m: s.gX[m]}, None if s.gM is None else {m: s.gM[m]},
    )  # fmt: skip


def _restrict(s: Split, m: str) -> Split:
    """Only the samples that have modality ``m`` (mlp); the whole graph for gcn."""
    if s.adj is not None:
        return _single(s, m)
    keep = s.M[m].nonzero().squeeze(1)
    return Split(s.ids[keep.cpu().numpy()], {m: s.X[m][keep]}, {m: s.M[m][keep]}, s.y[keep])


def _stage1(mods, n_features, n_classes, sets, cfg, progress):
    """Train each modality alone (encoder + its head), selected on its validation F1."""
    out: dict[str, dict] = {}
    hist: list[dict] = []
    for m in mods:
        rng, gen = random_streams(cfg.seed, "stage1", m)
        net = MultiModalNet({m: n_features[m]}, n_classes, encoder=cfg.encoder,
                            **_encoder_kwargs(cfg)).to(sets["fit"].y.device)  # fmt: skip
        fit, val = _restrict(sets["fit"], m), _restrict(sets["val"], m)
        if len(fit) < 4 or len(val) < 2:
            logger.warning("modality %s: too few samples to train alone; no stage 1", m)
            continue
        state, h, score = _fit_loop(
            net, _unimodal_loss(m, cfg.label_smoothing), fit, val, cfg, cfg.pretrain_epochs,
            cfg.pretrain_patience, m, rng, gen, progress, f"stage1:{m}", f"stage 1: {m} alone",
            require_epoch=True, select_on_loss=cfg.stage1_select == "loss",
        )  # fmt: skip
        for r in h:
            r["modality"] = m
        hist += h
        net.load_state_dict(state)
        out[m] = {
            "net": net,
            "state": _enc_head_state(net, m),
            "val_f1": score,
        }
    return out, hist


def _enc_head_state(net: MultiModalNet, m: str) -> dict:
    return {
        "encoder": copy.deepcopy(net.encoders[m].state_dict()),
        "head": copy.deepcopy(net.heads[m].state_dict()),
    }


@torch.no_grad()
def _logits(net: MultiModalNet, m: str, s: Split) -> torch.Tensor:
    net.eval()
    return forward(net, _single(s, m))["logits"][m]


def _distil(mods, n_features, n_classes, sets, stage1, label_mi, cfg, progress):
    """Distillation plan on the unimodal embeddings, then KD into each planned student."""
    from balmm.profiling.plan import distillation_plan

    fit, val = sets["fit"], sets["val"]
    yv = val.y.cpu().numpy()
    strength: dict[str, tuple[float, float]] = {}
    emb: dict[str, np.ndarray] = {}
    trained = [m for m in mods if m in stage1]
    for m in trained:
        pv = infer(stage1[m]["net"], _single(val, m))
        mk = val.M[m].cpu().numpy() & (yv >= 0)
        f, lo = bootstrap_f1(yv[mk], pv[m][mk].argmax(1), n_classes, cfg.n_boot, cfg.seed)
        strength[m] = (f, lo)
        zf = infer(stage1[m]["net"], _single(fit, m))[f"z:{m}"]
        emb[m] = np.concatenate([zf, pv[f"z:{m}"]])
    both_mask = {
        m: np.concatenate([fit.M[m].cpu().numpy(), val.M[m].cpu().numpy()]) for m in trained
    }
    pair: dict[tuple[str, str], tuple[float, float]] = {}
    pair_ci: dict[str, list[float]] = {}
    for i, a in enumerate(trained):
        for b in trained[i + 1 :]:
            both = both_mask[a] & both_mask[b]
            est, lo, hi = kd_mod.pair_mi(emb[a][both], emb[b][both], cfg.mi_estimator,
                                         cfg.mi_pca_dims, cfg.n_boot, cfg.seed)  # fmt: skip
            pair[(a, b)] = (est, lo)
            pair_ci[f"{a}|{b}"] = [est, lo, hi]
    edges = distillation_plan(strength, {m: label_mi[m] for m in trained}, pair)
    plan = []
    for e in edges:
        d = e.to_dict()
        mi_ts = pair_lookup(pair, e.teacher, e.student)
        d["I_teacher_student_bits"] = mi_ts[0] if mi_ts else float("nan")
        d["I_student_label_bits"] = label_mi[e.student][0]
        d["teacher_val_f1"] = strength[e.teacher][0]
        d["student_val_f1_before"] = strength[e.student][0]
        plan.append(d)
    hist: list[dict] = []
    for s in trained:
        teachers = [(e.teacher, e.weight) for e in edges if e.student == s and e.enabled]
        if not teachers:
            continue
        t_fit = [(_logits(stage1[t]["net"], t, fit), fit.M[t], w) for t, w in teachers]
        net = stage1[s]["net"]
        net_kd = copy.deepcopy(net)
        rng, gen = random_streams(cfg.seed, "kd", s)
        fit_s = _restrict(fit, s)
        if fit.adj is None:  # the teachers' logits over the student's samples too (mlp)
            keep = fit.M[s].nonzero().squeeze(1)
            t_fit = [(lg[keep], mk[keep], w) for lg, mk, w in t_fit]

        def loss(model, out, y, masks, rows, _t=t_fit, _s=s):
            tl = [(lg[rows], mk[rows], w) for lg, mk, w in _t]
            v = kd_mod.kd_loss(out["logits"][_s], y, tl, cfg.kd_alpha, cfg.kd_temperature,
                               masks[_s])  # fmt: skip
            return v, {_s: v}

        state, h, score = _fit_loop(
            net_kd, loss, fit_s, _restrict(val, s), cfg, cfg.kd_epochs, 0, s, rng, gen,
            progress, f"kd:{s}", f"stage 1: distil into {s}", require_epoch=True,
        )  # fmt: skip
        for r in h:
            r["modality"] = s
        hist += h
        net_kd.load_state_dict(state)
        stage1[s]["kd_state"] = _enc_head_state(net_kd, s)
        stage1[s]["kd_val_f1"] = score
        for d in plan:
            if d["student"] == s and d["enabled"]:
                d["student_val_f1_after"] = score
    return plan, hist
