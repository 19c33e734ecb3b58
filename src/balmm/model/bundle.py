"""Model bundle: everything ``balmm predict`` needs, in one folder.

Layout of ``model/``::

    weights.safetensors   network parameters (safetensors)
    model.json            architecture, classes, label mapping, modalities left out of the
                          fusion, feature manifest, resolved config, versions
    preprocess/           the fitted preprocessing (Preprocessor.save)
    graph.safetensors     gcn only: the training nodes' features and graph, so new samples
                          attach to training samples (inductive)
    stack.safetensors     ``stack_missing = "pattern"`` only: the stacker's training rows
                          (OOF logits, presence, labels), from which the stacker of a
                          missingness pattern is fitted when predict first meets it
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
from balmm.model.fusion import MultiModalNet, build_model
from balmm.outputs import apply_umask, write_json_atomic

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
    apply_umask(directory / "weights.safetensors")  # safetensors writes 0600
    preprocessor.save(directory / "preprocess")
    if graph:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in graph.items()},
            str(directory / "graph.safetensors"),
        )
        apply_umask(directory / "graph.safetensors")
    stack_info = None
    if model.stack is not None and model.stack.source is not None:
        stack_info = _save_stack_source(directory / "stack.safetensors", model.stack.source)
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
        # final_model = "average": the fold models stored beside the refit (members.K.*)
        **({"n_members": len(model.members)} if len(model.members) else {}),
        **({"stack_source": stack_info} if stack_info else {}),
        **(extra or {}),
    }
    write_json_atomic(directory / "model.json", meta)
    return directory


def _save_stack_source(path: Path, source: dict) -> dict:
    """Write the stacker's training rows; returns what model.json keeps of them (the
    safetensors metadata would not be byte-identical across reruns: its order varies)."""
    tensors = {k: torch.from_numpy(np.ascontiguousarray(source[k]))
               for k in ("logits", "present", "y")}  # fmt: skip
    save_file(tensors, str(path))
    apply_umask(path)
    return {"assays": list(source["assays"]), "seed": int(source["seed"]),
            "cv": int(source["cv"])}  # fmt: skip


def _load_stack_source(path: Path, meta: dict, n_classes: int) -> dict:
    """The stacker's training rows of a bundle, validated (an InputError names the file
    or model.json's key)."""
    info = meta.get("stack_source")
    mods = meta["modalities"]
    where = path.parent / "model.json"
    if not isinstance(info, dict):
        raise _meta_error(where, "stack_source", "must describe the stacker's training rows")
    assays, seed, cv = info.get("assays"), info.get("seed"), info.get("cv")
    if not isinstance(assays, list) or not assays or not set(assays) <= set(mods):
        raise _meta_error(where, "stack_source.assays", f"must list modalities among {mods}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (seed, cv)) or cv < 2:
        raise _meta_error(where, "stack_source", "needs an integer seed and cv >= 2")
    tensors = _load_tensors(path) if path.exists() else None
    if tensors is None:
        raise InputError(f"{path}: missing from the model bundle")
    if sorted(tensors) != ["logits", "present", "y"]:
        raise InputError(f"{path}: expected the tensors logits, present and y")
    logits, present, y = tensors["logits"], tensors["present"], tensors["y"]
    n, a = len(y), len(assays)
    if (
        tuple(logits.shape) != (n, a, n_classes)
        or tuple(present.shape) != (n, a)
        or y.ndim != 1
        or present.dtype != torch.bool
        or logits.dtype != torch.float32
        or y.dtype != torch.int64
    ):
        raise InputError(f"{path}: tensor shapes or types do not match {a} assays and "
                         f"{n_classes} classes")  # fmt: skip
    if n and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise InputError(f"{path}: tensor 'y' must hold class codes 0..{n_classes - 1}")
    return {"assays": assays, "logits": logits.numpy(), "present": present.numpy(),
            "y": y.numpy(), "seed": seed, "cv": cv}  # fmt: skip


def _meta_error(path: Path, key: str, why: str) -> InputError:
    return InputError(f"{path}: key {key!r} {why}")


def _check_meta(path: Path, meta: Any) -> dict:
    """model.json is checked like a config file: types, ranges and consistency, so a
    damaged or edited bundle is one clear line naming the file and key (exit 2)."""
    if not isinstance(meta, dict):
        raise InputError(f"{path}: expected a JSON object")
    if meta.get("format") != FORMAT:
        raise InputError(f"{path.parent}: unsupported bundle format {meta.get('format')!r}")
    classes = meta.get("classes")
    if (
        not isinstance(classes, list)
        or len(classes) < 2
        or len(set(map(str, classes))) != len(classes)
    ):
        raise _meta_error(path, "classes", "must be a list of at least 2 distinct class names")
    mods = meta.get("modalities")
    if not isinstance(mods, list) or not mods or not all(isinstance(m, str) for m in mods):
        raise _meta_error(path, "modalities", "must be a non-empty list of names")
    n_features, features = meta.get("n_features"), meta.get("features")
    if not isinstance(n_features, dict) or sorted(n_features) != sorted(mods):
        raise _meta_error(path, "n_features", f"must give a count for each of {mods}")
    if not isinstance(features, dict) or sorted(features) != sorted(mods):
        raise _meta_error(path, "features", f"must list the features of each of {mods}")
    for m in mods:
        n = n_features[m]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise _meta_error(path, f"n_features.{m}", f"must be a positive integer, got {n!r}")
        if not isinstance(features[m], list) or len(features[m]) != n:
            got = len(features[m]) if isinstance(features[m], list) else type(features[m]).__name__
            raise _meta_error(path, f"n_features.{m}", f"is {n} but features.{m} has {got}")
    fusion_off = meta.get("fusion_off", [])
    if not isinstance(fusion_off, list) or not set(fusion_off) <= set(mods):
        raise _meta_error(path, "fusion_off", f"must be a list of modalities among {mods}")
    if not isinstance(meta.get("config"), dict):
        raise _meta_error(path, "config", "must be a table of training settings")
    n_members = meta.get("n_members", 0)
    if not isinstance(n_members, int) or isinstance(n_members, bool) or not 0 <= n_members <= 64:
        raise _meta_error(path, "n_members", f"must be an integer from 0 to 64, got {n_members!r}")
    return meta


def _config(path: Path, raw: dict) -> Any:
    from balmm.config import TrainConfig, _coerce, validate
    from balmm.errors import ConfigError

    try:
        known = {k: _coerce(k, v, str(path)) for k, v in raw.items()
                 if k in TrainConfig.__dataclass_fields__}  # fmt: skip
        return validate(TrainConfig(**known))
    except ConfigError as exc:
        msg = str(exc)
        raise InputError(msg if str(path) in msg else f"{path}: {msg}") from None


def _tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes from the safetensors header, without reading any tensor."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118
    except FileNotFoundError:
        raise InputError(f"{path}: missing from the model bundle") from None
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise InputError(f"{path}: not a readable safetensors file ({exc})") from None


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - e.g. a truncated file behind a valid header
        raise InputError(f"{path}: not a readable safetensors file ({exc})") from None


def _check_shapes(path: Path, want: dict[str, tuple[int, ...]]) -> None:
    have = _tensor_shapes(path)
    for key in sorted(set(want) | set(have)):
        if key not in have:
            raise InputError(f"{path}: tensor {key!r} is missing")
        if key not in want:
            raise InputError(f"{path}: unexpected tensor {key!r} (does model.json match?)")
        if have[key] != want[key]:
            raise InputError(
                f"{path}: tensor {key!r} has shape {list(have[key])}, model.json implies "
                f"{list(want[key])}"
            )


def read_meta(directory: str | Path) -> tuple[Path, dict, Any]:
    """The bundle folder (``train --out DIR`` or its ``model/``), its validated model.json
    and training config; cheap, so ``predict`` checks the model before reading any data."""
    directory = Path(directory)
    if (directory / "model").is_dir() and not (directory / "model.json").exists():
        directory = directory / "model"  # accept the train --out folder too
    meta_path = directory / "model.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{directory}: not a balmm model bundle (model.json: {exc})") from exc
    meta = _check_meta(meta_path, meta)
    return directory, meta, _config(meta_path, meta["config"])


def load_bundle(directory: str | Path, device: torch.device | str = "cpu") -> Bundle:
    """Rebuild the network and preprocessing of a saved bundle (validated first: any
    inconsistency is an InputError naming the file and key)."""
    from balmm.data.preprocess import Preprocessor

    directory, meta, cfg = read_meta(directory)
    meta_path = directory / "model.json"
    weights = directory / "weights.safetensors"
    try:
        pre = Preprocessor.load(directory / "preprocess")
        for m, st in pre._mods.items():
            if not len(st.median) == len(st.mean) == len(st.scale) == len(st.features):
                raise ValueError(f"modality {m!r}: statistics do not match its features")
    except InputError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(
            f"{directory / 'preprocess'}: damaged preprocessing state ({exc})"
        ) from None
    for m in meta["modalities"]:
        got = len(pre.features.get(m, []))
        if got != meta["n_features"][m]:
            raise _meta_error(meta_path, f"n_features.{m}",
                              f"is {meta['n_features'][m]} but the fitted preprocessing has "
                              f"{got} features")  # fmt: skip
    n_members = meta.get("n_members", 0)
    with torch.device("meta"):  # shapes only: nothing sized by model.json is allocated yet
        shell = build_model(meta["n_features"], len(meta["classes"]), cfg.to_dict(), n_members)
    _check_shapes(weights, {k: tuple(v.shape) for k, v in shell.state_dict().items()})
    model = build_model(meta["n_features"], len(meta["classes"]), cfg.to_dict(), n_members)
    state = _load_tensors(weights)
    model.load_state_dict(state)
    model.fusion_off = set(meta.get("fusion_off", []))
    for member in model.members:
        member.fusion_off = set(model.fusion_off)
    if cfg.fusion_head == "stack" and cfg.stack_missing == "pattern" and model.stack is not None \
            and bool(model.stack.active):  # fmt: skip
        model.stack.source = _load_stack_source(directory / "stack.safetensors", meta,
                                                len(meta["classes"]))  # fmt: skip
        for member in model.members:  # the fold-average members apply the same stacker
            member.stack.share_patterns(model.stack)
    model.to(device).eval()
    graph = {}
    if (directory / "graph.safetensors").exists():
        _tensor_shapes(directory / "graph.safetensors")
        graph = _load_tensors(directory / "graph.safetensors")
    return Bundle(model, pre, list(meta["classes"]), meta["config"], meta, graph)
