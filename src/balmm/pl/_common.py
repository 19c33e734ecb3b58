"""What every ``balmm.pl`` function shares: resolving its input (a result object, a dict or
an output folder) and getting an Axes to draw on.

matplotlib is imported only when a plot is drawn. Without ``ax=`` a new pyplot figure is
made (matplotlib chooses its headless Agg backend where there is no display); the reports
pass Axes of backend-free :class:`matplotlib.figure.Figure` objects instead, so writing a
report never touches pyplot's global state.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from balmm.errors import InputError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

PathLike = str | Path


_DETACHED = contextvars.ContextVar("balmm_pl_detached", default=False)


@contextlib.contextmanager
def detached_figures() -> Iterator[None]:
    """Inside this block, plots made without ``ax=`` draw on backend-free Figures that
    pyplot does not track (for files and reports; nothing to close, no display needed)."""
    token = _DETACHED.set(True)
    try:
        yield
    finally:
        _DETACHED.reset(token)


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """``ax`` itself, or the Axes of a new figure of ``figsize`` inches (a pyplot figure,
    or a detached one inside :func:`detached_figures`)."""
    if ax is not None:
        return ax
    if _DETACHED.get():
        from matplotlib.figure import Figure

        return Figure(figsize=figsize).subplots()
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def output_file(path: PathLike, default_name: str, expected: str) -> Path:
    """``path``, or ``default_name`` inside it when it is a folder; InputError naming the
    file (and what was ``expected``) when it does not exist."""
    p = Path(path)
    if p.is_dir():
        p = p / default_name
    if not p.is_file():
        raise InputError(f"{p}: no such file (expected {expected})")
    return p


def read_json(path: PathLike, default_name: str) -> dict:
    """A JSON file, or ``default_name`` inside a folder; InputError naming the file if absent."""
    p = output_file(path, default_name, f"a balmm output folder or {default_name}")
    try:
        return json.loads(p.read_text("utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}: not valid JSON ({exc.msg}, line {exc.lineno})") from None


def train_metrics(obj: Any) -> dict:
    """metrics.json content from a TrainResult, a dict or a ``train --out`` folder."""
    if isinstance(obj, dict):
        return obj
    if isinstance(obj, (str, Path)):
        return read_json(obj, "metrics.json")
    if hasattr(obj, "metrics"):
        return obj.metrics
    raise TypeError(f"expected a TrainResult, a metrics dict or a path, not {type(obj).__name__}")


def train_history(obj: Any) -> list[dict]:
    """history.jsonl records from a TrainResult, a list or a ``train --out`` folder."""
    if isinstance(obj, list):
        return obj
    if isinstance(obj, (str, Path)):
        p = output_file(obj, "history.jsonl", "a train output folder")
        return [json.loads(line) for line in p.read_text("utf-8").splitlines() if line.strip()]
    if hasattr(obj, "history"):
        return obj.history
    raise TypeError(f"expected a TrainResult, a history list or a path, not {type(obj).__name__}")


def profile_dict(obj: Any) -> dict:
    """profile.json content from a ProfileResult, a dict or a ``profile --out`` folder."""
    if isinstance(obj, dict):
        return obj
    if isinstance(obj, (str, Path)):
        return read_json(obj, "profile.json")
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"expected a ProfileResult, a profile dict or a path, not {type(obj).__name__}")


def class_names(obj: Any, classes: Sequence[str]) -> list[str]:
    """Readable class names: the label mapping of a TrainResult or a ``train --out`` folder
    (its model bundle) turns codes such as ``0``/``1`` into ``Normal control``/``Alzheimer's
    disease``; classes without a mapping keep their own name."""
    mapping: dict = {}
    if hasattr(obj, "label_mapping"):
        mapping = dict(obj.label_mapping or {})
    elif isinstance(obj, (str, Path)) and Path(obj).is_dir():
        bundle = Path(obj) / "model" / "model.json"
        if bundle.is_file():
            mapping = json.loads(bundle.read_text("utf-8")).get("label_mapping") or {}
    elif isinstance(obj, dict):
        mapping = obj.get("label_mapping") or {}
    return [str(mapping.get(c, c)) for c in classes]


def modality_colors(names: Sequence[str]) -> dict[str, str]:
    """One stable colour per modality (matplotlib's tab10 cycle), 'fused' in black."""
    palette = [
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
        "#17becf",
    ]
    out, i = {}, 0
    for n in names:
        if n == "fused":
            out[n] = "#111111"
        else:
            out[n] = palette[i % len(palette)]
            i += 1
    return out
