"""Stage 1, first half: each modality's encoder + head trained alone."""

from __future__ import annotations

import copy
import logging

from balmm.config import TrainConfig
from balmm.model.fusion import ENCODER_KEYS, MultiModalNet
from balmm.progress import Progress
from balmm.training.balancers import masked_ce
from balmm.training.checkpoint import Checkpointer
from balmm.training.loop import LoopSpec, TrainLoop, random_streams
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


def train_alone(
    mods: list[str],
    n_features: dict[str, int],
    n_classes: int,
    sets: dict[str, Split],
    cfg: TrainConfig,
    progress: Progress,
    ckpt: Checkpointer,
    scope: str = "",
) -> tuple[dict[str, dict], list[dict]]:
    """Train each modality alone (encoder + its head), selected on its validation F1.
    Returns ``{modality: {"net", "state", "val_f1"}}`` and the history records.
    ``scope`` (e.g. ``"fold2/"``) names a cross-fitting fold: its own random streams and
    checkpoint units."""
    out: dict[str, dict] = {}
    hist: list[dict] = []
    dev = sets["fit"].y.device
    for m in mods:
        fit, val = restrict(sets["fit"], m), restrict(sets["val"], m)
        if len(fit) < 4 or len(val) < 2:
            logger.warning("modality %s: too few samples to train alone; no stage 1", m)
            continue
        unit = f"{scope}stage1:{m}"
        done = ckpt.done(unit)
        if done is None:
            streams = random_streams(cfg.seed, *([scope] if scope else []), "stage1", m)
            net = unimodal_net(m, n_features[m], n_classes, cfg).to(dev)
            spec = LoopSpec(
                unit, f"stage 1: {m} alone", cfg.pretrain_epochs, cfg.pretrain_patience, m,
                require_epoch=True, select_on_loss=cfg.stage1_select == "loss",
            )  # fmt: skip
            loop = TrainLoop(net, unimodal_loss(m, cfg.label_smoothing), fit, val, cfg, spec,
                             streams, progress=progress, on_epoch=ckpt.loop_hook(unit))  # fmt: skip
            ckpt.resume_loop(unit, loop)
            res = loop.run()
            for r in res.history:
                r["modality"] = m
            done = {"state": res.best_state, "history": res.history, "score": res.best_score}
            ckpt.save_done(unit, done)
        net = unimodal_net(m, n_features[m], n_classes, cfg).to(dev)
        net.load_state_dict(done["state"])
        hist += done["history"]
        out[m] = {"net": net, "state": enc_head_state(net, m), "val_f1": done["score"]}
    return out, hist
