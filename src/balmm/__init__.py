"""balmm: balanced multimodal learning for paired omics.

Python API (each mirrors a command): :func:`load`, :func:`profile`,
:func:`train`, :func:`predict`; scanpy-style tools on MuData/AnnData in
:mod:`balmm.tl` and plots in :mod:`balmm.pl` (both imported on first use).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = ("tl", "pl")


def __getattr__(name: str) -> Any:
    # Lazy: `balmm --help` and `import balmm` stay fast (no torch/scanpy import).
    if name in _SUBMODULES:
        return importlib.import_module(f"balmm.{name}")
    raise AttributeError(f"module 'balmm' has no attribute {name!r}")


def load(
    inputs: Any = None,
    *,
    label_key: str | None = None,
    split_key: str | None = None,
    layer: str | dict[str, str] | None = None,
    var_key: str | dict[str, str] | None = None,
    **kwargs: Any,
):
    """Read INPUTS into a :class:`balmm.data.MultiOmicsData`.

    ``inputs``: a list of CLI INPUTS (``["rna=rna.h5ad", ...]``, ``["data.h5mu"]``, ``[]``
    for the bundled example), or in memory a MuData, an AnnData (one modality) or a dict
    of AnnData. ``label_key`` / ``split_key``: the ``.obs`` (or ``labels`` file) columns
    with the label and the train/test split; ``layer`` / ``var_key``: a layer instead of
    ``.X`` and a boolean ``.var`` feature mask, one name or ``{modality: name}``. Other
    options: see ``balmm.data.io.load_inputs``.
    """
    from balmm.data.io import load_inputs

    if label_key is not None:
        kwargs["label_col"] = label_key
    if split_key is not None:
        kwargs["split_col"] = split_key
    return load_inputs([] if inputs is None else inputs, layer=layer, var_key=var_key, **kwargs)


def _as_data(data: Any, kwargs: dict[str, Any], require_labels: bool = True):
    """``data`` as a MultiOmicsData: a MuData, AnnData or dict of AnnData is read with
    :func:`load` (taking its ``label_key``/``split_key``/``layer``/``var_key`` and, for the
    split, ``test_size`` out of ``kwargs``); anything else is returned as it is."""
    from balmm.data.detect import is_in_memory

    if not is_in_memory(data):
        return data
    keys = ("label_key", "split_key", "layer", "var_key", "test_size")
    opts = {k: kwargs.pop(k) for k in keys if k in kwargs}
    return load(data, seed=kwargs.get("seed", 0), require_labels=require_labels, **opts)


def profile(data: Any, *args: Any, **kwargs: Any):
    """Profile a dataset (see ``balmm.profiling.run.profile``); ``data`` may be a MuData,
    AnnData or dict of AnnData (then ``label_key=`` etc. as in :func:`load`)."""
    from balmm.profiling.run import profile as _profile

    return _profile(_as_data(data, kwargs), *args, **kwargs)


def train(data: Any, *args: Any, **kwargs: Any):
    """Train a model (see ``balmm.training.fit.train``); ``data`` as in :func:`profile`."""
    from balmm.training.fit import train as _train

    return _train(_as_data(data, kwargs), *args, **kwargs)


def predict(model_dir: Any, data: Any, *args: Any, **kwargs: Any):
    """Apply a saved model bundle (see ``balmm.predict.predict``); ``data`` as in
    :func:`profile` (labels optional)."""
    from balmm.predict import predict as _predict

    return _predict(model_dir, _as_data(data, kwargs, require_labels=False), *args, **kwargs)
