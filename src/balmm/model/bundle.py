"""Model bundle: everything ``balmm predict`` needs, in one folder.

Layout of ``model/``::

    weights.safetensors   network parameters (safetensors)
    model.json            architecture, classes, label mapping, modalities left out of the
                          fusion, feature manifest, resolved config, versions
    preprocess/           the fitted preprocessing (Preprocessor.save)
    graph.safetensors     gcn only: the training nodes' features and graph, so new samples
                          attach to training samples (inductive)
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import balmm
from balmm.errors import InputError
from balmm.model.fusion import MultiModalNet
from balmm.outputs import write_json_atomic

FORMAT = 1


def versions() -> dict[str, str]:
    """Versions of balmm and of the libraries its numbers depend on (metrics and bundles)."""
    return {
        "balmm": balmm.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


@dataclass
class Bundle:
    model: MultiModalNet
    preprocessor: Any
    classes: list[str]
    config: dict
    meta: dict
    graph: dict[str, torch.Tensor] = field(default_factory=dict)


def save_bundle(
    directory: str | Path,
    model: MultiModalNet,
    preprocessor: Any,
    classes: list[str],
    config: dict,
    label_mapping: dict[str, str] | None = None,
    graph: dict[str, torch.Tensor] | None = None,
    extra: dict | None = None,
) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / "weights.safetensors"))
    preprocessor.save(directory / "preprocess")
    if graph:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in graph.items()},
            str(directory / "graph.safetensors"),
        )
    first_enc = next(iter(model.encoders.values()))
    meta = {
        "format": FORMAT,
        "classes": classes,
        "label_mapping": label_mapping or {},
        "modalities": model.modalities,
        "n_features": {m: len(f) for m, f in preprocessor.features.items()},
        "features": preprocessor.features,
        "encoder": model.encoder_kind,
        "early_fusion": model.early_fusion,
        "fusion_off": sorted(model.fusion_off),
        "embed_dim": model.embed_dim,
        "n_in_first_encoder": int(first_enc.n_in),
        "config": config,
        "versions": versions(),
        **(extra or {}),
    }
    write_json_atomic(directory / "model.json", meta)
    return directory


def load_bundle(directory: str | Path, device: torch.device | str = "cpu") -> Bundle:
    """Rebuild the network and preprocessing of a saved bundle."""
    from balmm.data.preprocess import Preprocessor
    from balmm.training.config import TrainConfig
    from balmm.training.fit import build_model

    directory = Path(directory)
    if (directory / "model").is_dir() and not (directory / "model.json").exists():
        directory = directory / "model"  # accept the train --out folder too
    try:
        meta = json.loads((directory / "model.json").read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{directory}: not a balmm model bundle (model.json: {exc})") from exc
    if meta.get("format") != FORMAT:
        raise InputError(f"{directory}: unsupported bundle format {meta.get('format')!r}")
    pre = Preprocessor.load(directory / "preprocess")
    known = {k: v for k, v in meta["config"].items() if k in TrainConfig.__dataclass_fields__}
    cfg = TrainConfig(**known)
    model = build_model(meta["n_features"], len(meta["classes"]), cfg)
    state = load_file(str(directory / "weights.safetensors"))
    model.load_state_dict(state)
    model.fusion_off = set(meta.get("fusion_off", []))
    model.to(device).eval()
    graph = {}
    if (directory / "graph.safetensors").exists():
        graph = load_file(str(directory / "graph.safetensors"))
    return Bundle(model, pre, list(meta["classes"]), meta["config"], meta, graph)
