"""Stage 2: joint training of every encoder, head and the fusion head with a balancer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from balmm.config import TrainConfig
from balmm.model.fusion import MultiModalNet, build_model
from balmm.progress import Progress
from balmm.training.balancers import FUSED, Balancer, make_balancer
from balmm.training.checkpoint import Checkpointer
from balmm.training.loop import LoopSpec, TrainLoop
from balmm.training.minibatch import random_streams
from balmm.training.tensors import Split, infer

if TYPE_CHECKING:
    from balmm.training.crossfit import CrossFit


@dataclass
class Stage2Result:
    model: MultiModalNet
    balancer: Balancer
    history: list[dict]
    selected_epoch: int
    final_weights: dict[str, float]
    # held-out log-probabilities per epoch of every head (fused and per modality)
    trace: dict[str, torch.Tensor] | None = None
    # the cross-fitting folds' joint models' OOF log-probabilities per head (fused too)
    oof: dict[str, np.ndarray] | None = None


def train_joint(
    mods: list[str],
    n_features: dict[str, int],
    n_classes: int,
    sets: dict[str, Split],
    stage1: dict[str, dict],
    label_mi: dict[str, tuple[float, float]],
    cfg: TrainConfig,
    progress: Progress,
    ckpt: Checkpointer,
    kappa: dict[str, float] | None = None,
    scope: str = "",
    decay: dict[str, float] | None = None,
    epochs: int | None = None,
    held: Split | None = None,
    schedule: list[dict[str, float]] | None = None,
) -> Stage2Result:
    """Build the joint model (from the stage-1 encoders for ``balmm``), train it with the
    configured balancer and keep the epoch with the best validation fused macro-F1, or
    (``epochs``, chosen by cross-fitting) the state after exactly that many epochs.
    ``scope`` (e.g. ``"fold2/"``) names a cross-fitting fold; ``decay`` gives a modality's
    encoder and head their cross-fitted weight decay; ``held`` (a fold's held-out samples)
    adds every head's log-probabilities after every epoch (``Stage2Result.trace``);
    ``schedule`` (per epoch, each head's cross-fitted macro-F1) is the evidence the
    balancer's weights read instead of the validation carve's scores."""
    if decay is not None and all(v == cfg.weight_decay for v in decay.values()):
        decay = None  # one decay for every parameter: the plain optimiser
    dev = sets["fit"].y.device
    pre = [scope] if scope else []
    random_streams(cfg.seed, *pre, "stage2", "init")
    model = build_model(n_features, n_classes, cfg.to_dict()).to(dev)
    balancer = make_balancer(cfg.balancer, mods, cfg, label_mi, kappa).to(dev)
    model.fusion_off = set(balancer.excluded)
    if schedule:
        balancer.schedule = schedule
    warm = cfg.balancer == "balmm" and cfg.pretrain_init and bool(stage1)
    if warm:
        for m in mods:
            st = stage1[m].get("kd_state") or stage1[m]["state"]
            model.encoders[m].load_state_dict(st["encoder"])
            model.heads[m].load_state_dict(st["head"])
    unit = f"{scope}stage2"
    done = ckpt.done(unit)
    if done is None:
        # balmm: an assay left out of the fusion keeps its stage-1 encoder (not forced);
        # only its head goes on learning, as a probe. With its own random streams per
        # stage this makes the fused model the same whether or not such an assay is given.
        fixed = epochs is not None
        spec = LoopSpec(
            unit, f"stage 2 ({cfg.balancer})", epochs if fixed else cfg.epochs,
            0 if fixed else cfg.patience, FUSED,
            require_epoch=fixed or not (warm and cfg.stage2_select_start),
            select_on_loss=cfg.stage2_select == "loss", keep_last=fixed,
            modality_dropout=cfg.modality_dropout if cfg.balancer != "concat" else 0.0,
            lr_scale=cfg.stage2_lr_scale if warm else 1.0,
            frozen=frozenset(balancer.excluded) if warm else frozenset(), decay=decay,
        )  # fmt: skip
        streams = random_streams(cfg.seed, *pre, "stage2")
        loop = TrainLoop(
            model, lambda mdl, o, y, mk, rows: balancer.loss(mdl, o, y, mk), sets["fit"],
            sets["val"], cfg, spec, streams, balancer=balancer, progress=progress,
            on_epoch=ckpt.loop_hook(unit), held=held,
        )  # fmt: skip
        ckpt.resume_loop(unit, loop)
        res = loop.run()
        done = {"state": res.best_state, "history": res.history, "balancer": balancer.state()}
        if held is not None:
            logp = [r.pop("held_logp", {}) for r in res.history]
            heads = next((list(lp) for lp in logp if lp), [FUSED])
            empty = torch.zeros((0, n_classes))
            done["trace"] = {h: torch.stack([lp.get(h, empty) for lp in logp]) if logp
                             else torch.zeros((0, 0, n_classes)) for h in heads}  # fmt: skip
        ckpt.save_done(unit, done)
    else:
        balancer.load_state(done["balancer"])
    model.load_state_dict(done["state"])
    h2 = done["history"]
    selected = max((h for h in h2 if h.get("selected")), key=lambda h: h["epoch"], default=None)
    return Stage2Result(
        trace=done.get("trace"),
        model=model,
        balancer=balancer,
        history=h2,
        selected_epoch=selected["epoch"] if selected else 0,
        final_weights=selected["weights"] if selected else balancer.weights(),
    )


def crossfit_joint(
    cf: CrossFit,
    mods: list[str],
    n_features: dict[str, int],
    n_classes: int,
    label_mi: dict[str, tuple[float, float]],
    cfg: TrainConfig,
    progress: Progress,
    ckpt: Checkpointer,
    kappa: dict[str, float] | None,
    traces: list[dict[str, np.ndarray]] | None = None,
) -> tuple[dict[str, np.ndarray], list]:
    """Stage 2 in every fold (from that fold's stage-1 and kept distillation states).
    Returns the OOF logits of each head of the jointly trained models (for the stacker
    and, with ``refit_on = "train"``, the metrics' ``val``) and the fold models (for
    ``final_model = "average"``); ``traces`` (a list) receives each fold's held-out
    log-probability curves (head -> epochs x held x classes)."""
    n = len(cf.y)
    out = {m: np.full((n, n_classes), np.nan, dtype=np.float32) for m in [FUSED, *mods]}
    models = []
    for k, (st, sets) in enumerate(zip(cf.fold_stage1, cf.fold_sets, strict=True)):
        fold = {"fit": sets["fit"], "val": sets["val"]}
        s2 = train_joint(mods, n_features, n_classes, fold, st, label_mi, cfg, progress, ckpt,
                         kappa, scope=f"fold{k}/",
                         decay={m: cf.fold_decay[m][k] for m in cf.fold_decay},
                         held=sets["held"] if traces is not None else None)  # fmt: skip
        if traces is not None:
            traces.append({h: t.numpy() for h, t in s2.trace.items()})
        proba = infer(s2.model, sets["held"])
        held = np.flatnonzero(cf.folds == k)
        out[FUSED][held] = np.log(np.clip(proba[FUSED], 1e-12, 1.0))
        for m in mods:
            if m in proba:  # concat (early fusion) has no per-modality heads
                has = cf.present[m][held]
                out[m][held[has]] = np.log(np.clip(proba[m][has], 1e-12, 1.0))
        models.append(s2.model)
    return out, models


def joint_stage(
    mods: list[str], n_features: dict[str, int], n_classes: int, sets: dict[str, Split],
    stage1: dict[str, dict], label_mi: dict[str, tuple[float, float]], cfg: TrainConfig,
    progress: Progress, ckpt: Checkpointer, kappa: dict[str, float] | None,
    cf: CrossFit | None, carve_free: bool = False,
) -> tuple[Stage2Result, dict[str, Any]]:  # fmt: skip
    """Stage 2: the joint model trained on the fit samples (the refit), and, when the
    stacker, the fold average or ``stage2_select = "crossfit"`` needs them, the joint models
    of the cross-fitting folds (those first). With ``"crossfit"`` the folds record their
    heads' held-out log-probabilities after every epoch, and the refit trains for the epoch
    count with the lowest pooled OOF fused log-loss; with ``stage2_weights = "crossfit"``
    its balmm weights read each head's pooled OOF macro-F1 at each epoch (the folds' models
    are the same either way: the held-out rows steer nothing). Returns the refit and the
    ``protocol.decisions`` entries of its epoch count, fused head and final model.
    ``carve_free`` (``refit_on = "train"``; needs ``cf``): both from the folds, and the
    schedule is the history's per-head F1 for every balancer (only balmm's weights read it)."""
    stacked = cfg.fusion_head == "stack" and cfg.balancer != "concat"
    by_folds = cfg.stage2_select == "crossfit" or carve_free
    # the weight schedule from the folds: balmm's weights are the only ones that read F1
    balmm = cfg.balancer == "balmm"
    by_weights = (cfg.stage2_weights == "crossfit" and balmm) or carve_free
    decisions: dict[str, Any] = {}
    oof, fold_models, epochs, schedule = None, [], None, None
    # the folds first: every stage reseeds its own random streams, so the order changes
    # no model, and their curves can choose the refit's epoch count and weight schedule
    if cf is not None and (stacked or cfg.final_model == "average" or by_folds or by_weights):
        traces: list[dict[str, np.ndarray]] | None = [] if by_folds or by_weights else None
        oof, fold_models = crossfit_joint(cf, mods, n_features, n_classes, label_mi, cfg,
                                          progress, ckpt, kappa, traces)  # fmt: skip
        if traces is not None:
            from balmm.training.oof_curves import choose_epochs, pooled_f1_schedule

            held = [cf.folds == k for k in range(len(traces))]
            y_held = [cf.y[h] for h in held]
            if by_folds:
                epochs, _, curve = choose_epochs([t[FUSED] for t in traces], y_held)
                decisions["stage2_epochs"] = {"kind": "crossfit", "epochs": epochs,
                                              "oof_log_loss": float(curve[epochs - 1])}  # fmt: skip
            if by_weights:
                present = [{m: cf.present[m][h] for m in mods} for h in held]
                schedule = pooled_f1_schedule(traces, y_held, present, n_classes) or None
                if balmm:
                    decisions["stage2_weights"] = _schedule_decision(schedule, len(traces))
    else:
        why = {"kind": "validation", "why": "needs cross-fitting (folds >= 2)"}
        if by_folds:
            decisions["stage2_epochs"] = dict(why)
        if by_weights:
            decisions["stage2_weights"] = dict(why)
    s2 = train_joint(mods, n_features, n_classes, sets, stage1, label_mi, cfg, progress, ckpt,
                     kappa, decay=cf.decay if cf is not None else None, epochs=epochs,
                     schedule=schedule)  # fmt: skip
    s2.oof = oof
    if stacked:
        decisions["fusion_head"] = fit_stack_head(s2.model, s2.balancer, cf, oof, cfg)
    if cfg.final_model == "average":
        decisions["final_model"] = average_folds(s2.model, fold_models)
    return s2, decisions


def _schedule_decision(schedule: list[dict[str, float]] | None, n_folds: int) -> dict[str, Any]:
    """``protocol.decisions.stage2_weights`` of a cross-fitted weight schedule."""
    if not schedule:
        return {"kind": "validation", "why": "the folds traced no held-out epoch"}
    return {
        "kind": "crossfit",
        "evidence": f"each head's pooled out-of-fold macro-F1 after each epoch of the {n_folds} "
        "folds' joint models (past the last epoch every fold reached: that epoch's)",
        "epochs_traced": len(schedule),
    }


def average_folds(model, fold_models: list) -> dict[str, Any]:
    """final_model = "average": the refit model's fused prediction averaged with the
    cross-fitting folds' models. With the stacked head, each fold model's fused
    prediction is the same stacker applied to that model's own head logits."""
    if not fold_models:
        return {"kind": "refit", "why": "averaging needs cross-fitted fold models (folds >= 2)"}
    if model.stack is not None and bool(model.stack.active):
        for net in fold_models:
            net.stack.load_state_dict(model.stack.state_dict())
            net.stack.share_patterns(model.stack)
    model.set_members(fold_models)
    return {"kind": "average", "members": 1 + len(fold_models)}


def fit_stack_head(model, balancer, cf, oof, cfg: TrainConfig) -> dict[str, Any]:
    """Fit the OOF stacker on the cross-fitted stage-2 head logits (``oof``) of the
    modalities in the fusion and make it the model's fused head; without cross-fitting the
    joint head stays."""
    from balmm.training.stack_patterns import make_source
    from balmm.training.stacking import Stacker

    if cf is None or oof is None:
        return {"kind": "joint", "why": "stacking needs cross-fitted logits (folds >= 2)"}
    mods = [m for m in model.modalities if m not in balancer.excluded]
    lab = cf.y >= 0
    logits = {m: np.nan_to_num(oof[m][lab], nan=0.0) for m in mods}
    present = {m: cf.present[m][lab] & np.isfinite(oof[m][lab]).all(1) for m in mods}
    st = Stacker(cv=5, seed=cfg.seed).fit(logits, present, cf.y[lab])
    model.stack.load_stacker(st.to_dict(), model.modalities)
    if cfg.stack_missing == "pattern":
        model.stack.source = make_source(mods, logits, present, cf.y[lab], cfg.seed, cv=5)
    return {"kind": "stack", "C": st.C_, "trust": st.trust_, "missing": cfg.stack_missing}
