"""Heads and fusion: a linear head per modality and a linear fusion head.

The fusion head sees the concatenated embeddings, each multiplied by its
modality's presence mask (0 where the sample lacks the modality), followed by
the mask itself, so that a sample missing a modality still gets a fused
prediction from what it has. Because the fusion head is linear, its logit is a
sum of one term per modality, which the OGM-GE coefficient and the
contribution analysis use.

``early_fusion=True`` builds the ``concat`` baseline: one encoder over all
modalities' features concatenated (missing ones zero), and only a fused head.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from balmm.model.encoders import make_encoder

CONCAT = "concat"


def expand_stacker(
    state: Mapping[str, Any], modalities: list[str], n_classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A ``Stacker.to_dict()`` laid out over ``modalities`` (the net's order; a modality
    the stacker did not see gets scale 0): (per-modality scale, weight, bias) in float64."""
    c = n_classes
    assays = list(state["assays"])
    coef = torch.tensor(state["coef"], dtype=torch.float64)
    icpt = torch.tensor(state["intercept"], dtype=torch.float64)
    classes = list(state["classes"])
    full_w = torch.zeros(c, len(assays) * (c + 1), dtype=torch.float64)
    full_b = torch.full((c,), float("-inf"), dtype=torch.float64)
    if len(classes) == 2 and coef.shape[0] == 1:  # binary: one score for class 1
        full_w[classes[1]] = coef[0]
        full_b[classes[0]] = 0.0
        full_b[classes[1]] = icpt[0]
    else:
        for i, k in enumerate(classes):
            full_w[k] = coef[i]
            full_b[k] = icpt[i]
    n = len(modalities)
    w = torch.zeros(c, n * (c + 1), dtype=torch.float64)
    factor = torch.zeros(n, dtype=torch.float64)
    for j, m in enumerate(modalities):
        if m not in assays:
            continue
        i = assays.index(m)
        w[:, j * c : (j + 1) * c] = full_w[:, i * c : (i + 1) * c]
        w[:, n * c + j] = full_w[:, len(assays) * c + i]
        factor[j] = float(state["factor"][m])
    return factor, w, full_b


class StackedFusion(nn.Module):
    """A fitted OOF stacker (:class:`balmm.training.stacking.Stacker`) as a torch module:
    per modality, the centred logits of its head times a scale (0 where the sample lacks
    the modality) and a presence flag, then a linear map. Buffers only (saved in bundles);
    ``active`` is 0 until :meth:`load_stacker` fills it.

    ``stack_missing = "pattern"``: ``source`` holds the stacker's training rows (saved
    beside the weights in bundles) and ``patterns`` the stacker of each missingness
    pattern (a tuple of presence flags over ``source["assays"]``), fitted from ``source``
    by ``balmm.training.stack_patterns`` before inference; a pattern mapped to ``None``,
    or absent, uses the one zero-fill stacker above."""

    def __init__(self, modalities: list[str], n_classes: int) -> None:
        super().__init__()
        n_mods = len(modalities)
        self.modalities = list(modalities)
        self.register_buffer("factor", torch.zeros(n_mods))
        self.register_buffer("weight", torch.zeros(n_classes, n_mods * (n_classes + 1)))
        self.register_buffer("bias", torch.zeros(n_classes))
        self.register_buffer("active", torch.zeros((), dtype=torch.bool))
        self.source: dict[str, Any] | None = None
        self.patterns: dict[tuple[bool, ...], tuple[torch.Tensor, ...] | None] = {}
        self.pattern_info: dict[tuple[bool, ...], dict[str, Any]] = {}

    def load_stacker(self, state: Mapping[str, Any], modalities: list[str]) -> None:
        """Copy a ``Stacker.to_dict()`` over ``modalities`` (the net's order; a modality
        the stacker did not see gets scale 0)."""
        factor, w, b = expand_stacker(state, modalities, self.bias.shape[0])
        self.factor.copy_(factor.to(self.factor.dtype))
        self.weight.copy_(w.to(self.weight.dtype))
        self.bias.copy_(b.to(self.bias.dtype))
        self.active.fill_(True)

    def share_patterns(self, other: StackedFusion) -> None:
        """Use ``other``'s training rows and per-pattern stackers (the same objects), so a
        pattern fitted for one is fitted for both (fold-average members)."""
        self.source, self.patterns = other.source, other.patterns
        self.pattern_info = other.pattern_info

    def set_pattern(self, key: tuple[bool, ...], state: Mapping[str, Any] | None) -> None:
        """The stacker (``Stacker.to_dict()``) of the rows whose presence flags over
        ``source["assays"]`` are ``key``; ``None``: those rows use the zero-fill stacker."""
        if state is None:
            self.patterns[key] = None
            return
        params = expand_stacker(state, self.modalities, self.bias.shape[0])
        self.patterns[key] = tuple(t.to(self.weight.device, self.weight.dtype) for t in params)

    @staticmethod
    def _linear(logits, masks, factor, weight, bias) -> torch.Tensor:
        blocks, flags = [], []
        for j, (lg, mk) in enumerate(zip(logits, masks, strict=True)):
            f = mk.to(lg.dtype)
            centred = (lg - lg.mean(1, keepdim=True)) * f.unsqueeze(1)
            blocks.append(centred * factor[j])
            flags.append(f * (factor[j] > 0).to(lg.dtype))
        x = torch.cat([*blocks, torch.stack(flags, 1)], dim=1)
        return x @ weight.T + bias

    def forward(self, logits: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
        fused = self._linear(logits, masks, self.factor, self.weight, self.bias)
        if self.source is None or not any(v is not None for v in self.patterns.values()):
            return fused
        cols = [self.modalities.index(a) for a in self.source["assays"]]
        pres = torch.stack([masks[j].bool() for j in cols], 1)
        for key, params in self.patterns.items():
            if params is None:
                continue
            want = torch.tensor(key, dtype=torch.bool, device=pres.device)
            rows = torch.nonzero((pres == want).all(1)).squeeze(1)
            if len(rows):
                fused[rows] = self._linear([lg[rows] for lg in logits],
                                           [mk[rows] for mk in masks], *params)  # fmt: skip
        return fused


class MultiModalNet(nn.Module):
    def __init__(
        self,
        n_features: dict[str, int],
        n_classes: int,
        encoder: str = "mlp",
        early_fusion: bool = False,
        late_heads: bool = True,
        stacked: bool = False,
        **encoder_kwargs,
    ) -> None:
        super().__init__()
        self.modalities = list(n_features)
        self.n_classes = n_classes
        self.early_fusion = early_fusion
        self.encoder_kind = encoder
        # modalities left out of the fusion (balmm: no label information); saved in bundles
        self.fusion_off: set[str] = set()
        self.late_heads = late_heads
        embed = int(encoder_kwargs.get("embed_dim", 64))
        self.embed_dim = embed
        self.stack: StackedFusion | None = None
        # final_model = "average": the cross-fitting folds' joint models, whose fused
        # probabilities are averaged with this model's (see :meth:`forward`)
        self.members = nn.ModuleList()
        if early_fusion:
            n_in = sum(n_features.values()) + len(n_features)
            self.encoders = nn.ModuleDict({CONCAT: make_encoder(encoder, n_in, **encoder_kwargs)})
            self.heads = nn.ModuleDict()
            self.fusion = nn.Linear(embed, n_classes)
        else:
            self.encoders = nn.ModuleDict(
                {m: make_encoder(encoder, p, **encoder_kwargs) for m, p in n_features.items()}
            )
            self.heads = nn.ModuleDict({m: nn.Linear(embed, n_classes) for m in n_features})
            self.fusion = nn.Linear(embed * len(n_features) + len(n_features), n_classes)
            # fusion_head = "stack": the OOF stacker over the heads' logits, once fitted
            self.stack = StackedFusion(list(n_features), n_classes) if stacked else None
            if late_heads:  # start as the sum of the unimodal heads (late fusion)
                nn.init.zeros_(self.fusion.weight)
                nn.init.zeros_(self.fusion.bias)

    # -- pieces -------------------------------------------------------------------------
    def encode(
        self,
        xs: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
        adj: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Embeddings per modality (zeros where the modality is missing)."""
        if self.early_fusion:
            parts = [xs[m] * masks[m].unsqueeze(1).to(xs[m].dtype) for m in self.modalities]
            parts += [
                masks[m].unsqueeze(1).to(xs[self.modalities[0]].dtype) for m in self.modalities
            ]
            return {CONCAT: self.encoders[CONCAT](torch.cat(parts, dim=1), adj)}
        return {
            m: self.encoders[m](xs[m], adj) * masks[m].unsqueeze(1).to(xs[m].dtype)
            for m in self.modalities
        }

    def fuse(
        self,
        zs: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
        logits: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """Fused logits: a linear layer on the masked, concatenated embeddings (and mask
        columns) plus the sum of the per-modality heads' logits (``late_heads``). Both parts
        are linear in the concatenated embeddings, so together they are still one linear
        fusion head; the parametrisation lets the fusion start from, and keep, what each
        unimodal head knows. Modalities in ``fusion_off`` take no part."""
        if self.early_fusion:
            return self.fusion(zs[CONCAT])
        if self.stack is not None and bool(self.stack.active):
            on = [m for m in self.modalities if m not in self.fusion_off]
            return self.stack([logits[m] for m in self.modalities],
                              [masks[m] if m in on else torch.zeros_like(masks[m])
                               for m in self.modalities])  # fmt: skip
        d, n_mods = self.embed_dim, len(self.modalities)
        w, b = self.fusion.weight, self.fusion.bias
        fused = b.expand(next(iter(zs.values())).shape[0], -1)
        # one block product per modality in the fusion, summed in a fixed order, instead of
        # one product over the concatenation: a modality left out of the fusion then takes
        # no part in any reduction, so the fused logits are bit-for-bit those of a model
        # trained without it (a wider matmul sums in a different order: last-ULP changes)
        for i, m in enumerate(self.modalities):
            if m in self.fusion_off:
                continue
            mc = masks[m].unsqueeze(1).to(fused.dtype)
            fused = fused + (zs[m] * mc) @ w[:, i * d : (i + 1) * d].T + mc * w[:, n_mods * d + i]
            if self.late_heads:
                fused = fused + logits[m] * mc
        return fused

    def _fmask(self, m: str, masks: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.zeros_like(masks[m]) if m in self.fusion_off else masks[m]

    def contributions(
        self, zs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Each modality's additive share of the fused logit (its block of the linear head
        plus its mask column), with the bias split evenly (OGM-GE's per-modality score)."""
        d, mods = self.embed_dim, self.modalities
        w, b = self.fusion.weight, self.fusion.bias
        out = {}
        for i, m in enumerate(mods):
            mc = self._fmask(m, masks).unsqueeze(1).to(zs[m].dtype)
            blk = (zs[m] * mc) @ w[:, i * d : (i + 1) * d].T
            out[m] = blk + mc * w[:, len(mods) * d + i] + b / len(mods)
            if self.late_heads:
                out[m] = out[m] + self.heads[m](zs[m]) * mc
        return out

    def forward(
        self,
        xs: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
        adj: torch.Tensor | None = None,
    ) -> dict[str, object]:
        zs = self.encode(xs, masks, adj)
        logits = {m: self.heads[m](zs[m]) for m in self.heads}
        fused = self.fuse(zs, masks, logits)
        if len(self.members):
            # the ensemble's fused prediction: the mean of the members' class probabilities
            # (returned as its log, a valid logit); embeddings and the unimodal heads stay
            # this model's
            logp = [torch.log_softmax(fused, 1)]
            logp += [torch.log_softmax(net(xs, masks, adj)["fused"], 1) for net in self.members]
            fused = torch.logsumexp(torch.stack(logp), 0) - math.log(len(logp))
        return {"z": zs, "logits": logits, "fused": fused}

    def set_members(self, nets: list[MultiModalNet]) -> None:
        """Average this model's fused prediction with ``nets`` (same architecture; they
        take this model's ``fusion_off``)."""
        for net in nets:
            net.fusion_off = set(self.fusion_off)
        self.members = nn.ModuleList(nets)


ENCODER_KEYS = ("hidden", "embed_dim", "norm", "activation", "dropout", "input_dropout")


def build_model(
    n_features: dict[str, int], n_classes: int, config: Mapping[str, Any], n_members: int = 0
) -> MultiModalNet:
    """The network described by a resolved training config (``TrainConfig.to_dict()``, or
    the ``config`` saved in a bundle): encoders, heads and the fusion head; with
    ``n_members``, that many ensemble members of the same architecture (a saved
    ``final_model = "average"`` bundle)."""
    net = _build_one(n_features, n_classes, config)
    if n_members:
        net.set_members([_build_one(n_features, n_classes, config) for _ in range(n_members)])
    return net


def _build_one(
    n_features: dict[str, int], n_classes: int, config: Mapping[str, Any]
) -> MultiModalNet:
    return MultiModalNet(
        n_features,
        n_classes,
        encoder=config["encoder"],
        early_fusion=config["balancer"] == "concat",
        late_heads=config["late_heads"],
        stacked=config.get("fusion_head", "joint") == "stack" and config["balancer"] != "concat",
        **{k: config[k] for k in ENCODER_KEYS},
    )
