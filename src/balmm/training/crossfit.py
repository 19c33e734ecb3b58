"""Cross-fitting: the data-driven decisions of stage 1 made on out-of-fold (OOF)
predictions and embeddings over every training sample.

The training samples are split into K stratified folds. For each fold k, each
modality's unimodal model is trained on the other folds and predicts fold k, at the
(decay, epoch count) chosen on pair models that saw neither fold k nor the fold they score
(nested cross-fitting, :mod:`balmm.training.nested`). No fold's model or decision reads
its own held-out rows, not even through other folds' models (tested). The OOF logits and
embeddings then decide:

- teacher strength: OOF macro-F1 over all training samples, and a paired bootstrap of
  the teacher-minus-student macro-F1 on the samples measured in both;
- the CCH gap: I(Z_t; Z_s) on held-out embeddings (per fold, averaged: each fold's
  models embed in their own coordinates);
- the intermodal term of the stage-2 weights (:mod:`balmm.training.intermodal`, on the
  OOF logits);
- distillation: each planned student is distilled in every fold and the edge is kept only
  if the student's OOF log-loss and macro-F1 both improve; the targets come from teacher
  models that never saw the rows they score (the teacher's own fold model would be
  over-confident on its training rows): in fold k, on fold j's rows, the teacher's pair
  model {j, k}; in the final model, the teacher's OOF logits.

Above ``CROSSFIT_MAX_SAMPLES`` training samples one validation carve is large enough for
these decisions (and K fits would cost too much), so cross-fitting turns itself off.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from balmm.config import TrainConfig
from balmm.progress import Progress
from balmm.training import distributed
from balmm.training import kd as kd_mod
from balmm.training.checkpoint import Checkpointer
from balmm.training.curves import BatchedFolds, fold_states, new_member
from balmm.training.distil import distil_students, evidence_record
from balmm.training.fold_sets import fold_graph_inputs, fold_sets
from balmm.training.metrics import bootstrap_f1, macro_f1
from balmm.training.nested import (
    by_fold,
    can_nest,
    fold_targets,
    make_pair_sets,
    nest_groups,
    pair_members,
)
from balmm.training.oof_curves import choose_decay, choose_student_epochs, pooled_f1_schedule
from balmm.training.stage1 import enc_head_state, unimodal_net, with_decay
from balmm.training.tensors import Split, held_with, infer, restrict, single

logger = logging.getLogger("balmm")

# keep a fold's per-epoch states in memory (instead of training the fold again for the
# chosen epoch count) when one curve's states take at most this much
SNAPSHOT_MAX_BYTES = 32 * 2**20

# 20 % of 5 000 samples is a 1 000-sample validation carve: macro-F1 to about +-0.03
CROSSFIT_MAX_SAMPLES = 5000


def use_crossfit(cfg: TrainConfig, n_train: int) -> bool:
    """Cross-fit unless turned off or too large (gcn too: each fold builds its own graphs)."""
    return cfg.folds >= 2 and n_train <= CROSSFIT_MAX_SAMPLES


@dataclass
class CrossFit:
    """OOF outputs of the unimodal models over the training samples (rows of ``train``)."""

    folds: np.ndarray
    logits: dict[str, np.ndarray]  # (n, C); NaN where the sample lacks the modality
    z: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    y: np.ndarray
    fold_stage1: list[dict[str, dict]] = field(default_factory=list)  # per fold: train_alone
    fold_sets: list[dict[str, Split]] = field(default_factory=list)
    fold_fit_rows: list[np.ndarray] = field(default_factory=list)  # positions in ``train``
    # stage-1 epoch counts: for the final model (all folds' curves) and per fold (nested: the
    # pair curves of models that never saw the fold; else the other folds' curves)
    epochs: dict[str, int] = field(default_factory=dict)
    fold_epochs: dict[str, list[int]] = field(default_factory=dict)
    oof_loss_curve: dict[str, list[float]] = field(default_factory=dict)
    # weight decay of each modality's encoder and head, chosen with the epoch count (final
    # model, and per fold as its epoch count)
    decay: dict[str, float] = field(default_factory=dict)
    fold_decay: dict[str, list[float]] = field(default_factory=dict)
    # how each modality's per-fold choices were made: "nested" (pair models that saw neither
    # fold: :mod:`balmm.training.nested`) or "other folds"
    fold_rule: dict[str, str] = field(default_factory=dict)
    # nested: pair {j, k}'s held-out curve on group j's rows, per modality and decay, as
    # pair_traces[m][decay][k][j] (None where j == k); a group is a fold up to
    # nested.NEST_GROUPS folds, else neighbouring folds pooled (nested.nest_groups)
    pair_traces: dict[str, dict[float, list[list[np.ndarray | None]]]] = field(default_factory=dict)
    # refit_on = "train": each distilled student's epoch count, on the folds' students' pooled
    # held-out log-loss curves (crossfit_kd)
    kd_epochs: dict[str, int] = field(default_factory=dict)
    # pooled OOF macro-F1 after each epoch of the folds' "stage1:<m>" (the chosen decay) and
    # "kd:<s>" curves (refit_on = "train": the history's val_f1)
    oof_f1_curve: dict[str, list[float]] = field(default_factory=dict)

    def fold_record(self) -> dict[str, dict]:
        """metrics.json ``protocol.decisions.stage1_folds``: per modality, each fold's
        (decay, epoch count) for its OOF outputs and the rule that chose them."""
        return {
            m: {"rule": self.fold_rule[m], "epochs": list(eps),
                "weight_decay": list(self.fold_decay[m])}
            for m, eps in self.fold_epochs.items()
        }  # fmt: skip


def _snapshot_bytes(n_in: int, n_classes: int, cfg: TrainConfig) -> int:
    net = unimodal_net("m", n_in, n_classes, cfg)
    return sum(p.numel() * p.element_size() for p in net.state_dict().values()) * max(
        cfg.pretrain_epochs, 1
    )


def crossfit_alone(
    mods: list[str],
    n_features: dict[str, int],
    n_classes: int,
    train: Split,
    folds: np.ndarray,
    cfg: TrainConfig,
    progress: Progress,
    ckpt: Checkpointer,
) -> CrossFit:
    """Each modality alone in each fold; OOF logits and embeddings of every sample.

    In each fold a modality trains on all the fold's inside rows for up to
    ``pretrain_epochs`` (stopping after ``pretrain_patience`` epochs without a lower
    held-out log-loss), and its held-out log-probabilities are recorded after every epoch,
    once per weight decay of ``weight_decay_grid``; nested (``crossfit_nested``), so do the
    pair models of :mod:`balmm.training.nested`, batched with them. The (decay, epoch count)
    pair is the one with the lowest pooled OOF log-loss: for the final model on every
    fold's curve, for fold k on the pair curves {j, k} over fold j's rows (not nested: the
    other folds' curves; see :mod:`balmm.training.oof_curves`); the fold's model at that
    pair (kept from the curve, or trained again with the same random streams: the same
    trajectory) gives its OOF logits and embeddings."""
    n = len(train)
    y = train.y.cpu().numpy()
    present = {m: train.M[m].cpu().numpy() for m in mods}
    logits = {m: np.full((n, n_classes), np.nan, dtype=np.float32) for m in mods}
    z: dict[str, np.ndarray] = {}
    cf = CrossFit(folds, logits, z, present, y)
    n_folds = int(folds.max()) + 1
    # gcn: every modality's features, dense, once for every fold's and pair's graphs
    graph_inputs = fold_graph_inputs(train) if cfg.encoder == "gcn" else None
    all_sets = [fold_sets(train, folds, k, cfg, graph_inputs) for k in range(n_folds)]
    held_rows = [np.flatnonzero(folds == k) for k in range(n_folds)]
    inside: dict[str, list[Split]] = {}  # per modality and fold: the inside rows with it
    nested: set[str] = set()  # the modalities whose per-fold choices are nested
    groups = nest_groups(folds)
    group_rows = [np.flatnonzero(groups == g) for g in range(int(groups.max()) + 1)]
    units: list[tuple[str, float, bool]] = []  # (modality, decay, keep per-epoch states)
    for m in mods:
        inside_m = [restrict(sets["inside"], m) for sets, _ in all_sets]
        if min(len(s) for s in inside_m) < 4:
            logger.warning("modality %s: too few samples to cross-fit; no stage 1", m)
            continue
        inside[m] = inside_m
        if cfg.crossfit_nested and can_nest(present[m], groups):
            nested.add(m)
        keep = _snapshot_bytes(n_features[m], n_classes, cfg) <= SNAPSHOT_MAX_BYTES
        # every decay gets the same random streams: a paired comparison
        units += [(m, wd, keep) for wd in cfg.decay_grid()]

    # gcn: every pair's graph, over all modalities (other encoders: built per unit)
    graphs = (make_pair_sets(train, groups, cfg, graph_inputs)
              if nested and graph_inputs is not None else None)  # fmt: skip
    del graph_inputs  # every graph is built: free the dense copies
    # the units' members, kept in this process to be trained on where a fold model needs
    # more epochs than its curve ran (not under torchrun: a unit may train on another rank)
    live: dict[tuple[str, float], BatchedFolds] = {}
    sharing = distributed.current() is not None

    def fold_curves(unit: tuple[str, float, bool]) -> tuple[list[torch.Tensor], list]:
        """One (modality, decay): every fold's held-out curve, and its per-epoch states."""
        m, wd, keep = unit
        cfg_wd, tag = with_decay(cfg, wd)
        name = f"trace:{m}{tag}"
        done = ckpt.done(name)
        if done is not None:
            return done["traces"], [None] * n_folds
        members = [new_member(m, n_features[m], n_classes, cfg_wd, k, inside[m][k],
                              held_with(all_sets[k][0]["held"], m), cfg.pretrain_epochs, keep)
                   for k in range(n_folds)]  # fmt: skip
        if m in nested:  # after the fold members: job.members[k] stays fold k's
            members += pair_members(m, n_features[m], n_classes, cfg_wd, train, groups, graphs)
        job = BatchedFolds(m, members, cfg_wd, name)
        ckpt.resume_loop(name, job)
        job.run(progress, ckpt)
        traces = job.traces()
        job.keep_first(n_folds)  # the pair members are done: free their rows
        ckpt.save_done(name, {"traces": traces})
        if not sharing:
            live[(m, wd)] = job
        return traces, [mb.snapshots for mb in members[:n_folds]]

    # sfast (issue 12): under torchrun the units are shared out over the ranks, each
    # trained by one rank alone (bit for bit the single-process result); rank 0 then keeps
    # the checkpoints of all of them
    traces: dict[str, dict[float, list[np.ndarray]]] = {}
    snapshots: dict[tuple[str, float], list] = {}  # per fold: states after each epoch, or None
    for (m, wd, _), (tr, kept) in zip(units, distributed.spread(units, fold_curves),
                                      strict=True):  # fmt: skip
        if distributed.current() is not None:
            ckpt.save_done(f"trace:{m}{with_decay(cfg, wd)[1]}", {"traces": tr})
        curves = [t.numpy() for t in tr]
        traces.setdefault(m, {})[wd] = curves[:n_folds]
        if m in nested:
            cf.pair_traces.setdefault(m, {})[wd] = by_fold(curves[n_folds:], groups, present[m])
        snapshots[(m, wd)] = kept
    for m in inside:
        # a trace covers the held-out samples that have m, in order
        y_held = [y[h][present[m][h]] for h in held_rows]
        y_groups = [y[h][present[m][h]] for h in group_rows]
        group_of = [int(groups[h[0]]) for h in held_rows]
        (cf.decay[m], cf.epochs[m]), per_fold, pooled = choose_decay(
            traces[m], y_held, cf.pair_traces.get(m), y_groups, group_of
        )
        cf.fold_rule[m] = "nested" if m in nested else "other folds"
        cf.fold_decay[m] = [wd for wd, _ in per_fold]
        cf.fold_epochs[m] = [ep for _, ep in per_fold]
        cf.oof_loss_curve[m] = [float(v) for v in pooled]
        f1s = pooled_f1_schedule([{m: t} for t in traces[m][cf.decay[m]]], y_held,
                                 [{} for _ in y_held], n_classes)  # fmt: skip
        cf.oof_f1_curve[f"stage1:{m}"] = [e[m] for e in f1s]
    states = fold_states(cf.fold_epochs, cf.fold_decay, inside, snapshots, live, n_features,
                         n_classes, cfg, progress, ckpt)  # fmt: skip
    for k, (sets, fit_rows) in enumerate(all_sets):
        st: dict[str, dict] = {}
        held = held_rows[k]
        for m in inside:
            net = unimodal_net(m, n_features[m], n_classes, cfg).to(train.y.device)
            net.load_state_dict(states[(k, m)])
            st[m] = {"net": net, "state": enc_head_state(net, m), "val_f1": float("nan")}
            out = infer(net, single(sets["held"], m))
            with np.errstate(divide="ignore"):
                lg = np.log(np.clip(out[m], 1e-12, 1.0))
            has = present[m][held]
            logits[m][held[has]] = lg[has]
            zm = out[f"z:{m}"]
            if m not in z:
                z[m] = np.zeros((n, zm.shape[1]), dtype=np.float32)
            z[m][held] = zm
        cf.fold_stage1.append(st)
        cf.fold_sets.append(sets)
        cf.fold_fit_rows.append(fit_rows)
    return cf


def oof_evidence(
    cf: CrossFit, n_classes: int, cfg: TrainConfig
) -> tuple[
    dict[str, tuple[float, float]],
    dict[tuple[str, str], tuple[float, float]],
    dict[tuple[str, str], tuple[float, float]],
]:
    """Strength (OOF macro-F1, bootstrap lower bound), I(Z_a; Z_b) on held-out embeddings
    (within each fold, averaged over folds), and
    the paired teacher-minus-student macro-F1 (estimate, bootstrap lower bound) per
    ordered pair, on the samples measured in both."""
    mods = [m for m in cf.logits if m in cf.z]
    lab = cf.y >= 0
    ok = {m: cf.present[m] & lab & np.isfinite(cf.logits[m]).all(1) for m in mods}
    pred = {m: np.nan_to_num(cf.logits[m], nan=0.0).argmax(1) for m in mods}
    strength = {}
    for m in mods:
        strength[m] = bootstrap_f1(cf.y[ok[m]], pred[m][ok[m]], n_classes, cfg.n_boot, cfg.seed)
    pair: dict[tuple[str, str], tuple[float, float]] = {}
    paired: dict[tuple[str, str], tuple[float, float]] = {}
    rng = np.random.default_rng(cfg.seed)
    for i, a in enumerate(mods):
        for b in mods[i + 1 :]:
            both = ok[a] & ok[b]
            # per fold (each fold's models embed in their own coordinates), then averaged
            per_fold = []
            for k in range(int(cf.folds.max()) + 1):
                r = both & (cf.folds == k)
                per_fold.append(
                    kd_mod.pair_mi(
                        cf.z[a][r],
                        cf.z[b][r],
                        cfg.mi_estimator,
                        cfg.mi_pca_dims,
                        cfg.n_boot,
                        cfg.seed,
                    )[:2]
                )
            est_lo = np.array([v for v in per_fold if np.isfinite(v).all()])
            pair[(a, b)] = (
                (float(est_lo[:, 0].mean()), float(est_lo[:, 1].mean()))
                if len(est_lo)
                else (float("nan"), float("nan"))
            )
            yb, pa, pb = cf.y[both], pred[a][both], pred[b][both]
            d = macro_f1(yb, pa, n_classes) - macro_f1(yb, pb, n_classes)
            boots = []
            for _ in range(cfg.n_boot):
                r = rng.integers(0, len(yb), len(yb))
                boots.append(macro_f1(yb[r], pa[r], n_classes) - macro_f1(yb[r], pb[r], n_classes))
            lo_ab = float(np.quantile(boots, 0.05)) if boots else float("nan")
            hi_ab = float(np.quantile(boots, 0.95)) if boots else float("nan")
            paired[(a, b)] = (d, lo_ab)  # a stronger than b: lower bound > 0
            paired[(b, a)] = (-d, -hi_ab)
    return strength, pair, paired


def apply_paired(plan: list[dict], edges: list, paired: dict) -> None:
    """Disable edges whose teacher is not stronger than the student in the paired
    comparison on the same samples (lower bound of the macro-F1 difference <= 0)."""
    for d, e in zip(plan, edges, strict=True):
        diff, lo = paired.get((e.teacher, e.student), (float("nan"), float("nan")))
        d["paired_f1_diff"] = diff
        d["paired_f1_diff_lo"] = lo
        if e.enabled and not lo > 0:
            e.enabled = False
            d["enabled"] = False
            d["reason"] = (
                f"disabled: teacher not stronger in the paired OOF comparison (macro-F1 "
                f"difference {diff:+.3f}, 5th percentile {lo:+.3f})"
            )


def crossfit_kd(
    cf: CrossFit,
    edges: list,
    plan: list[dict],
    mods: list[str],
    n_classes: int,
    cfg: TrainConfig,
    progress: Progress,
    ckpt: Checkpointer,
) -> set[str]:
    """Distil every planned student in every fold; keep a student's distillation only if
    its OOF log-loss and OOF macro-F1 both improve (``distil.evidence_record``). Fills
    ``plan`` entries (``accepted``, OOF macro-F1 and log-loss before and after); returns
    the accepted students (their OOF logits in ``cf`` become the distilled ones). With
    ``refit_on = "train"`` the fold students also trace their held-out log-probabilities
    after every epoch (steering nothing), and ``cf.kd_epochs`` gets each student's epoch
    count with the lowest pooled OOF log-loss (for the final student: no carve)."""
    students = sorted({e.student for e in edges if e.enabled})
    after = {s: cf.logits[s].copy() for s in students}
    fold_kd: list[dict[str, dict]] = []
    trace = cfg.refit_on == "train"
    for k, (st, sets) in enumerate(zip(cf.fold_stage1, cf.fold_sets, strict=True)):
        st = {m: dict(v) for m, v in st.items()}
        fold_kd.append(st)
        # targets from teachers that never saw the rows they score (a fold's own teacher is
        # over-confident on its training rows): nested, the pair models that saw neither
        # that row's fold nor fold k; otherwise the teachers' OOF logits
        dev = sets["fit"].y.device
        rows = cf.fold_fit_rows[k]
        targets = {
            t: torch.as_tensor(np.nan_to_num(lg[rows], nan=0.0), device=dev)
            for t, lg in fold_targets(cf, k).items()
        }
        distil_students(edges, mods, sets, st, cfg, progress, ckpt, scope=f"fold{k}/",
                        targets=targets, held=sets["held"] if trace else None)  # fmt: skip
        held = np.flatnonzero(cf.folds == k)
        for s in students:
            if "kd_state" not in st.get(s, {}):
                continue
            net = copy.deepcopy(st[s]["net"])
            net.encoders[s].load_state_dict(st[s]["kd_state"]["encoder"])
            net.heads[s].load_state_dict(st[s]["kd_state"]["head"])
            p = infer(net, single(sets["held"], s))[s]
            has = cf.present[s][held]
            after[s][held[has]] = np.log(np.clip(p[has], 1e-12, 1.0))
    if trace:
        choose_student_epochs(cf, students, fold_kd, plan, n_classes)
    accepted = set()
    for s in students:
        ok = cf.present[s] & (cf.y >= 0)
        y = cf.y[ok]
        p0, p1 = np.exp(cf.logits[s][ok]), np.exp(after[s][ok])
        rec = evidence_record(p0, p1, y, n_classes, "oof")
        if rec["accepted"]:
            accepted.add(s)
            cf.logits[s] = after[s]  # later decisions see the distilled student
            for st, kd_st in zip(cf.fold_stage1, fold_kd, strict=True):
                if "kd_state" in kd_st.get(s, {}):
                    st[s]["kd_state"] = kd_st[s]["kd_state"]
        for d in plan:
            if d["student"] == s and d["enabled"]:
                d.update(rec)
    return accepted
