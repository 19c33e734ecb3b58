"""Cross-fitting's fold models of one (modality, weight decay), trained as one batched model.

Each fold is a *member*: its own one-modality network, its own minibatches and dropout
masks (drawn from the random streams a lone loop over that fold draws from), its own
early stopping. The members step together: one backward pass over the sum of their
losses and one fused AdamW step over all their parameters (elementwise and per tensor,
so each member moves exactly as its own optimiser would move it). With the ``linear``
encoder the members whose minibatches have the same length share one gather of their
rows, one dropout multiply, one cross-entropy and the held-out scoring (each layer
stays one ``F.linear`` per member); other encoders run each member's own forward pass.
Either way, on CPU, a member's weights, held-out curve and stopping epoch are bit for bit
those of training that fold alone (tests/test_curves.py): what is shared is the Python
and autograd overhead of thousands of tiny steps. (On a GPU the dropout masks come from
other streams than a lone loop's: drawn on the host for ``linear``, from the device's one
generator otherwise. ``compile`` and ``bf16`` are not applied to these small models.)

Two uses (:mod:`balmm.training.crossfit`): *curves* (every fold, and the nested pair
members, for up to ``pretrain_epochs``, recording held-out log-probabilities after each
epoch; a fold stops after ``pretrain_patience`` epochs without a lower held-out log-loss)
and *fixed* (some folds for a given number of epochs each: a fold model at its chosen
count when the curve's per-epoch states are not in memory).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from balmm.config import TrainConfig
from balmm.model.encoders import LinearEncoder
from balmm.model.fusion import MultiModalNet
from balmm.optim import Adam, adamw
from balmm.progress import Progress
from balmm.training import distributed
from balmm.training.balancers import masked_ce
from balmm.training.budget import BUDGET
from balmm.training.checkpoint import Checkpointer
from balmm.training.metrics import macro_f1
from balmm.training.minibatch import batches, global_stream, random_streams
from balmm.training.stage1 import unimodal_net, with_decay
from balmm.training.tensors import RowSource, Split, forward, infer, mean_log_loss


@dataclass
class Member:
    """One fold's model in a batched unit, and where its training stands."""

    fold: int
    net: MultiModalNet
    fit: Split  # the rows it trains on (all have the modality)
    held: Split | None  # curves: the held-out rows that have the modality
    epochs: int  # the most epochs it trains
    rng: np.random.Generator  # minibatch order
    drop: torch.Generator  # dropout masks (the lone loop's global torch stream)
    epoch: int = 0
    stale: int = 0
    best_key: tuple[float, float] | None = None
    stopped: bool = False
    trace: list[torch.Tensor] = field(default_factory=list)  # held-out log-probabilities
    snapshots: list[dict] | None = None  # the state after each epoch, when kept
    held_x: torch.Tensor | None = None  # the held-out features, read once
    early_stop: bool = True  # false: runs all its epochs (a nested pair member)

    @property
    def active(self) -> bool:
        return not self.stopped and self.epoch < self.epochs


def new_member(
    m: str, n_in: int, n_classes: int, cfg: TrainConfig, fold: int, fit: Split,
    held: Split | None, epochs: int, keep: bool, scope: str | None = None,
) -> Member:  # fmt: skip
    """Fold ``fold``'s member, initialised from the random streams its lone loop uses
    (``scope``, default ``fold<fold>/``, names them)."""
    rng, _ = random_streams(cfg.seed, scope or f"fold{fold}/", "stage1", m)
    net = unimodal_net(m, n_in, n_classes, cfg).to(fit.y.device)
    drop = torch.Generator()
    drop.set_state(torch.get_rng_state())  # what dropout would draw next in a lone loop
    return Member(fold, net, fit, held, epochs, rng, drop, snapshots=[] if keep else None)


def snapshot(net: MultiModalNet) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _linear(x: torch.Tensor, layers: list[nn.Linear]) -> torch.Tensor:
    """``layers[i](x[i])`` for every member i, one ``F.linear`` each: a batched product
    (``torch.baddbmm``) was no faster at these sizes, and for some shapes its backward
    sums in another order than the lone layer's (other bits)."""
    return torch.stack([F.linear(x[i], lin.weight, lin.bias) for i, lin in enumerate(layers)])


def _dropout(x: torch.Tensor, p: float, gens: list[torch.Generator]) -> torch.Tensor:
    """``F.dropout(x[i], p)`` for each member i with its own generator, drawn as torch draws
    it on CPU (a Bernoulli(1 - p) mask scaled by 1 / (1 - p)): the same masks, the same bits.
    The masks are drawn on the host, also for a model on a GPU."""
    if p == 0:
        return x
    if p == 1:
        return x * torch.zeros((), dtype=x.dtype, device=x.device)
    noise = torch.empty(x.shape, dtype=x.dtype)
    for i, g in enumerate(gens):
        noise[i].bernoulli_(1 - p, generator=g)
    noise.div_(1 - p)
    return x * noise.to(x.device)


class BatchedFolds:
    """The members of one (modality, weight decay) unit, trained together (see the module
    docstring). ``epoch``, :meth:`state` and :meth:`load_state` are what
    :class:`~balmm.training.checkpoint.Checkpointer` saves and restores of a loop."""

    def __init__(self, m: str, members: list[Member], cfg: TrainConfig, key: str) -> None:
        self.m, self.members, self.cfg, self.key = m, members, cfg, key
        self.epoch = 0
        self.n_classes = members[0].net.n_classes
        enc = members[0].net.encoders[m]
        # stacked forward: the linear encoder (dropout -> Linear -> dropout)
        self.stacked = isinstance(enc, LinearEncoder)
        # one parameter group, fused AdamW: what each member's own loop builds (one modality)
        group = {"params": [p for mb in members for p in mb.net.parameters()],
                 "weight_decay": cfg.weight_decay, "fused": True}  # fmt: skip
        self.opt: Adam = adamw([group], lr=cfg.lr, weight_decay=cfg.weight_decay)
        # stacked, features in memory: every member's rows in one tensor, so that a step
        # gathers the group's minibatches with one index (member i's rows from offset[i])
        self._rows: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._offset = {id(mb): 0 for mb in members}
        if self.stacked and not any(isinstance(mb.fit.X[m], RowSource) for mb in members):
            sizes = np.cumsum([0] + [len(mb.fit) for mb in members])
            self._offset = {id(mb): int(o) for mb, o in zip(members, sizes, strict=False)}
            self._rows = (torch.cat([mb.fit.X[m] for mb in members]),
                          torch.cat([mb.fit.y for mb in members]),
                          torch.cat([mb.fit.M[m] for mb in members]))  # fmt: skip

    # -- state (checkpoints) ----------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "optimizer": self.opt.state_dict(),
            "members": [
                {"model": mb.net.state_dict(), "epoch": mb.epoch, "stale": mb.stale,
                 "best_key": mb.best_key, "stopped": mb.stopped, "trace": self._trace(mb),
                 "rng": mb.rng.bit_generator.state, "drop": mb.drop.get_state()}
                for mb in self.members
            ],
        }  # fmt: skip

    def load_state(self, st: dict[str, Any]) -> None:
        self.epoch = int(st["epoch"])
        for mb, s in zip(self.members, st["members"], strict=True):
            mb.net.load_state_dict(s["model"])
            mb.epoch, mb.stale, mb.stopped = int(s["epoch"]), int(s["stale"]), bool(s["stopped"])
            mb.best_key = None if s["best_key"] is None else tuple(s["best_key"])
            mb.trace = list(s["trace"].unbind(0))
            mb.rng.bit_generator.state = s["rng"]
            mb.drop.set_state(s["drop"])
            if mb.snapshots is not None:
                mb.snapshots = None  # the epochs before the interruption are not in memory
        self.opt.load_state_dict(st["optimizer"])

    def _trace(self, mb: Member) -> torch.Tensor:
        """A member's held-out curve: (epochs, held-out samples, classes)."""
        if mb.trace:
            return torch.stack(mb.trace)
        n_held = 0 if mb.held is None else len(mb.held)
        return torch.zeros((0, n_held, self.n_classes))

    def traces(self) -> list[torch.Tensor]:
        """Every member's held-out curve (see :meth:`_trace`)."""
        return [self._trace(mb) for mb in self.members]

    def train_on(self, epochs: dict[int, int], key: str) -> None:
        """Let the members of the folds in ``epochs`` train on, without their held-out rows
        or early stopping, until that many epochs in all; the other members rest. Training
        past a curve's stop continues the very trajectory a lone loop would have taken."""
        self.key = key
        for mb in self.members:
            if mb.fold in epochs:
                mb.held, mb.stopped, mb.epochs = None, False, epochs[mb.fold]
            else:
                mb.epochs = mb.epoch
            mb.snapshots = None

    def keep_first(self, n: int) -> None:
        """Drop every member but the first ``n``, and their rows: the rest never train again
        (without gradients, the fused step skips their parameters)."""
        if len(self.members) > n and self._rows is not None:
            end = self._offset[id(self.members[n - 1])] + len(self.members[n - 1].fit)
            x, y, has = (t[:end].clone() for t in self._rows)
            self._rows = (x, y, has)
        self.members = self.members[:n]

    # -- training ---------------------------------------------------------------------
    def run(self, progress: Progress, ckpt: Checkpointer | None = None) -> None:
        """Train every member until its epochs or its early stop (continuing a restored
        state); with ``ckpt``, the unit's state is saved every ``checkpoint_every`` epochs."""
        save = ckpt.loop_hook(self.key) if ckpt is not None else None
        budget = BUDGET.get()
        if budget is not None:
            budget.start(self.key)
        total = max(mb.epochs for mb in self.members)
        n_pairs = sum(mb.fold < 0 for mb in self.members)  # nested pair members
        what = f"{len(self.members) - n_pairs} folds" + (f" + {n_pairs} pairs" if n_pairs else "")
        progress.start(self.key, f"stage 1: {self.m} alone, {what}", total)
        if self.epoch:
            progress.update(self.key, self.epoch)
        while any(mb.active for mb in self.members):
            self.epoch += 1
            active = [mb for mb in self.members if mb.active]
            self._epoch(active)
            scored = [mb for mb in active if mb.held is not None]
            for mb, proba in zip(scored, self._held_proba(scored), strict=True):
                self._judge(mb, proba)
            for mb in active:
                mb.epoch += 1
                if mb.snapshots is not None:
                    mb.snapshots.append(snapshot(mb.net))
            going = [mb for mb in active if mb.active]
            if going and budget is not None and distributed.agree(budget.spent(self.key)):
                for mb in going:  # at an epoch boundary, as a lone loop stops
                    mb.stopped = True
            if save is not None and any(mb.active for mb in self.members):
                save(self)
            progress.update(self.key, 1)
        progress.finish(self.key)

    def _epoch(self, active: list[Member]) -> None:
        if not self.stacked:  # stacked: dropout is applied here, whatever the modules' mode
            for mb in active:
                mb.net.train()
        # gcn: a member's one batch is its whole fold graph
        plans = [batches(len(mb.fit), self.cfg.batch_size, mb.rng, mb.fit.adj is not None)
                 for mb in active]  # fmt: skip
        dev = active[0].fit.y.device
        orders = [torch.as_tensor(np.concatenate(p)).to(dev) for p in plans]
        starts = [0] * len(active)
        for step in range(max(len(p) for p in plans)):
            here = []
            for i, (mb, plan) in enumerate(zip(active, plans, strict=True)):
                if step < len(plan):
                    here.append((mb, orders[i][starts[i] : starts[i] + len(plan[step])]))
                    starts[i] += len(plan[step])
            total = self._loss(here)
            self.opt.zero_grad(set_to_none=True)
            total.backward()
            self.opt.step()

    def _loss(self, here: list[tuple[Member, torch.Tensor]]) -> torch.Tensor:
        """The sum of the members' minibatch losses (each member's mean over its own rows)."""
        m, smoothing = self.m, self.cfg.label_smoothing
        losses = []
        if not self.stacked:
            for mb, r in here:
                with global_stream(mb.drop):
                    out = forward(mb.net, mb.fit, r)
                losses.append(masked_ce(out["logits"][m], mb.fit.y[r], mb.fit.M[m][r], smoothing))
            return torch.stack(losses).sum()
        by_len: dict[int, list[tuple[Member, torch.Tensor]]] = {}
        for mb, r in here:  # stacked where the minibatches have the same length
            by_len.setdefault(len(r), []).append((mb, r))
        for group in by_len.values():
            nets = [mb.net for mb, _ in group]
            gens = [mb.drop for mb, _ in group]
            encs = [net.encoders[m].net for net in nets]
            if self._rows is not None:
                at = torch.stack([r + self._offset[id(mb)] for mb, r in group])
                x, y, has = (t[at] for t in self._rows)
            else:
                x = torch.stack([mb.fit.X[m][r] for mb, r in group])
                y = torch.stack([mb.fit.y[r] for mb, r in group])
                has = torch.stack([mb.fit.M[m][r] for mb, r in group])
            x = _dropout(x, encs[0][0].p, gens)
            z = _dropout(_linear(x, [e[1] for e in encs]), encs[0][2].p, gens)
            logits = _linear(z, [net.heads[m] for net in nets])
            ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none",
                                 label_smoothing=smoothing).view(y.shape)  # fmt: skip
            # masked_ce over rows that all have the modality, member by member
            mask = has.to(ce.dtype)
            losses.append(((ce * mask).sum(1) / mask.sum(1).clamp_min(1.0)).sum())
        return torch.stack(losses).sum()

    @torch.no_grad()
    def _held_proba(self, scored: list[Member]) -> list[np.ndarray]:
        """Each member's class probabilities on its held-out rows (eval mode), as
        :func:`~balmm.training.tensors.infer` computes them: stacked for the linear encoder
        (no dropout in eval mode; the same products, the same bits)."""
        m = self.m
        if not self.stacked:
            out = []
            for mb in scored:
                assert mb.held is not None
                if len(mb.held) == 0:
                    out.append(np.zeros((0, self.n_classes), np.float32))
                    continue
                out.append(infer(mb.net, mb.held, embeddings=False)[m])
                mb.net.train()
            return out
        by_len: dict[int, list[int]] = {}
        for i, mb in enumerate(scored):
            by_len.setdefault(len(mb.held or ()), []).append(i)
        proba: list[np.ndarray] = [np.zeros((0, self.n_classes), np.float32)] * len(scored)
        for n_held, idx in by_len.items():
            if n_held == 0:
                continue
            nets = [scored[i].net for i in idx]
            x = torch.stack([_held_x(scored[i], m) for i in idx])
            z = _linear(x, [net.encoders[m].net[1] for net in nets])
            logits = _linear(z, [net.heads[m] for net in nets])
            p = torch.softmax(logits, 2).cpu().numpy()
            for j, i in enumerate(idx):
                proba[i] = p[j]
        return proba

    def _judge(self, mb: Member, proba: np.ndarray) -> None:
        """After an epoch: record the held-out log-probabilities, and stop early on the
        held-out log-loss (ties: macro-F1), as a lone loop selecting on loss does."""
        held = mb.held
        assert held is not None
        mb.trace.append(torch.log(torch.as_tensor(proba).clamp_min(1e-12)))
        if len(held) == 0 or not mb.early_stop:  # an empty curve, or one that runs in full
            return
        y = held.y.cpu().numpy()
        lab = y >= 0
        key = (-mean_log_loss(proba, y), macro_f1(y[lab], proba[lab].argmax(1), self.n_classes))
        if mb.best_key is None or key > mb.best_key:
            mb.best_key, mb.stale = key, 0
        else:
            mb.stale += self.cfg.eval_every
        if self.cfg.pretrain_patience and mb.stale >= self.cfg.pretrain_patience:
            mb.stopped = True


def _held_x(mb: Member, m: str) -> torch.Tensor:
    """A member's held-out features as one tensor (kept: the same rows every epoch)."""
    if mb.held_x is None:
        assert mb.held is not None
        x = mb.held.X[m]
        mb.held_x = x.dense() if isinstance(x, RowSource) else x
    return mb.held_x


def fold_states(
    fold_epochs: dict[str, list[int]],
    fold_decay: dict[str, list[float]],
    inside: dict[str, list[Split]],
    snapshots: dict[tuple[str, float], list],
    live: dict[tuple[str, float], BatchedFolds],
    n_features: dict[str, int],
    n_classes: int,
    cfg: TrainConfig,
    progress: Progress,
    ckpt: Checkpointer,
) -> dict[tuple[int, str], dict]:
    """Cross-fitting's model of each fold and modality, at its chosen (decay, epoch count):
    the curve's state after that epoch where it is in memory; else the fold's member
    trained on from where its curve stopped (``live``), or trained again from the start for
    that many epochs (the same random streams: the same trajectory, bit for bit)."""
    states: dict[tuple[int, str], dict] = {}
    again: dict[tuple[str, float], list[int]] = {}
    for m, inside_m in inside.items():
        for k in range(len(inside_m)):
            n_ep, wd = fold_epochs[m][k], fold_decay[m][k]
            unit, kept = f"fold{k}/stage1:{m}", snapshots[(m, wd)][k]
            done = ckpt.done(unit)
            if done is None and kept is not None and len(kept) >= n_ep:
                done = {"state": kept[n_ep - 1], "history": [], "score": float("nan")}
                ckpt.save_done(unit, done)
            if done is None:
                again.setdefault((m, wd), []).append(k)
            else:
                states[(k, m)] = done["state"]
    for (m, wd), ks in again.items():
        cfg_wd = with_decay(cfg, wd)[0]
        job = live.get((m, wd))
        target = {k: fold_epochs[m][k] for k in ks}
        on = [k for k in ks if job is not None and job.members[k].epoch <= target[k]]
        members = []
        if on:
            assert job is not None
            job.train_on({k: target[k] for k in on}, f"folds/stage1:{m}")
            job.run(progress)
            members += [job.members[k] for k in on]
        fresh = [new_member(m, n_features[m], n_classes, cfg_wd, k, inside[m][k], None,
                            target[k], keep=False) for k in ks if k not in on]  # fmt: skip
        if fresh:
            BatchedFolds(m, fresh, cfg_wd, f"folds/stage1:{m}").run(progress)
        for mb in members + fresh:
            done = {"state": snapshot(mb.net), "history": [], "score": float("nan")}
            ckpt.save_done(f"fold{mb.fold}/stage1:{m}", done)
            states[(mb.fold, m)] = done["state"]
    return states
