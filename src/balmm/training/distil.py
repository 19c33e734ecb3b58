"""Stage 1, second half: the distillation plan on the unimodal models, then KD into
each planned student (see docs/method.md)."""

from __future__ import annotations

import copy

import numpy as np
import torch

from balmm.config import TrainConfig
from balmm.profiling.plan import distillation_plan, pair_lookup
from balmm.progress import Progress
from balmm.training import kd as kd_mod
from balmm.training.checkpoint import Checkpointer
from balmm.training.loop import LoopSpec, TrainLoop
from balmm.training.metrics import bootstrap_f1, macro_f1
from balmm.training.minibatch import random_streams
from balmm.training.stage1 import enc_head_state
from balmm.training.tensors import (
    Split,
    held_with,
    infer,
    mean_log_loss,
    restrict,
    single,
    unimodal_logits,
)


def carve_evidence(
    stage1: dict[str, dict],
    mods: list[str],
    n_classes: int,
    sets: dict[str, Split],
    cfg: TrainConfig,
) -> tuple[dict[str, tuple[float, float]], dict[tuple[str, str], tuple[float, float]]]:
    """The plan's inputs measured on one validation carve (no cross-fitting): strength =
    validation macro-F1 with its bootstrap lower bound, I(Z_t; Z_s) on the fit and
    validation samples' embeddings."""
    fit, val = sets["fit"], sets["val"]
    yv = val.y.cpu().numpy()
    strength: dict[str, tuple[float, float]] = {}
    emb: dict[str, np.ndarray] = {}
    trained = [m for m in mods if m in stage1]
    for m in trained:
        pv = infer(stage1[m]["net"], single(val, m))
        mk = val.M[m].cpu().numpy() & (yv >= 0)
        f, lo = bootstrap_f1(yv[mk], pv[m][mk].argmax(1), n_classes, cfg.n_boot, cfg.seed)
        strength[m] = (f, lo)
        zf = infer(stage1[m]["net"], single(fit, m))[f"z:{m}"]
        emb[m] = np.concatenate([zf, pv[f"z:{m}"]])
    both_mask = {
        m: np.concatenate([fit.M[m].cpu().numpy(), val.M[m].cpu().numpy()]) for m in trained
    }
    pair: dict[tuple[str, str], tuple[float, float]] = {}
    for i, a in enumerate(trained):
        for b in trained[i + 1 :]:
            both = both_mask[a] & both_mask[b]
            est, lo, _ = kd_mod.pair_mi(emb[a][both], emb[b][both], cfg.mi_estimator,
                                        cfg.mi_pca_dims, cfg.n_boot, cfg.seed)  # fmt: skip
            pair[(a, b)] = (est, lo)
    return strength, pair


def make_plan(
    strength: dict[str, tuple[float, float]],
    pair: dict[tuple[str, str], tuple[float, float]],
    label_mi: dict[str, tuple[float, float]],
) -> tuple[list, list[dict]]:
    """The distillation plan (:func:`balmm.profiling.plan.distillation_plan`) and its
    records for metrics.json."""
    edges = distillation_plan(strength, {m: label_mi[m] for m in strength}, pair)
    plan = []
    for e in edges:
        d = e.to_dict()
        mi_ts = pair_lookup(pair, e.teacher, e.student)
        d["I_teacher_student_bits"] = mi_ts[0] if mi_ts else float("nan")
        d["I_student_label_bits"] = label_mi[e.student][0]
        d["teacher_val_f1"] = strength[e.teacher][0]
        d["student_val_f1_before"] = strength[e.student][0]
        plan.append(d)
    return edges, plan


def distil_students(
    edges: list,
    mods: list[str],
    sets: dict[str, Split],
    stage1: dict[str, dict],
    cfg: TrainConfig,
    progress: Progress,
    ckpt: Checkpointer,
    scope: str = "",
    targets: dict[str, torch.Tensor] | None = None,
    students: set[str] | None = None,
    held: Split | None = None,
    epochs: dict[str, int] | None = None,
) -> list[dict]:
    """KD into each student with enabled teachers (its ``stage1`` entry gains
    ``kd_state`` and ``kd_val_f1``); returns the history. The teachers' targets are
    ``targets[t]`` (logits over ``sets["fit"]``, e.g. out-of-fold ones) or else the
    teacher's own logits; ``students`` limits which students are distilled. ``held`` (a
    cross-fitting fold's held-out samples) adds ``kd_trace``: the student's log-probabilities
    on those that have it after every epoch (a curve that steers nothing); ``epochs[s]``
    (chosen on such curves) trains student s for exactly that many epochs, keeping the
    last state, instead of selecting on the validation carve."""
    fit, val = sets["fit"], sets["val"]
    hist: list[dict] = []
    for s in [m for m in mods if m in stage1]:
        teachers = [(e.teacher, e.weight) for e in edges if e.student == s and e.enabled]
        if not teachers or (students is not None and s not in students):
            continue
        unit = f"{scope}kd:{s}"
        net_kd = copy.deepcopy(stage1[s]["net"])
        done = ckpt.done(unit)
        if done is None:
            t_fit = [
                (targets[t] if targets else unimodal_logits(stage1[t]["net"], t, fit), fit.M[t], w)
                for t, w in teachers
            ]
            streams = random_streams(cfg.seed, *([scope] if scope else []), "kd", s)
            fit_s = restrict(fit, s)
            if fit.adj is None:  # the teachers' logits over the student's samples too (mlp)
                keep = fit.M[s].nonzero().squeeze(1)
                t_fit = [(lg[keep], mk[keep], w) for lg, mk, w in t_fit]

            def loss(model, out, y, masks, rows, _t=t_fit, _s=s):
                tl = [(lg[rows], mk[rows], w) for lg, mk, w in _t]
                v = kd_mod.kd_loss(out["logits"][_s], y, tl, cfg.kd_alpha, cfg.kd_temperature,
                                   masks[_s])  # fmt: skip
                return v, {_s: v}

            n_ep = (epochs or {}).get(s)
            spec = LoopSpec(unit, f"stage 1: distil into {s}", n_ep or cfg.kd_epochs, 0, s,
                            require_epoch=True, keep_last=n_ep is not None)  # fmt: skip
            held_s = held_with(held, s) if held is not None else None
            loop = TrainLoop(net_kd, loss, fit_s, restrict(val, s), cfg, spec, streams,
                             progress=progress, on_epoch=ckpt.loop_hook(unit),
                             held=held_s)  # fmt: skip
            ckpt.resume_loop(unit, loop)
            res = loop.run()
            for r in res.history:
                r["modality"] = s
            done = {"state": res.best_state, "history": res.history, "score": res.best_score}
            if held_s is not None:
                logp = [r.pop("held_logp", {}).get(s) for r in res.history]
                done["trace"] = torch.stack(
                    [lp if lp is not None else torch.zeros((0, net_kd.n_classes)) for lp in logp]
                )
            ckpt.save_done(unit, done)
        hist += done["history"]
        net_kd.load_state_dict(done["state"])
        stage1[s]["kd_state"] = enc_head_state(net_kd, s)
        stage1[s]["kd_val_f1"] = done["score"]
        if "trace" in done:
            stage1[s]["kd_trace"] = done["trace"]
    return hist


def evidence_record(
    before: np.ndarray, after: np.ndarray, y: np.ndarray, n_classes: int, evidence: str
) -> dict:
    """The student's held-out log-loss and macro-F1 before and after distillation, and
    whether it is kept (``accepted``): only if it lowers the log-loss *and* raises the
    macro-F1. Either alone is not enough: a lower log-loss with the same decisions only
    recalibrates the student, and a higher macro-F1 with a worse log-loss is a few
    samples crossing a threshold. ``before``/``after`` are class probabilities;
    ``evidence`` (``"oof"`` or ``"val"``) prefixes the keys."""
    rec = {
        f"{evidence}_log_loss_before": mean_log_loss(before, y),
        f"{evidence}_log_loss_after": mean_log_loss(after, y),
        f"{evidence}_macro_f1_before": macro_f1(y, before.argmax(1), n_classes),
        f"{evidence}_macro_f1_after": macro_f1(y, after.argmax(1), n_classes),
    }
    rec["accepted"] = bool(
        rec[f"{evidence}_log_loss_after"] < rec[f"{evidence}_log_loss_before"]
        and rec[f"{evidence}_macro_f1_after"] > rec[f"{evidence}_macro_f1_before"]
    )
    return rec


def distil(
    mods: list[str],
    n_classes: int,
    sets: dict[str, Split],
    stage1: dict[str, dict],
    label_mi: dict[str, tuple[float, float]],
    cfg: TrainConfig,
    progress: Progress,
    ckpt: Checkpointer,
) -> tuple[list[dict], list[dict]]:
    """One validation carve decides (no cross-fitting): the plan on the validation
    samples, then KD into each planned student. Returns (plan, history)."""
    strength, pair = carve_evidence(stage1, mods, n_classes, sets, cfg)
    edges, plan = make_plan(strength, pair, label_mi)
    hist = distil_students(edges, mods, sets, stage1, cfg, progress, ckpt)
    val = sets["val"]
    yv = val.y.cpu().numpy()
    for s in {d["student"] for d in plan if d["enabled"]}:
        mk = val.M[s].cpu().numpy() & (yv >= 0)
        before = infer(stage1[s]["net"], single(val, s))[s][mk]
        net_kd = copy.deepcopy(stage1[s]["net"])
        net_kd.encoders[s].load_state_dict(stage1[s]["kd_state"]["encoder"])
        net_kd.heads[s].load_state_dict(stage1[s]["kd_state"]["head"])
        after = infer(net_kd, single(val, s))[s][mk]
        rec = evidence_record(before, after, yv[mk], n_classes, "val")
        # one name per number: the validation macro-F1 before and after is the plan's
        # student_val_f1_before/after (as in the cross-fitted path), not val_macro_f1_* too
        f1_before, f1_after = rec.pop("val_macro_f1_before"), rec.pop("val_macro_f1_after")
        for d in plan:
            if d["student"] == s and d["enabled"]:
                d["student_val_f1_before"], d["student_val_f1_after"] = f1_before, f1_after
                d.update(rec)
        if not rec["accepted"]:  # distillation did not help the student: reverted
            stage1[s]["kd_reverted"] = stage1[s].pop("kd_state")
    return plan, hist
