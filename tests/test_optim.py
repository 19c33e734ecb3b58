"""balmm.optim: torch.optim's Adam / AdamW bit for bit, without importing torch._dynamo."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from balmm.optim import Adam, adamw


def _train(make, steps: int = 25, resume_at: int | None = None) -> list[torch.Tensor]:
    """A small net with two parameter groups (different weight decays) trained on random
    minibatches; every 4th step one weight gets no gradient (frozen), as in balmm's loops.
    With ``resume_at``, the optimiser is rebuilt there from its state_dict."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))

    def groups():
        return [
            {"params": list(net[0].parameters()), "weight_decay": 0.1},
            {"params": list(net[2].parameters()), "weight_decay": 1e-3},
        ]

    opt = make(groups())
    gen = torch.Generator().manual_seed(1)
    for i in range(steps):
        if i == resume_at:
            saved = opt.state_dict()
            opt = make(groups())
            opt.load_state_dict(saved)
        x = torch.randn(16, 7, generator=gen)
        y = torch.randint(0, 3, (16,), generator=gen)
        opt.zero_grad(set_to_none=True)
        net[0].weight.requires_grad_(i % 4 != 3)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        net[0].weight.requires_grad_(True)
        opt.step()
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("decoupled,fused", [(True, False), (True, True), (False, False)])
def test_same_bits_as_torch_optim(decoupled: bool, fused: bool) -> None:
    if decoupled:
        ours, ref = (lambda g: adamw(g, lr=0.01, weight_decay=0.0, fused=fused)), torch.optim.AdamW
    else:
        ours, ref = (lambda g: Adam(g, lr=0.01)), torch.optim.Adam
    expected = _train(lambda g: ref(g, lr=0.01, fused=fused or None))
    got = _train(ours)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    # a state_dict round trip mid-training (checkpoints, --resume) changes nothing
    resumed = _train(ours, resume_at=11)
    assert all(torch.equal(a, b) for a, b in zip(resumed, expected, strict=True))


def test_fused_per_group_as_torch_optim() -> None:
    """A joint model's optimiser fuses some groups and not others (training/loop.py)."""

    def mixed(make):
        def build(groups):
            groups[0]["fused"], groups[1]["fused"] = True, False
            return make(groups)

        return build

    expected = _train(mixed(lambda g: torch.optim.AdamW(g, lr=0.01)))
    got = _train(mixed(lambda g: adamw(g, lr=0.01, weight_decay=0.0)))
    resumed = _train(mixed(lambda g: adamw(g, lr=0.01, weight_decay=0.0)), resume_at=11)
    for params in (got, resumed):
        assert all(torch.equal(a, b) for a, b in zip(params, expected, strict=True))
    unfused = _train(lambda g: adamw(g, lr=0.01, weight_decay=0.0))
    assert not all(torch.equal(a, b) for a, b in zip(got, unfused, strict=True))


def test_load_state_dict_refuses_another_layout() -> None:
    a = adamw([torch.nn.Parameter(torch.zeros(2))], lr=0.1, weight_decay=0.0)
    b = adamw([torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))], 0.1, 0.0)
    with pytest.raises(ValueError, match="layout"):
        b.load_state_dict(a.state_dict())


def test_training_does_not_import_dynamo() -> None:
    """The point of balmm.optim: torch.optim's step imports torch._dynamo (1.3-1.8 s)."""
    code = (
        "import sys, torch\n"
        "from balmm.optim import adamw\n"
        "p = torch.nn.Parameter(torch.ones(3))\n"
        "opt = adamw([p], lr=0.1, weight_decay=0.01)\n"
        "(p * p).sum().backward()\n"
        "opt.step()\n"
        "assert float(p[0]) < 1.0\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
