"""Adam and AdamW steps without importing ``torch._dynamo``.

``torch.optim.Optimizer`` imports ``torch._dynamo`` on its first parameter group and on
every ``step`` (its graph breaks for ``torch.compile``): 1.3-1.8 s of start-up, a tenth of
a small ``balmm train``. :class:`Adam` keeps the optimiser state here and hands each step
to torch's own functional Adam (``torch.optim.adam.adam``, the function
``torch.optim.Adam.step`` calls), with the arguments that method passes on CPU and CUDA
alike, so the weights are bit for bit those of ``torch.optim.Adam`` / ``AdamW``
(tests/test_optim.py), with ``fused=True`` those of ``torch.optim.AdamW(fused=True)``. No
compiling, closures, hooks or amsgrad: balmm uses none of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.adam import adam as _adam_step


def _step_dtype() -> torch.dtype:
    """The dtype torch.optim keeps its CPU step counter in."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class Adam:
    """Adam (``decoupled_weight_decay=False``: L2 on the gradient, ``torch.optim.Adam``) or
    AdamW (``True``: ``torch.optim.AdamW``) over parameters or parameter groups (dicts with
    ``"params"`` and optionally ``"lr"``, ``"weight_decay"`` and ``"fused"``)."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        decoupled_weight_decay: bool = False,
        fused: bool = False,
    ) -> None:
        items = list(params)
        if items and not isinstance(items[0], dict):
            items = [{"params": items}]
        self.betas, self.eps, self.decoupled = betas, eps, decoupled_weight_decay
        # fused: one kernel per parameter instead of about ten elementwise ops (a stage-1
        # step's update 176 -> 42 us on CPU); its rounding differs from the unfused update's
        self.param_groups: list[dict[str, Any]] = [
            {"params": list(g["params"]), "lr": g.get("lr", lr),
             "weight_decay": g.get("weight_decay", weight_decay),
             "fused": bool(g.get("fused", fused))}
            for g in items
        ]  # fmt: skip
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One step for every parameter that has a gradient (as torch.optim does)."""
        beta1, beta2 = self.betas
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [self._state(p, group["fused"]) for p in params]
            _adam_step(
                params, [p.grad for p in params],
                [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
                [s["step"] for s in states],
                foreach=None, capturable=False, differentiable=False, fused=group["fused"] or None,
                grad_scale=None, found_inf=None, has_complex=False,
                decoupled_weight_decay=self.decoupled, amsgrad=False, beta1=beta1,
                beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"],
                eps=self.eps, maximize=False,
            )  # fmt: skip

    def _state(self, p: torch.Tensor, fused: bool) -> dict[str, torch.Tensor]:
        st = self.state.get(p)
        if st is None:  # lazily, on the first step with a gradient (as torch.optim does)
            st = self.state[p] = {
                # torch.optim keeps the fused kernel's step count on the parameter's device
                "step": torch.zeros((), dtype=torch.float32, device=p.device)
                if fused
                else torch.tensor(0.0, dtype=_step_dtype()),
                "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
            }
        return st

    # -- checkpoints ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """State per parameter index (in group order) and each group's settings."""
        flat = [p for g in self.param_groups for p in g["params"]]
        return {
            "state": {i: dict(self.state[p]) for i, p in enumerate(flat) if p in self.state},
            "param_groups": [
                {"lr": g["lr"], "weight_decay": g["weight_decay"], "n": len(g["params"])}
                for g in self.param_groups
            ],
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        flat = [(p, g["fused"]) for g in self.param_groups for p in g["params"]]
        if [g["n"] for g in sd["param_groups"]] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("optimiser state of another parameter layout")
        for g, saved in zip(self.param_groups, sd["param_groups"], strict=True):
            g["lr"], g["weight_decay"] = saved["lr"], saved["weight_decay"]
        self.state = {}
        for i, st in sd["state"].items():
            p, fused = flat[int(i)]
            dev, dtype = (p.device, torch.float32) if fused else ("cpu", _step_dtype())
            self.state[p] = {
                "step": st["step"].to(dtype=dtype, device=dev).clone(),
                "exp_avg": st["exp_avg"].to(p.device, p.dtype).clone(),
                "exp_avg_sq": st["exp_avg_sq"].to(p.device, p.dtype).clone(),
            }


def adamw(params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lr: float,
          weight_decay: float, fused: bool = False) -> Adam:  # fmt: skip
    """``torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)``, bit for
    bit."""
    return Adam(params, lr=lr, weight_decay=weight_decay, decoupled_weight_decay=True,
                fused=fused)  # fmt: skip
