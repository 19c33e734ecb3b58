"""Stage 2: joint training of every encoder, head and the fusion head with a balancer."""

from __future__ import annotations

from dataclasses import dataclass

from balmm.config import TrainConfig
from balmm.model.fusion import MultiModalNet, build_model
from balmm.progress import Progress
from balmm.training.balancers import FUSED, Balancer, make_balancer
from balmm.training.checkpoint import Checkpointer
from balmm.training.loop import LoopSpec, TrainLoop, random_streams
from balmm.training.tensors import Split


@dataclass
class Stage2Result:
    model: MultiModalNet
    balancer: Balancer
    history: list[dict]
    selected_epoch: int
    final_weights: dict[str, float]


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
) -> Stage2Result:
    """Build the joint model (from the stage-1 encoders for ``balmm``), train it with the
    configured balancer and keep the epoch with the best validation fused macro-F1.
    ``scope`` (e.g. ``"fold2/"``) names a cross-fitting fold; ``decay`` gives a modality's
    encoder and head their cross-fitted weight decay."""
    if decay is not None and all(v == cfg.weight_decay for v in decay.values()):
        decay = None  # one decay for every parameter: the plain optimiser
    dev = sets["fit"].y.device
    pre = [scope] if scope else []
    random_streams(cfg.seed, *pre, "stage2", "init")
    model = build_model(n_features, n_classes, cfg.to_dict()).to(dev)
    balancer = make_balancer(cfg.balancer, mods, cfg, label_mi, kappa).to(dev)
    model.fusion_off = set(balancer.excluded)
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
        spec = LoopSpec(
            unit, f"stage 2 ({cfg.balancer})", cfg.epochs, cfg.patience, FUSED,
            require_epoch=not (warm and cfg.stage2_select_start),
            select_on_loss=cfg.stage2_select == "loss",
            modality_dropout=cfg.modality_dropout if cfg.balancer != "concat" else 0.0,
            lr_scale=cfg.stage2_lr_scale if warm else 1.0,
            frozen=frozenset(balancer.excluded) if warm else frozenset(), decay=decay,
        )  # fmt: skip
        streams = random_streams(cfg.seed, *pre, "stage2")
        loop = TrainLoop(
            model, lambda mdl, o, y, mk, rows: balancer.loss(mdl, o, y, mk), sets["fit"],
            sets["val"], cfg, spec, streams, balancer=balancer, progress=progress,
            on_epoch=ckpt.loop_hook(unit),
        )  # fmt: skip
        ckpt.resume_loop(unit, loop)
        res = loop.run()
        done = {"state": res.best_state, "history": res.history, "balancer": balancer.state()}
        ckpt.save_done(unit, done)
    else:
        balancer.load_state(done["balancer"])
    model.load_state_dict(done["state"])
    h2 = done["history"]
    selected = max((h for h in h2 if h.get("selected")), key=lambda h: h["epoch"], default=None)
    return Stage2Result(
        model=model,
        balancer=balancer,
        history=h2,
        selected_epoch=selected["epoch"] if selected else 0,
        final_weights=selected["weights"] if selected else balancer.weights(),
    )
