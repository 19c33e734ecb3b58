"""balmm: balanced multimodal learning for paired omics.

Python API (each mirrors a command): :func:`load`, :func:`profile`,
:func:`train`, :func:`predict`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load(*args: Any, **kwargs: Any):
    """Read INPUTS into a :class:`balmm.data.MultiOmicsData` (see ``balmm.data.io.load_inputs``)."""
    from balmm.data.io import load_inputs

    return load_inputs(*args, **kwargs)


def profile(*args: Any, **kwargs: Any):
    """Profile a dataset (see ``balmm.profiling.run.profile``)."""
    from balmm.profiling.run import profile as _profile

    return _profile(*args, **kwargs)


def train(*args: Any, **kwargs: Any):
    """Train a model (see ``balmm.training.fit.train``)."""
    from balmm.training.fit import train as _train

    return _train(*args, **kwargs)


def predict(*args: Any, **kwargs: Any):
    """Apply a saved model bundle (see ``balmm.predict.predict``)."""
    from balmm.predict import predict as _predict

    return _predict(*args, **kwargs)
