"""Every hyper-parameter of ``balmm train`` in one dataclass, loadable from TOML.

A config file is flat TOML (``key = value``); a ``[train]`` table is accepted
too, so the same file can hold other tools' sections. Unknown keys and values of
the wrong type raise :class:`balmm.errors.ConfigError` naming the key, which the
CLI turns into exit code 2.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

from balmm.errors import ConfigError

BALANCERS = ("balmm", "none", "concat", "uncertainty", "ogm-ge")
ENCODERS = ("linear", "mlp", "gcn")
NORMS = ("layer", "batch", "none")
ACTIVATIONS = ("gelu", "relu", "leaky_relu", "elu")
DEVICES = ("auto", "cpu", "cuda")
MI_ESTIMATORS = ("gaussian", "ksg")

_CHOICES: dict[str, tuple[str, ...]] = {
    "balancer": BALANCERS,
    "encoder": ENCODERS,
    "norm": NORMS,
    "activation": ACTIVATIONS,
    "device": DEVICES,
    "mi_estimator": MI_ESTIMATORS,
    "stage1_select": ("f1", "loss"),
    "stage2_select": ("f1", "loss", "crossfit"),
    "stage2_weights": ("validation", "crossfit"),
    "fusion_head": ("joint", "stack"),
    "stack_missing": ("pattern", "zero-fill"),
    "final_model": ("refit", "average"),
    "refit_on": ("fit", "train"),
    "report_embedding": ("auto", "umap", "pca"),
}


@dataclass
class TrainConfig:
    """Hyper-parameters of the two training stages (defaults chosen on training data only;
    see docs/method.md for how)."""

    # protocol
    seed: int = 0
    val_size: float = 0.2
    # cross-fitting folds for the data-driven decisions (10: chosen by CV with label_smoothing,
    # docs/method.md); 0 or 1 = one carve
    folds: int = 10
    # nested cross-fitting: fold k's stage-1 epoch count and decay are chosen on models that
    # saw neither fold k nor the fold they score (K(K-1)/2 pair models per modality; above 5
    # folds, of 5 groups of folds: 10), so fold k's OOF outputs never depend on its own
    # labels; false: on the other folds' curves
    crossfit_nested: bool = True
    balancer: str = "balmm"
    device: str = "auto"
    threads: int = 0  # 0 = leave torch's default
    # preprocessing (balmm.data.preprocess.Preprocessor)
    max_features: int = 2000
    log1p: str = "auto"
    scale: bool = True
    clip: float = 10.0
    # encoders
    encoder: str = "linear"  # one linear map per modality; "mlp" (two blocks) and "gcn" too
    hidden: int = 128
    embed_dim: int = 64
    norm: str = "layer"
    activation: str = "gelu"
    dropout: float = 0.5
    input_dropout: float = 0.2
    late_heads: bool = True  # fused logits = linear(concat z) + sum of unimodal heads' logits
    # "stack": the fused prediction is the OOF stacker over the heads' logits (needs
    # cross-fitting); "joint": the end-to-end fusion head trained in stage 2
    fusion_head: str = "joint"
    # the stacker on samples missing assays: "pattern" = a stacker per missingness pattern,
    # fitted on the training rows that have its assays; "zero-fill" = one stacker, absent
    # assays' features 0 plus presence flags (docs/method.md, "Fused head")
    stack_missing: str = "pattern"
    # "average": the fused prediction averages the refitted joint model with the joint
    # models of the K cross-fitting folds (chosen by CV inside ROSMAP's training split:
    # docs/method.md); "refit": the refitted model alone
    final_model: str = "average"
    # what the final models (preprocessing, unimodal models, students, joint model) train
    # on: "fit" = the training split minus the validation carve (val_size); "train" = every
    # training sample, every epoch count and the stage-2 weights from cross-fitting, metrics'
    # "val" out of fold (no carve; falls back to "fit", with the reason, without
    # cross-fitting)
    refit_on: str = "fit"
    # graph (gcn encoder)
    transductive: bool = False
    knn_k: int = 10
    snf_iterations: int = 10
    snf_mu: float = 0.5
    # optimisation (both stages)
    lr: float = 1e-3
    weight_decay: float = 1e-3
    # AdamW weight decays tried for each modality's encoder and head, comma-separated:
    # cross-fitting chooses one per modality with its epoch count, on pooled out-of-fold
    # log-loss (stage 2 keeps it for that modality); "" = weight_decay only
    weight_decay_grid: str = ""
    batch_size: int = 64
    label_smoothing: float = 0.2  # chosen by CV with folds = 10 (docs/method.md)
    # stage 1: unimodal training + distillation
    pretrain_epochs: int = 60
    pretrain_patience: int = 15
    stage1_select: str = "f1"  # unimodal models: best validation macro-F1 ("f1") or loss
    kd: bool = True
    kd_epochs: int = 20
    kd_alpha: float = 0.5
    kd_temperature: float = 2.0
    mi_estimator: str = "gaussian"
    mi_pca_dims: int = 0  # I(Z_a; Z_b) on this many PCs each; 0 = as many as n supports
    n_boot: int = 100
    # stage 2: joint balanced training
    epochs: int = 80
    patience: int = 20
    # joint model: best validation fused macro-F1 ("f1") or loss; "crossfit": the epoch count
    # with the lowest pooled OOF fused log-loss of the cross-fitting folds' stage 2
    stage2_select: str = "f1"
    # balmm's stage-2 weights of the refit read each head's per-epoch macro-F1 from the
    # validation carve ("validation"), or from the cross-fitting folds' joint models: the
    # pooled out-of-fold macro-F1 of each head after each epoch ("crossfit")
    stage2_weights: str = "validation"
    modality_dropout: float = 0.15
    fused_weight: float = 1.0
    weight_beta: float = 2.0  # lag term: a head behind the best one gets up to 1 + beta
    weight_gamma: float = 0.5  # intermodal term: scales the lag lift by 1 + gamma * kappa
    mi_weights: bool = True  # false: constant weights (1 per informative head; ablation)
    weight_ema: float = 0.7
    min_label_mi_bits: float = 0.02
    exclude_uninformative: bool = True
    grad_modulation: bool = False
    ogm_alpha: float = 0.5
    ogm_noise: bool = True
    pretrain_init: bool = True  # balmm: stage 2 starts from the stage-1 encoders
    stage2_lr_scale: float = 1.0  # learning-rate factor when stage 2 starts from stage 1
    stage2_select_start: bool = False  # let the stage-1 starting point compete in selection
    measure_imbalance: bool = True  # baselines too run stage 1 to measure under-optimisation
    eval_every: int = 1
    # wall-clock seconds per stage (stage 1 with its folds, distillation, stage 2); a stage
    # that spends it stops at an epoch boundary and says so (history "stopped", metrics.json
    # protocol); 0 = no limit. Runs stopped by time are not reproducible.
    time_budget: float = 0.0
    # loop: bf16 autocast of forward and loss on CUDA (ignored on CPU); torch.compile of
    # the forward pass (docs/benchmarks.md measures both)
    bf16: bool = False
    compile: bool = False
    # checkpoints (with an output run): every N epochs inside a stage, 0 = only at the end
    # of each stage, modality and fold
    checkpoint_every: int = 10
    # report.html's plot of the fused embedding: "auto" = UMAP from 2000 samples, PCA below
    # (UMAP's numba compilation costs 10-50 s per process, more than training a bulk cohort)
    report_embedding: str = "auto"

    def decay_grid(self) -> list[float]:
        """The weight decays cross-fitting chooses among (``weight_decay`` alone when the
        grid is empty)."""
        if not self.weight_decay_grid.strip():
            return [self.weight_decay]
        return [float(v) for v in self.weight_decay_grid.split(",") if v.strip()]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return validate(dataclasses.replace(self, **changes))


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_TYPES = get_type_hints(TrainConfig)


def _coerce(key: str, value: Any, source: str) -> Any:
    """Check one value against the field's type; ints are accepted for floats."""
    if key not in _FIELDS:
        known = ", ".join(sorted(_FIELDS))
        raise ConfigError(f"unknown config key {key!r} in {source} (known keys: {known})")
    want = _TYPES[key]
    ok: bool
    if want is bool:
        ok = isinstance(value, bool)
    elif want is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif want is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif want is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - every field has one of the above types
        ok = True
    if not ok:
        raise ConfigError(
            f"config key {key!r} in {source} must be {want.__name__}, "
            f"got {type(value).__name__} {value!r}"
        )
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ConfigError(
            f"config key {key!r} in {source} must be one of {', '.join(_CHOICES[key])}; "
            f"got {value!r}"
        )
    return value


def validate(cfg: TrainConfig) -> TrainConfig:
    """Type- and range-check every field (also after programmatic changes)."""
    for key in _FIELDS:
        _coerce(key, getattr(cfg, key), "config")
    positive = ["hidden", "embed_dim", "batch_size", "knn_k", "eval_every"]
    for key in positive:
        if getattr(cfg, key) < 1:
            raise ConfigError(f"config key {key!r} must be >= 1, got {getattr(cfg, key)}")
    non_negative = [
        "pretrain_epochs", "kd_epochs", "epochs", "patience", "pretrain_patience", "n_boot",
        "threads", "snf_iterations", "lr", "weight_decay", "weight_beta", "checkpoint_every",
        "folds", "time_budget", "mi_pca_dims",
    ]  # fmt: skip
    for key in non_negative:
        if getattr(cfg, key) < 0:
            raise ConfigError(f"config key {key!r} must be >= 0, got {getattr(cfg, key)}")
    unit = [
        "val_size", "dropout", "input_dropout", "kd_alpha", "weight_ema", "modality_dropout",
        "label_smoothing", "weight_gamma",
    ]  # fmt: skip
    for key in unit:
        v = getattr(cfg, key)
        if not 0.0 <= v < 1.0 and not (key == "kd_alpha" and v == 1.0):
            raise ConfigError(f"config key {key!r} must be in [0, 1), got {v}")
    if cfg.val_size <= 0:
        raise ConfigError("config key 'val_size' must be > 0 (model selection needs validation)")
    if cfg.stage2_lr_scale <= 0:
        raise ConfigError("config key 'stage2_lr_scale' must be > 0")
    try:
        grid = cfg.decay_grid()
    except ValueError:
        grid = [-1.0]
    if not grid or min(grid) < 0 or len(set(grid)) != len(grid):
        raise ConfigError("config key 'weight_decay_grid' must be distinct numbers >= 0 "
                          f"separated by commas, got {cfg.weight_decay_grid!r}")  # fmt: skip
    if cfg.kd_temperature <= 0:
        raise ConfigError("config key 'kd_temperature' must be > 0")
    if cfg.balancer == "concat" and cfg.encoder == "gcn":
        raise ConfigError("config key 'balancer': concat (early fusion) needs encoder = mlp")
    return cfg


def load_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> TrainConfig:
    """Defaults, updated by the TOML file at ``path``, updated by ``overrides`` (CLI flags).

    ``None`` values in ``overrides`` mean "not given" and are skipped.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        if isinstance(raw.get("train"), dict):
            table = raw.pop("train")
            raw = {**raw, **table}
        for key, value in raw.items():
            if isinstance(value, dict):
                raise ConfigError(f"unknown config table [{key}] in {path}")
            values[key] = _coerce(key, value, str(path))
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        values[key] = _coerce(key, value, "command-line options")
    return validate(TrainConfig(**values))
