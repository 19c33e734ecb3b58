"""The training loop shared by every stage: one :class:`TrainLoop` per model trained.

A loop trains for up to ``epochs``, scores the validation samples after each epoch and
keeps the state with the best score (early stopping after ``patience`` epochs without a
better one). Its whole state (model, optimiser, best state, patience counter, history
and every random stream) can be captured and restored, so a checkpointed run resumes to
byte-identical results on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from balmm.config import TrainConfig
from balmm.model.fusion import MultiModalNet
from balmm.optim import adamw
from balmm.progress import NULL_PROGRESS, Progress
from balmm.training import distributed
from balmm.training.balancers import FUSED, Balancer
from balmm.training.budget import BUDGET
from balmm.training.minibatch import batches, drop_modalities, to_device
from balmm.training.prefetch import prefetched
from balmm.training.tensors import Split, forward, head_f1, infer, mean_log_loss

LossFn = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]

# read the next minibatch of features kept off the device (on disk, --backed; host rows for
# a GPU) in a background thread while the current one trains (same batches, same model)
PREFETCH = True


class StepLog:
    """Each step's losses and squared gradient norms, kept as tensors where they are (the
    device) and read once per epoch: a ``.item()`` or ``.tolist()`` per step would make the
    host wait for the device at every step.

    The epoch means are then summed on the host in float64, step by step, in the order and
    precision history.jsonl has always used (so CPU outputs stay byte-identical)."""

    def __init__(self, model: MultiModalNet) -> None:
        self.encoders = list(model.encoders)
        self.params = [(m, p) for m, enc in model.encoders.items() for p in enc.parameters()]
        self.keys: list[list[str]] = []
        self.values: list[torch.Tensor] = []

    def add(self, total: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        """Record one step (after backward: the gradients are read here)."""
        # a parameter without a gradient (frozen, or its modality absent from the batch)
        # adds 0.0 to its encoder's sum of squares, which leaves the sum as it was
        sq = [
            p.grad.pow(2).sum() if p.grad is not None else p.new_zeros(()) for _, p in self.params
        ]
        losses = [total.detach().float(), *(v.detach().float() for v in parts.values())]
        self.keys.append(["total", *parts])
        self.values.append(torch.stack([*losses, *(v.float() for v in sq)]))

    def means(self) -> tuple[dict[str, float], dict[str, float]]:
        """Mean loss per key and mean gradient norm per encoder over the steps."""
        if not self.values:
            return {}, {}
        flat = torch.cat(self.values)
        if distributed.current() is not None:  # the ranks' mean (losses are per shard)
            flat = distributed.mean_over_ranks(flat)
        flat = flat.tolist()  # the epoch's one host transfer
        sums: dict[str, float] = {}
        gsum: dict[str, float] = {}
        i = 0
        for keys in self.keys:
            for k in keys:
                sums[k] = sums.get(k, 0.0) + flat[i]
                i += 1
            sq = dict.fromkeys(self.encoders, 0.0)
            for m, _ in self.params:
                sq[m] += flat[i]
                i += 1
            for m, v in sq.items():
                gsum[m] = gsum.get(m, 0.0) + math.sqrt(v)
        nb = max(len(self.keys), 1)
        return {k: v / nb for k, v in sums.items()}, {k: v / nb for k, v in gsum.items()}


_COMPILED: list[Callable] = []


def compiled_forward() -> Callable:
    """:func:`forward` through ``torch.compile`` (config key ``compile``), built once per
    process so that every loop over a model of the same shape reuses its graphs."""
    if not _COMPILED:
        _COMPILED.append(torch.compile(forward))
    return _COMPILED[0]


@dataclass(frozen=True)
class LoopSpec:
    """What one loop trains towards and how it selects (the per-stage settings)."""

    key: str  # "stage1:mrna", "kd:mirna", "stage2", ... (history and checkpoints)
    desc: str  # progress label
    epochs: int
    patience: int
    score_head: str  # the head whose validation score selects the state
    require_epoch: bool = False  # False: the starting point competes in selection too
    select_on_loss: bool = False  # select on validation loss (ties: macro-F1)
    modality_dropout: float = 0.0
    lr_scale: float = 1.0
    frozen: frozenset[str] = frozenset()  # encoders kept as they are (eval, no gradient)
    # no selection: train exactly ``epochs`` and keep the last state (an epoch count chosen
    # by cross-fitting); the validation split, if any, is only scored for the history
    keep_last: bool = False
    # AdamW weight decay of each modality's encoder and head (cross-fitting's choice);
    # every other parameter keeps the config's weight_decay
    decay: dict[str, float] | None = None


@dataclass
class LoopResult:
    best_state: dict
    history: list[dict]
    best_score: float


class TrainLoop:
    """Train ``model`` on ``fit`` with ``loss_fn``; select on ``val`` (see :class:`LoopSpec`).

    ``on_epoch(loop)`` is called after each finished epoch (checkpoints hook in here).
    """

    def __init__(
        self,
        model: MultiModalNet,
        loss_fn: LossFn,
        fit: Split,
        val: Split | None,
        cfg: TrainConfig,
        spec: LoopSpec,
        streams: tuple[np.random.Generator, torch.Generator],
        balancer: Balancer | None = None,
        progress: Progress = NULL_PROGRESS,
        on_epoch: Callable[[TrainLoop], None] | None = None,
        held: Split | None = None,
    ) -> None:
        """``held``: a cross-fitting fold's held-out samples, whose log-probabilities (every
        head's) after every epoch go in the history (``held_logp``): a curve, never a
        selection."""
        self.model, self.loss_fn, self.fit, self.val = model, loss_fn, fit, val
        self.held = held
        self.cfg, self.spec, self.balancer = cfg, spec, balancer
        self.rng, self.gen = streams
        self.progress, self.on_epoch = progress, on_epoch
        for m in spec.frozen:
            model.encoders[m].requires_grad_(False)
        extra = list(balancer.parameters()) if balancer is not None else []
        params = [p for p in model.parameters() if p.requires_grad] + extra
        # torch.optim.AdamW's step, bit for bit, without its 1.5 s torch._dynamo import
        self.opt = adamw(_param_groups(model, extra, cfg.weight_decay, spec.decay or {}),
                         lr=cfg.lr * spec.lr_scale, weight_decay=cfg.weight_decay)  # fmt: skip
        self.epoch = 0
        self.stale = 0
        self.history: list[dict] = []
        self.best_key: tuple[float, float] | None = None
        self.best_state = copy.deepcopy(model.state_dict())
        self.best_score = float("nan")
        self._started = False
        device = self._device = next(model.parameters()).device
        # bf16 autocast: CUDA only (config key bf16); float32 everywhere else
        self._bf16 = cfg.bf16 and device.type == "cuda"
        self._forward = compiled_forward() if cfg.compile else forward
        # under torchrun: a DDP replica, each global minibatch split over the ranks
        self._dist = distributed.current() is not None
        self.net = distributed.wrap(model)
        # gradients DDP does not reduce, or that the balancer rescales after it did
        touches = balancer is not None and (
            bool(extra) or balancer.name == "ogm-ge" or bool(cfg.grad_modulation)
        )
        self._resync = params if self._dist and touches else []

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self._bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- selection --------------------------------------------------------------------
    def score(self) -> tuple[dict[str, float], float, tuple[float, float]]:
        """Validation macro-F1 of every head, the validation loss of the score head, and
        the selection key (higher is better; ties broken by the other criterion)."""
        proba = infer(self.model, self.val, embeddings=False)
        f1s = head_f1(proba, self.val, self.model.n_classes)
        head = self.spec.score_head
        vloss = mean_log_loss(proba[head], self.val.y.cpu().numpy())
        key = (-vloss, f1s[head]) if self.spec.select_on_loss else (f1s[head], -vloss)
        return f1s, vloss, key

    # -- state (checkpoints) ----------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to continue this loop exactly where it is: the live objects,
        not copies (a checkpoint serialises them before training goes on; copying them
        first cost more than writing them)."""
        return {
            "epoch": self.epoch,
            "stale": self.stale,
            "history": self.history,
            "best_key": self.best_key,
            "best_score": self.best_score,
            "best_state": self.best_state,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "balancer": self.balancer.state() if self.balancer is not None else None,
            "rng": self.rng.bit_generator.state,
            "gen": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "started": self._started,
        }

    def load_state(self, st: dict[str, Any]) -> None:
        self.epoch, self.stale = int(st["epoch"]), int(st["stale"])
        self.history = list(st["history"])
        self.best_key = None if st["best_key"] is None else tuple(st["best_key"])
        self.best_score = float(st["best_score"])
        self.best_state = st["best_state"]
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        if self.balancer is not None:
            self.balancer.load_state(st["balancer"])
        self.rng.bit_generator.state = st["rng"]
        self.gen.set_state(st["gen"])
        torch.set_rng_state(st["torch_rng"])
        self._started = bool(st["started"])

    # -- training ---------------------------------------------------------------------
    def run(self) -> LoopResult:
        """Train until ``epochs`` or early stopping (continuing a restored state)."""
        spec = self.spec
        if not self._started and not spec.require_epoch and not spec.keep_last:
            # epoch 0 = the starting point (e.g. stage-1 encoders) competes too
            f0, _, self.best_key = self.score()
            self.best_score = f0[spec.score_head]
        self._started = True
        self.progress.start(spec.key, spec.desc, total=spec.epochs)
        if self.epoch:
            self.progress.update(spec.key, self.epoch)
        budget = BUDGET.get()
        if budget is not None:
            budget.start(spec.key)
        stopped = bool(spec.patience and self.stale >= spec.patience)
        while self.epoch < spec.epochs and not stopped:
            self.epoch += 1
            rec = self._epoch()
            self.history.append(rec)
            stopped = bool(spec.patience and self.stale >= spec.patience)
            if (
                not stopped
                and self.epoch < spec.epochs
                and budget is not None
                and distributed.agree(budget.spent(spec.key))
            ):
                rec["stopped"] = "time_budget"  # at an epoch boundary; said in history
                stopped = True
            if self.on_epoch is not None and self.epoch < spec.epochs and not stopped:
                self.on_epoch(self)
            self.progress.update(spec.key, 1, **self._live(rec))
        self.progress.finish(spec.key)
        if spec.keep_last:
            self.best_state = copy.deepcopy(self.model.state_dict())
        return LoopResult(self.best_state, self.history, self.best_score)

    def _epoch(self) -> dict[str, Any]:
        model, fit, cfg, spec, bal = self.model, self.fit, self.cfg, self.spec, self.balancer
        model.train()
        for m in spec.frozen:  # eval mode: no dropout draws, so no effect on the others' streams
            model.encoders[m].eval()
        graph = fit.adj is not None
        log = StepLog(model)
        epoch_batches = batches(len(fit), cfg.batch_size, self.rng, graph)
        # the epoch's row order goes to the device in one copy, not one per step
        order = to_device(torch.as_tensor(np.concatenate(epoch_batches)), fit.y.device)
        # this rank's rows of each minibatch (under torchrun), for the prefetching loader
        local = [b[distributed.shard(b)] for b in epoch_batches] if self._dist else epoch_batches
        read = PREFETCH and not graph
        loaded = prefetched(fit.X, local, self._device) if read else ({} for _ in local)
        start = 0
        for rows, feats in zip(epoch_batches, loaded, strict=True):
            r = order[start : start + len(rows)]
            start += len(rows)
            base = fit.gM if graph else {m: mk[r] for m, mk in fit.M.items()}
            masks = (
                drop_modalities(base, spec.modality_dropout, self.gen, model.fusion_off)
                if spec.modality_dropout
                else base
            )
            if self._dist and not graph:  # this rank's share of the global minibatch
                pos = torch.as_tensor(distributed.shard(rows), device=r.device)
                r, masks = r[pos], {m: mk[pos] for m, mk in masks.items()}
            sel_masks = {m: mk[fit.graph_rows] for m, mk in masks.items()} if graph else masks
            y = fit.y[r] if not graph else fit.y
            with self._autocast():
                out = self._forward(self.net, fit, None if graph else r, masks=masks,
                                    feats=feats)  # fmt: skip
                total, parts = self.loss_fn(model, out, y, sel_masks, r)
            self.opt.zero_grad(set_to_none=True)
            total.backward()
            if bal is not None:
                bal.after_backward(model, out, y, sel_masks, self.gen)
            distributed.average_grads(self._resync)
            log.add(total, parts)
            self.opt.step()
        rec: dict[str, Any] = {"stage": spec.key, "epoch": self.epoch}
        rec["loss"], rec["grad_norm"] = log.means()
        scored = self.val is not None and len(self.val) > 0
        if scored and (self.epoch % cfg.eval_every == 0 or self.epoch == spec.epochs):
            f1s, vloss, cand = self.score()
            rec["val_f1"] = f1s
            rec["val_loss"] = vloss
            improved = self.best_key is None or cand > self.best_key
            if improved:
                self.best_key = cand
                self.stale = 0
            else:
                self.stale += cfg.eval_every
            if spec.keep_last:  # early stopping still applies; the state kept is the last
                self.best_score = f1s[spec.score_head]
            elif improved:
                self.best_state = copy.deepcopy(model.state_dict())
                self.best_score = f1s[spec.score_head]
                rec["selected"] = True
            if bal is not None and bal.schedule is None:
                bal.end_epoch(f1s)
        if bal is not None and bal.schedule is not None:
            # a fixed schedule of evidence (cross-fitting's pooled OOF macro-F1 per epoch)
            rec["weight_evidence"] = evidence = bal.evidence_at(self.epoch)
            rec.setdefault("val_f1", evidence)  # no carve scored: the history's F1
            bal.end_epoch(evidence)
        if spec.keep_last and self.epoch == spec.epochs:
            rec["selected"] = True
        if self.held is not None and len(self.held):
            p = infer(self.model, self.held, embeddings=False)
            rec["held_logp"] = {h: torch.log(torch.as_tensor(v).clamp_min(1e-12))
                                for h, v in p.items()}  # fmt: skip
        if bal is not None:
            rec["weights"] = bal.weights()
            rec["ogm_coef"] = dict(bal.last_coef)
        return rec

    def _live(self, rec: dict[str, Any]) -> dict[str, float]:
        live = {"val_f1": rec.get("val_f1", {}).get(self.spec.score_head, float("nan"))}
        if self.balancer is not None:
            live.update({f"f1_{k}": v for k, v in rec.get("val_f1", {}).items() if k != FUSED})
            live.update({f"w_{k}": v for k, v in rec["weights"].items()})
        return live


def _param_groups(
    model: MultiModalNet, extra: list, default: float, decay: dict[str, float]
) -> list[dict]:
    """AdamW parameter groups: modality m's encoder and head at ``decay[m]`` (cross-fitting's
    choice), the rest at ``default``.

    The fused AdamW kernel (a quarter of the unfused update's time on CPU) steps every
    parameter of a one-modality net (stage 1: most of a run's steps) and a joint model's
    per-modality encoders and heads. Its rounding depends on a tensor's length (vectorised
    body, scalar tail), so the parameters whose shape depends on which assays are present
    (the fusion head, the stacker, the balancer's, an early-fusion encoder) keep the
    unfused step: an assay left out of the fusion must not change the others' weights."""
    one = len(model.modalities) == 1
    groups: dict[tuple[float, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part, _, rest = name.partition(".")
        m = rest.partition(".")[0] if part in ("encoders", "heads") else None
        per_modality = m is not None and not model.early_fusion
        groups.setdefault((decay.get(m, default) if m else default, one or per_modality),
                          []).append(p)  # fmt: skip
    groups.setdefault((default, one), []).extend(extra)
    return [{"params": ps, "weight_decay": wd, "fused": fused}
            for (wd, fused), ps in groups.items() if ps]  # fmt: skip
