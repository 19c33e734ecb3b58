"""Stage 1, first half: each modality's encoder + head trained alone."""

from __future__ import annotations

import copy
import logging

from balmm.config import TrainConfig
from balmm.model.fusion import ENCODER_KEYS, MultiModalNet
from balmm.progress import Progress
from balmm.training.balancers import masked_ce
from balmm.training.checkpoint import Checkpointer
from balmm.training.loop import LoopSpec, TrainLoop
from balmm.training.minibatch import random_streams
from balmm.training.tensors import Split, restrict

logger = logging.getLogger("balmm")


def unimodal_net(m: str, n_in: int, n_classes: int, cfg: TrainConfig) -> MultiModalNet:
    """A one-modality network (encoder + head) with the config's encoder settings."""
    kwargs = {k: getattr(cfg, k) for k in ENCODER_KEYS}
    return MultiModalNet({m: n_in}, n_classes, encoder=cfg.encoder, **kwargs)


def unimodal_loss(m: str, smoothing: float):
    def fn(model, out, y, masks, rows):
        ce = masked_ce(out["logits"][m], y, masks[m], smoothing)
        return ce, {m: ce}

    return fn


def enc_head_state(net: MultiModalNet, m: str) -> dict:
    """Copies of modality ``m``'s encoder and head parameters."""
    return {
        "encoder": copy.deepcopy(net.encoders[m].state_dict()),
        "head": copy.deepcopy(net.heads[m].state_dict()),
    }


def with_decay(cfg: TrainConfig, wd: float) -> tuple[TrainConfig, str]:
    """The config with weight decay ``wd``, and the checkpoint-unit tag of that decay ("" for
    the config's own, so a run without a grid keeps its unit names)."""
    if wd == cfg.weight_decay:
        return cfg, ""
    return cfg.replace(weight_decay=wd), f"@wd{wd:g}"


def train_one(
    m: str,
    n_in: int,
    n_classes: int,
    fit: Split,
    val: Split | None,
    cfg: TrainConfig,
    progress: Progress,
    ckpt: Checkpointer,
    unit: str,
    streams_scope: tuple[str, ...],
    epochs: int | None = None,
) -> dict:
    """Train modality ``m`` alone on ``fit``: selected on ``val`` (``epochs`` None), or for
    exactly ``epochs`` epochs keeping the last state (an epoch count chosen by cross-fitting;
    ``val`` then only scored for the history).
    Returns ``{"state", "history", "score"}`` (checkpointed as ``unit``)."""
    done = ckpt.done(unit)
    if done is not None:
        return done
    dev = fit.y.device
    streams = random_streams(cfg.seed, *streams_scope)
    net = unimodal_net(m, n_in, n_classes, cfg).to(dev)
    fixed = epochs is not None
    spec = LoopSpec(
        unit, f"stage 1: {m} alone", epochs if fixed else cfg.pretrain_epochs,
        0 if fixed else cfg.pretrain_patience, m, require_epoch=True,
        select_on_loss=cfg.stage1_select == "loss", keep_last=fixed,
    )  # fmt: skip
    loop = TrainLoop(net, unimodal_loss(m, cfg.label_smoothing), fit, val, cfg, spec, streams,
                     progress=progress, on_epoch=ckpt.loop_hook(unit))  # fmt: skip
    ckpt.resume_loop(unit, loop)
    res = loop.run()
    done = {"state": res.best_state, "history": res.history, "score": res.best_score}
    for r in res.history:
        r["modality"] = m
    ckpt.save_done(unit, done)
    return done


def train_alone(
    mods: list[str],
    n_features: dict[str, int],
    n_classes: int,
    sets: dict[str, Split],
    cfg: TrainConfig,
    progress: Progress,
    ckpt: Checkpointer,
    scope: str = "",
    epochs: dict[str, int] | None = None,
    decay: dict[str, float] | None = None,
) -> tuple[dict[str, dict], list[dict]]:
    """Train each modality alone (encoder + its head), selected on its validation F1, or
    for ``epochs[m]`` epochs (chosen by cross-fitting) keeping the last state; with weight
    decay ``decay[m]`` (chosen by cross-fitting too) where given.
    Returns ``{modality: {"net", "state", "val_f1"}}`` and the history records.
    ``scope`` (e.g. ``"fold2/"``) names a cross-fitting fold: its own random streams and
    checkpoint units."""
    out: dict[str, dict] = {}
    hist: list[dict] = []
    dev = sets["fit"].y.device
    for m in mods:
        fit, val = restrict(sets["fit"], m), restrict(sets["val"], m)
        n_ep = None if epochs is None else epochs.get(m)
        # a validation carve is needed only to select (refit_on = "train" has none)
        if len(fit) < 4 or (len(val) < 2 and n_ep is None):
            logger.warning("modality %s: too few samples to train alone; no stage 1", m)
            continue
        words = (*([scope] if scope else []), "stage1", m)
        cfg_m = cfg if decay is None else with_decay(cfg, decay.get(m, cfg.weight_decay))[0]
        done = train_one(m, n_features[m], n_classes, fit, val, cfg_m, progress, ckpt,
                         f"{scope}stage1:{m}", words, epochs=n_ep)  # fmt: skip
        net = unimodal_net(m, n_features[m], n_classes, cfg).to(dev)
        net.load_state_dict(done["state"])
        hist += done["history"]
        out[m] = {"net": net, "state": enc_head_state(net, m), "val_f1": done["score"]}
    return out, hist
