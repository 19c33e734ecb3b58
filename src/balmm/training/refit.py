"""``refit_on``: what the final models train on. ``"train"`` (every training sample, no
validation carve) needs cross-fitting, which then gives every decision the carve would
otherwise make: epoch counts of the unimodal models, the distilled students and the joint
model, the stage-2 weight schedule, and the metrics' ``val`` (out of fold)."""

from __future__ import annotations

from typing import Any

import numpy as np

from balmm.config import TrainConfig
from balmm.training.crossfit import CROSSFIT_MAX_SAMPLES, use_crossfit
from balmm.training.metrics import macro_f1


def refit_on_decision(cfg: TrainConfig, n_train: int) -> dict[str, Any]:
    """What the final models train on (``protocol.decisions.refit_on``): every training
    sample only where cross-fitting gives every decision a carve would otherwise make."""
    if cfg.refit_on == "fit":
        return {"kind": "fit"}
    if not use_crossfit(cfg, n_train):
        return {
            "kind": "fit",
            "why": "no cross-fitting (folds < 2, or above "
            f"{CROSSFIT_MAX_SAMPLES} training samples): the validation carve decides",
        }
    if not ((cfg.balancer == "balmm" or cfg.measure_imbalance) and cfg.pretrain_epochs > 0):
        return {
            "kind": "fit",
            "why": "no stage 1 (pretrain_epochs = 0, or a baseline with "
            "measure_imbalance off): nothing to cross-fit",
        }
    return {
        "kind": "train",
        "evidence": "every epoch count and the stage-2 weights from "
        "the cross-fitting folds' held-out curves; metrics' val out of fold",
    }


def oof_f1(logits: np.ndarray, present: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    """Macro-F1 of OOF ``logits`` over the labelled samples that have the modality."""
    ok = present & (y >= 0) & np.isfinite(logits).all(1)
    return macro_f1(y[ok], logits[ok].argmax(1), n_classes) if ok.any() else float("nan")


def oof_history(history: list[dict], curves: dict[str, list[float]]) -> None:
    """No carve: each final unimodal model's and distilled student's history line gets as
    ``val_f1`` the pooled OOF macro-F1 of the folds' models after the same epoch (the last
    one past the end of the folds' curves)."""
    for h in history:
        curve = curves.get(h["stage"])
        if curve:
            m = h["stage"].partition(":")[2]
            h["val_f1"] = {m: curve[min(h["epoch"], len(curve)) - 1]}
