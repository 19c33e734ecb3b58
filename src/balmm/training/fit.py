"""``balmm train``: stage 1 (unimodal training + cross-modal distillation) and
stage 2 (balanced joint training), under a validation protocol that never looks
at the test split until the final evaluation.

Data flow: split training samples into fit / validation (stratified) -> fit the
preprocessing on the fit samples -> stage 1 (:mod:`.stage1`) -> distillation plan and
KD (:mod:`.distil`) -> stage 2 with the chosen balancer (:mod:`.stage2`) -> evaluate
validation and test once (:mod:`.evaluate`) -> metrics, predictions, bundle, report
(:mod:`.report`). Checkpoints (:mod:`.checkpoint`) go into the output run's checkpoint
folder, so an interrupted run resumes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from balmm.config import TrainConfig, _coerce
from balmm.data.dataset import MultiOmicsData
from balmm.data.splits import stratified_split, stratified_subsample
from balmm.errors import InputError
from balmm.progress import NULL_PROGRESS, Progress
from balmm.threads import default_threads, scoped_threads
from balmm.training import distributed
from balmm.training import kd as kd_mod
from balmm.training.budget import stage_budget
from balmm.training.checkpoint import Checkpointer, fingerprint
from balmm.training.crossfit import (
    apply_paired,
    crossfit_alone,
    crossfit_kd,
    oof_evidence,
    use_crossfit,
)
from balmm.training.distil import distil, distil_students, make_plan
from balmm.training.evaluate import TrainResult, evaluate
from balmm.training.fold_sets import fold_assignment
from balmm.training.intermodal import complementarity
from balmm.training.minibatch import random_streams
from balmm.training.refit import oof_f1, oof_history, refit_on_decision
from balmm.training.stage1 import train_alone
from balmm.training.stage2 import joint_stage

# re-exported: predict.py, benchmarks and tests use these names from here
from balmm.training.tensors import (
    Split,
    feature_store,
    forward,
    infer,
    resolve_device,
    single,
    split_from,
)

__all__ = ["Split", "TrainResult", "forward", "infer", "random_streams", "resolve_device",
           "train"]  # fmt: skip


def _resolve_config(config: TrainConfig | None, overrides: dict[str, Any]) -> TrainConfig:
    cfg = config if config is not None else TrainConfig()
    changes = {k: _coerce(k, v, "train() arguments") for k, v in overrides.items() if v is not None}
    if "epochs" in changes:  # distillation epochs follow epochs unless given (as the CLI)
        changes.setdefault("kd_epochs", changes["epochs"])
    return cfg.replace(**changes)


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


def _is_run(out: Any) -> bool:
    """An already-open ``balmm.outputs.OutputRun`` (duck-typed: work, checkpoints, commit)."""
    return all(hasattr(out, a) for a in ("work", "checkpoints", "commit"))


def train(
    data: MultiOmicsData,
    config: TrainConfig | None = None,
    out: Any = None,
    device: str | None = None,
    progress: Progress = NULL_PROGRESS,
    release_raw: bool = False,
    **overrides: Any,
) -> TrainResult:
    """Train a balanced multimodal classifier on the ``train`` split of ``data``,
    evaluate it once on the ``test`` split, and (with ``out``) write every output.

    ``out`` is a folder (opened with :func:`balmm.outputs.open_output`) or an open
    ``balmm.outputs.OutputRun``: checkpoints go into ``out.checkpoints`` (non-empty when
    resuming: the run continues from them), outputs into ``out.work``, and the run is
    committed when they are complete. ``overrides`` are :class:`TrainConfig` fields
    (``balancer="none"``, ``epochs=10``, ...). ``release_raw``: once preprocessed, free
    the in-memory raw values of ``data`` except the few training rows markers.csv reads
    (:meth:`MultiOmicsData.release_values`; ``data`` is changed: for callers done with it).
    """
    if device is not None:
        overrides["device"] = device
    cfg = _resolve_config(config, overrides)
    _check_data(data)
    if cfg.encoder == "gcn":
        from balmm.model.graph import check_graph_size

        check_graph_size(len(data.samples))
    # under torchrun: join the process group; rank 0 alone writes (the others train their
    # shards of every minibatch and wait for it at the end)
    group = distributed.init(cfg.device)
    if group is not None and group.rank > 0:
        out, progress = None, NULL_PROGRESS
    if out is None:
        result = _train_threads(data, cfg, None, progress, release_raw=release_raw)
    elif _is_run(out):
        result = _train_run(data, cfg, out, progress, release_raw)
    else:
        from balmm.outputs import open_output

        with open_output(Path(out), "train") as run:
            result = _train_run(data, cfg, run, progress, release_raw)
    distributed.barrier()
    return result


def _train_run(data, cfg: TrainConfig, run, progress: Progress, release_raw: bool = False
               ) -> TrainResult:  # fmt: skip
    """Train with checkpoints in ``run.checkpoints``, write into ``run.work``, commit."""
    from balmm.training.report import write_outputs_into

    def write(result: TrainResult) -> None:
        # inside training's thread budget: the report's PCA and the markers' small fits are
        # as small as training's matrices (2 BLAS threads made one PCA 20x slower on a busy
        # 2-core machine); and while on-disk features (--backed) still exist, since the
        # embeddings are computed from them a block at a time as they are written
        progress.start("write", "write outputs", total=1)
        write_outputs_into(result, Path(run.work), data)
        progress.finish("write")

    result = _train_threads(data, cfg, run, progress, write, release_raw)
    committed = run.commit()
    result.out = Path(committed) if committed is not None else Path(run.work)
    return result


@contextmanager
def _thread_budget(data, cfg: TrainConfig, dev: torch.device) -> Iterator[None]:
    """torch and BLAS limited to ``cfg.threads`` (0 = auto) while inside."""
    n_cells = sum(a.n_obs * a.n_vars for a in data.mods.values())
    # threads = 0 (auto): one thread for omics-sized data, where the matrices are so small
    # that extra threads only add synchronisation (3x slower on a busy 2-core machine).
    # numpy/scikit-learn BLAS pools too: oversubscribed threads make PCA or a small
    # logistic regression 50x slower on a shared machine
    want = cfg.threads or (1 if n_cells < 100_000_000 and dev.type == "cpu" else default_threads())
    with scoped_threads(want):
        yield


def _train_threads(data, cfg: TrainConfig, run, progress: Progress, write=None,
                   release_raw: bool = False) -> TrainResult:  # fmt: skip
    """Train (checkpointing into ``run.checkpoints`` when a run is given) with the thread
    budget of ``cfg``; ``write(result)``, when given, writes the outputs."""
    t0 = time.perf_counter()
    dev = resolve_device(cfg.device)
    with (
        _thread_budget(data, cfg, dev),
        stage_budget(cfg.time_budget) as budget,
        feature_store(data) as store,
    ):
        result = _train(data, cfg, run, dev, progress, store, release_raw)
        group = distributed.current()
        result.metrics["protocol"]["world_size"] = 1 if group is None else group.world_size
        result.metrics["protocol"]["backend"] = None if group is None else group.backend
        if budget is not None:  # only then: default metrics.json stays as it was
            result.metrics["protocol"]["time_budget_s"] = cfg.time_budget
            result.metrics["protocol"]["stopped_by_time_budget"] = list(budget.stopped)
        result.timing["total_s"] = time.perf_counter() - t0
        if write is not None:
            write(result)
        if store is not None:  # the features on disk go with the store
            result.drop_source(written=write is not None)
    return result


def _train(data, cfg: TrainConfig, run, dev, progress, store=None, release_raw=False
           ) -> TrainResult:  # fmt: skip
    from balmm.data.preprocess import Preprocessor

    timing: dict[str, float] = {}
    t = time.perf_counter()
    classes = data.classes
    n_classes = len(classes)
    train_ids = data.ids("train")
    refit_on = refit_on_decision(cfg, len(train_ids))
    if carve_free := refit_on["kind"] == "train":  # every training sample, in input order
        fit_ids, val_ids = train_ids, train_ids[:0]
    else:
        fit_ids, val_ids = stratified_split(train_ids, data.y(train_ids), cfg.val_size, cfg.seed)
    test_ids = data.ids("test", labelled=False)
    progress.start("prep", "preprocess", total=1)
    pre = Preprocessor(
        max_features=cfg.max_features, log1p=cfg.log1p, scale=cfg.scale, clip=cfg.clip
    ).fit(data, fit_ids)
    all_ids = fit_ids.append(val_ids).append(test_ids)
    keep = None
    if release_raw:  # training reads the preprocessed features only; markers a few raw rows
        from balmm.markers import marker_samples

        keep = marker_samples(data, cfg.seed)
    proc = pre.transform(data, all_ids, store=store, release_keep=keep)
    progress.finish("prep")
    n_fit, n_val = len(fit_ids), len(val_ids)
    idx = {
        "fit": np.arange(n_fit),
        "val": np.arange(n_fit, n_fit + n_val),
        "test": np.arange(n_fit + n_val, len(all_ids)),
    }
    sets = {name: split_from(proc, i, dev) for name, i in idx.items()}
    ckpt = Checkpointer(
        None if run is None else Path(run.checkpoints),
        fingerprint(cfg.to_dict(), proc, idx) if run is not None else "",
        cfg.checkpoint_every,
    )
    graph_info: dict[str, Any] = {}  # gcn: the graph's description (metrics.json)
    graph_state: dict[str, torch.Tensor] | None = None  # gcn: what a bundle needs
    if cfg.encoder == "gcn":
        from balmm.model.graph import attach_graphs

        graph_info, graph_state = attach_graphs(proc, idx["fit"], idx["val"], idx["test"], sets,
                                                cfg, dev)  # fmt: skip
    mods = list(proc.X)
    n_features = {m: int(proc.X[m].shape[1]) for m in mods}
    timing["preprocess_s"] = time.perf_counter() - t

    # ---------------------------------------------------------------- stage 1
    t = time.perf_counter()
    stage1: dict[str, dict] = {}
    history: list[dict] = []
    plan: list[dict] = []
    label_mi: dict[str, tuple[float, float]] = {}  # modality -> (estimate, lower CI)
    label_mi_ci: dict[str, tuple[float, float]] = {}  # modality -> (lower, upper CI)
    tv = slice(0, n_fit + n_val)  # the fit and validation samples (contiguous in proc)
    y_train = proc.y[tv]
    for m in mods:
        # only the probe's subsample is read (features may be on disk: --backed)
        has = np.flatnonzero(proc.mask[m][tv])
        has = has[stratified_subsample(len(has), y_train[has], kd_mod.PROBE_MAX, cfg.seed)]
        xm = np.asarray(proc.X[m][has])
        est, lo, hi = kd_mod.label_mi_probe(xm, y_train[has], n_classes, cfg.n_boot, cfg.seed)
        label_mi[m] = (est, lo)
        label_mi_ci[m] = (lo, hi)
    decisions: dict[str, Any] = {"cross_fitted": False}
    kappa: dict[str, float] | None = None
    cf = None
    if (cfg.balancer == "balmm" or cfg.measure_imbalance) and cfg.pretrain_epochs > 0:
        n_train = n_fit + n_val
        if use_crossfit(cfg, n_train):
            # the unimodal models of every fold first: their OOF curves choose the epoch
            # count of each final unimodal model
            train_split = split_from(proc, np.arange(n_train), dev)
            folds = fold_assignment(proc.y[:n_train], cfg.folds, cfg.seed)
            cf = crossfit_alone(mods, n_features, n_classes, train_split, folds, cfg, progress,
                                ckpt)  # fmt: skip
        stage1, h1 = train_alone(mods, n_features, n_classes, sets, cfg, progress, ckpt,
                                 epochs=cf.epochs if cf is not None else None,
                                 decay=cf.decay if cf is not None else None)  # fmt: skip
        history += h1
        if carve_free:  # no carve: the unimodal models' OOF macro-F1
            for m, st in stage1.items():
                st["val_f1"] = oof_f1(cf.logits[m], cf.present[m], cf.y, n_classes)
        plan, h_kd, decisions, kappa = _stage1_decisions(
            mods, n_classes, sets, stage1, label_mi, cfg, dev, progress, ckpt, cf
        )
        history += h_kd
        if carve_free:
            oof_history(history, cf.oof_f1_curve)
    timing["stage1_s"] = time.perf_counter() - t

    # ---------------------------------------------------------------- stage 2
    t = time.perf_counter()
    s2, joint_decisions = joint_stage(mods, n_features, n_classes, sets, stage1, label_mi, cfg,
                                      progress, ckpt, kappa, cf,
                                      carve_free=carve_free)  # fmt: skip
    history += s2.history
    decisions.update(joint_decisions)
    if cfg.refit_on != "fit":  # only then: default metrics.json stays as it was
        decisions["refit_on"] = refit_on
    timing["stage2_s"] = time.perf_counter() - t

    # ---------------------------------------------------------------- evaluate once
    t = time.perf_counter()
    result = evaluate(
        model=s2.model, sets=sets, classes=classes, cfg=cfg, stage1=stage1, plan=plan,
        label_mi=label_mi, label_mi_ci=label_mi_ci, graph_info=graph_info,
        balancer=s2.balancer, final_weights=s2.final_weights,
        selected_epoch=s2.selected_epoch, data=data, preprocessor=pre, history=history,
        device=dev, oof_val=s2.oof if carve_free else None,
    )  # fmt: skip
    timing["evaluate_s"] = time.perf_counter() - t
    if s2.model.stack is not None and s2.model.stack.source is not None:
        from balmm.training.stack_patterns import pattern_report

        decisions["fusion_head"]["patterns"] = pattern_report(s2.model.stack)
    result.metrics["protocol"]["decisions"] = decisions
    result.timing = timing
    result.resumed_units = list(ckpt.resumed_units)
    result.label_mapping = dict(data.label_mapping)
    result.stage1_states = {
        m: {k: st[k] for k in ("state", "kd_state") if k in st} for m, st in stage1.items()
    }
    result.graph_state = graph_state
    if cf is not None:
        result.crossfit_folds = pd.Series(cf.folds, index=proc.ids[: len(cf.folds)])
        result.crossfit_states = [{m: st[m]["state"] for m in st} for st in cf.fold_stage1]
    return result


def _stage1_decisions(mods, n_classes, sets, stage1, label_mi, cfg, dev, progress, ckpt,
                      cf):  # fmt: skip
    """The distillation plan, distillation and the intermodal term of the stage-2 weights,
    decided on the cross-fitted OOF outputs ``cf`` over all training samples (or, with
    ``cf`` None, above the cross-fitting threshold, on the validation carve). Returns
    (plan, history, decisions, kappa)."""
    want_kappa = cfg.balancer == "balmm" and cfg.mi_weights and cfg.weight_gamma > 0
    # complementarity only among the modalities with label information: an assay left out
    # of the fusion must not move the others' weights (a pure-noise assay costs nothing)
    informative = [m for m in stage1 if _informative(label_mi[m], cfg)]
    want_kd = cfg.kd and len(mods) > 1
    plan: list[dict] = []
    history: list[dict] = []
    if cf is None:
        decisions = {"cross_fitted": False, "evidence": "validation carve"}
        if want_kd:
            plan, history = distil(mods, n_classes, sets, stage1, label_mi, cfg, progress, ckpt)
        kappa = None
        if want_kappa and stage1:
            val = sets["val"]
            z = {m: np.log(np.clip(infer(stage1[m]["net"], single(val, m))[m], 1e-12, 1))
                 for m in informative}  # fmt: skip
            present = {m: val.M[m].cpu().numpy() for m in informative}
            comp = complementarity(z, present, val.y.cpu().numpy(), n_classes, cfg.seed)
            kappa = {m: v["kappa"] for m, v in comp.items()}
            decisions["complementarity"] = comp
        return plan, history, decisions, kappa
    decisions = {
        "cross_fitted": True,
        "evidence": f"out-of-fold predictions over {len(cf.y)} training samples, "
        f"{int(cf.folds.max()) + 1} stratified folds",
        "stage1_epochs": dict(cf.epochs),
        "stage1_epochs_rule": "lowest pooled out-of-fold log-loss of the unimodal head",
        "stage1_folds": cf.fold_record(),
        **({"weight_decay": dict(cf.decay)} if len(cfg.decay_grid()) > 1 else {}),
    }
    if want_kd:
        strength, pair, paired = oof_evidence(cf, n_classes, cfg)
        edges, plan = make_plan(strength, pair, label_mi)
        apply_paired(plan, edges, paired)
        accepted = set()
        if any(e.enabled for e in edges):
            accepted = crossfit_kd(cf, edges, plan, mods, n_classes, cfg, progress, ckpt)
        n_fit = len(sets["fit"])
        targets = {  # the teachers' OOF logits over the fit samples (0 where absent)
            t: torch.as_tensor(np.nan_to_num(lg[:n_fit], nan=0.0), device=dev)
            for t, lg in cf.logits.items()
        }
        history = distil_students(edges, mods, sets, stage1, cfg, progress, ckpt,
                                  targets=targets, students=accepted,
                                  epochs=cf.kd_epochs or None)  # fmt: skip
        for d in plan:
            if d["enabled"] and d.get("accepted"):
                s = d["student"]
                if cf.kd_epochs:  # no carve: the student's OOF macro-F1 after distillation
                    stage1[s]["kd_val_f1"] = d["oof_macro_f1_after"]
                d["student_val_f1_after"] = stage1[s]["kd_val_f1"]
    kappa = None
    if want_kappa:
        oof = {m: np.nan_to_num(cf.logits[m], nan=0.0) for m in informative if m in cf.z}
        comp = complementarity(oof, cf.present, cf.y, n_classes, cfg.seed)
        kappa = {m: v["kappa"] for m, v in comp.items()}
        decisions["complementarity"] = comp
    return plan, history, decisions, kappa


def _informative(mi: tuple[float, float], cfg: TrainConfig) -> bool:
    """The stage-2 gate: label MI at least ``min_label_mi_bits`` with a lower CI above 0."""
    est, lo = mi
    return bool(np.isfinite(est) and est >= cfg.min_label_mi_bits and not lo <= 0)
