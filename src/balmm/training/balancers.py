"""Loss weighting and gradient modulation for joint training (one per ``--balancer``).

Every balancer trains the same network (per-modality encoders and heads plus a
fusion head) on the same data; they differ only in how the losses are combined
and whether encoder gradients are modulated:

- ``balmm``: L = w_f L_fused + sum_m w_m L_m, the w_m recomputed every epoch from
  each head's validation macro-F1 and the intermodal information (lagging but
  informative modalities up-weighted, complementary ones more, redundant ones less,
  uninformative ones weighted down to zero and, by default, left out of the fusion),
  EMA-smoothed; optional OGM-GE coefficient on the dominant encoder.
- ``none``: plain joint training on the fused loss. The per-modality heads are
  trained as probes on detached embeddings, so they measure the encoders without
  changing them.
- ``concat``: early fusion (one encoder over the concatenated features), fused loss.
- ``uncertainty``: Kendall, Gal & Cipolla (2018) homoscedastic-uncertainty weights,
  L = sum_k exp(-s_k) L_k + s_k / 2, the s_k learned.
- ``ogm-ge``: Peng et al. (2022) on-the-fly gradient modulation with Gaussian
  noise, generalised from two to M modalities: each modality's score is compared
  with the mean score of the others.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from balmm.model.fusion import MultiModalNet

FUSED = "fused"


def masked_ce(
    logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, smoothing: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy over the samples where ``mask`` is true (0 if none)."""
    loss = F.cross_entropy(logits, y, reduction="none", label_smoothing=smoothing)
    if mask is None:
        return loss.mean()
    m = mask.to(loss.dtype)
    return (loss * m).sum() / m.sum().clamp_min(1.0)


def ogm_coefficients(
    model: MultiModalNet,
    zs: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    y: torch.Tensor,
    alpha: float,
) -> dict[str, float]:
    """OGM-GE coefficient per modality: 1 - tanh(alpha * rho_m) where the modality's
    score rho_m (its share of the true-class softmax mass, relative to the mean of the
    other modalities) exceeds 1, else 1."""
    mods = [m for m in model.modalities if m in zs]
    if len(mods) < 2:
        return {m: 1.0 for m in mods}
    with torch.no_grad():
        contrib = model.contributions({m: zs[m].detach() for m in mods}, masks)
        score = {}
        for m in mods:
            p = torch.softmax(contrib[m], dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
            mk = masks[m].to(p.dtype)
            score[m] = float((p * mk).sum() / mk.sum().clamp_min(1.0))
    coef = {}
    for m in mods:
        others = [score[o] for o in mods if o != m]
        rho = score[m] / max(sum(others) / len(others), 1e-8)
        coef[m] = 1.0 - math.tanh(alpha * rho) if rho > 1.0 else 1.0
    return coef


def scale_encoder_grads(
    model: MultiModalNet, coef: dict[str, float], noise: bool, generator: torch.Generator | None
) -> None:
    """Multiply encoder m's gradients by coef[m]; with ``noise`` add N(0, std(grad)^2)
    to the modulated encoders' gradients (the "generalisation enhancement" of OGM-GE)."""
    for m, k in coef.items():
        if k >= 1.0:
            continue
        for p in model.encoders[m].parameters():
            if p.grad is None:
                continue
            p.grad.mul_(k)
            if noise and p.grad.numel() > 1:
                std = float(p.grad.std())
                n = torch.randn(p.grad.shape, generator=generator, device="cpu").to(p.grad.device)
                p.grad.add_(n * (std + 1e-8))


class Balancer:
    """Base: fused loss only; heads as detached probes."""

    name = "none"
    detach_heads = True

    def __init__(self, modalities: list[str], cfg, label_mi: dict[str, tuple[float, float]]):
        self.modalities = list(modalities)
        self.cfg = cfg
        self.label_mi = label_mi
        self.w: dict[str, float] = {FUSED: 1.0, **{m: 0.0 for m in modalities}}
        self.excluded: dict[str, str] = {}  # modality -> reason it is left out of the fusion
        self.last_coef: dict[str, float] = {m: 1.0 for m in modalities}
        self.notes: list[str] = []
        # a fixed per-epoch evidence schedule ({head: macro-F1} for epochs 1, 2, ...) read
        # by end_epoch instead of the validation carve's scores; None: the carve's
        self.schedule: list[dict[str, float]] | None = None

    def evidence_at(self, epoch: int) -> dict[str, float]:
        """The schedule's evidence for ``epoch`` (1-based); past its end, the last."""
        assert self.schedule
        return dict(self.schedule[min(epoch, len(self.schedule)) - 1])

    def to(self, device) -> Balancer:
        """Move learned balancing parameters (if any) to ``device``."""
        return self

    def parameters(self) -> list[nn.Parameter]:
        return []

    def weights(self) -> dict[str, float]:
        return dict(self.w)

    def state(self) -> dict:
        """What changes during training (for checkpoints): weights, coefficients and the
        learned balancing parameters."""
        return {
            "w": dict(self.w),
            "last_coef": dict(self.last_coef),
            "params": [p.detach().clone() for p in self.parameters()],
        }

    def load_state(self, state: dict) -> None:
        self.w = dict(state["w"])
        self.last_coef = dict(state["last_coef"])
        with torch.no_grad():  # in place: the optimiser holds these very tensors
            for p, v in zip(self.parameters(), state["params"], strict=True):
                p.copy_(v)

    def _head_weight(self, m: str) -> float | None:
        """Loss weight of modality ``m``'s head; None: a probe on the detached embedding,
        which always learns (weight 1) but cannot move the encoder."""
        return None if self.detach_heads else self.w[m]

    def loss(
        self,
        model: MultiModalNet,
        out: dict,
        y: torch.Tensor,
        masks: dict[str, torch.Tensor],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        sm = self.cfg.label_smoothing
        parts = {FUSED: masked_ce(out["fused"], y, None, sm)}
        total = self.w[FUSED] * parts[FUSED]
        for m in model.heads:
            w = self._head_weight(m)
            if w is None:
                parts[m] = masked_ce(model.heads[m](out["z"][m].detach()), y, masks[m], sm)
                total = total + parts[m]
            else:
                parts[m] = masked_ce(out["logits"][m], y, masks[m], sm)
                total = total + w * parts[m]
        return total, parts

    def after_backward(self, model, out, y, masks, generator) -> None:
        pass

    def end_epoch(self, val_f1: dict[str, float]) -> None:
        pass


class UncertaintyBalancer(Balancer):
    name = "uncertainty"
    detach_heads = False

    def __init__(self, modalities, cfg, label_mi):
        super().__init__(modalities, cfg, label_mi)
        self.log_vars = nn.ParameterDict(
            {k: nn.Parameter(torch.zeros(())) for k in [FUSED, *modalities]}
        )
        self._sync()

    def _sync(self) -> None:
        self.w = {k: float(torch.exp(-v.detach())) for k, v in self.log_vars.items()}

    def to(self, device) -> UncertaintyBalancer:
        self.log_vars.to(device)
        return self

    def parameters(self) -> list[nn.Parameter]:
        return list(self.log_vars.values())

    def loss(self, model, out, y, masks):
        sm = self.cfg.label_smoothing
        parts = {FUSED: masked_ce(out["fused"], y, None, sm)}
        for m in model.heads:
            parts[m] = masked_ce(out["logits"][m], y, masks[m], sm)
        total = sum(torch.exp(-self.log_vars[k]) * parts[k] + 0.5 * self.log_vars[k] for k in parts)
        return total, parts

    def end_epoch(self, val_f1):
        self._sync()


class OGMGEBalancer(Balancer):
    name = "ogm-ge"

    def after_backward(self, model, out, y, masks, generator) -> None:
        self.last_coef = ogm_coefficients(model, out["z"], masks, y, self.cfg.ogm_alpha)
        scale_encoder_grads(model, self.last_coef, self.cfg.ogm_noise, generator)


class BalmmBalancer(Balancer):
    """The balanced multitask weighting of balmm (see docs/method.md, "Stage 2")::

        gate_m   = 1 if modality m carries measurable label information, else 0
        target_m = gate_m * (1 + beta * lag_m * (1 + gamma * kappa_m))
        w_m     <- ema * w_m + (1 - ema) * target_m

    with lag_m >= 0 how far m's head is behind the best head and kappa_m in [-1, 1] its
    complementarity (label information only m carries, minus what the others carry too).
    So a lagging informative modality gets more weight (never less than 1); intermodal MI
    calibrates that lift: complementary information raises it (up to 1 + gamma), pure
    redundancy lowers it (down to 1 - gamma); an uninformative modality gets none.
    ``kappa`` comes from :func:`balmm.training.intermodal.complementarity` (absent: 0).
    """

    name = "balmm"

    def __init__(self, modalities, cfg, label_mi, kappa: dict[str, float] | None = None):
        super().__init__(modalities, cfg, label_mi)
        gate = self._gate()
        for m, g in gate.items():
            if g == 0.0 and cfg.exclude_uninformative and len(modalities) > 1:
                mi, lo = label_mi.get(m, (float("nan"), float("nan")))
                self.excluded[m] = (
                    f"label MI {mi:.3f} bits, lower CI {lo:.3f} below the "
                    f"{cfg.min_label_mi_bits}-bit threshold: not forced, left out of the fusion"
                )
        if len(self.excluded) == len(modalities):  # never exclude everything
            self.excluded = {}
        self.kappa = {m: float((kappa or {}).get(m, 0.0)) for m in modalities}
        # the weight an informative head starts from (and returns to once it catches up)
        self.info = gate
        self.w = {FUSED: cfg.fused_weight, **{m: self.info[m] for m in modalities}}

    def _gate(self) -> dict[str, float]:
        """1 for a modality with measurable label information (label MI and its lower
        confidence bound above the noise level), else 0."""
        thr = self.cfg.min_label_mi_bits
        gate = {}
        for m in self.modalities:
            mi, lo = self.label_mi.get(m, (float("nan"), float("nan")))
            ok = math.isfinite(mi) and mi >= thr and (not math.isfinite(lo) or lo > 0.0)
            gate[m] = 1.0 if ok else 0.0
        if not any(gate.values()):  # nothing measurably informative: equal weights
            self.notes.append("no modality had label MI above the threshold; equal weights")
            return {m: 1.0 for m in self.modalities}
        return gate

    def targets(self, val_f1: dict[str, float]) -> dict[str, float]:
        """target_m = gate_m * (1 + beta * lag_m * (1 + gamma * kappa_m)),
        lag_m = (F1_best - F1_m) / F1_best."""
        f = {m: val_f1.get(m, float("nan")) for m in self.modalities}
        finite = [v for v in f.values() if math.isfinite(v)]
        best = max(finite) if finite else 0.0
        beta = self.cfg.weight_beta if self.cfg.mi_weights else 0.0
        gamma = self.cfg.weight_gamma
        out = {}
        for m in self.modalities:
            lag = max(0.0, best - f[m]) / best if best > 0 and math.isfinite(f[m]) else 0.0
            out[m] = self.info[m] * (1.0 + beta * lag * (1.0 + gamma * self.kappa[m]))
        return out

    def _head_weight(self, m: str) -> float | None:
        # an uninformative modality is not forced: its head learns as a detached probe
        return self.w[m] if self.info[m] > 0.0 else None

    def end_epoch(self, val_f1: dict[str, float]) -> None:
        ema = self.cfg.weight_ema
        for m, t in self.targets(val_f1).items():
            self.w[m] = ema * self.w[m] + (1.0 - ema) * t

    def after_backward(self, model, out, y, masks, generator) -> None:
        if self.cfg.grad_modulation:
            self.last_coef = ogm_coefficients(model, out["z"], masks, y, self.cfg.ogm_alpha)
            scale_encoder_grads(model, self.last_coef, False, generator)


def make_balancer(
    name: str,
    modalities: list[str],
    cfg,
    label_mi: dict[str, tuple[float, float]],
    kappa: dict[str, float] | None = None,
) -> Balancer:
    cls = {
        "balmm": BalmmBalancer,
        "none": Balancer,
        "concat": Balancer,  # early fusion: only the fused loss, like "none"
        "uncertainty": UncertaintyBalancer,
        "ogm-ge": OGMGEBalancer,
    }[name]
    if cls is BalmmBalancer:
        return BalmmBalancer(modalities, cfg, label_mi, kappa)
    return cls(modalities, cfg, label_mi)
