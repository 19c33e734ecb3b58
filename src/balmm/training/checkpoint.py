"""Training checkpoints: every finished unit (a modality's stage 1, a distillation, stage
2) and every ``checkpoint_every`` epochs inside a unit, written atomically into the run's
checkpoint folder. A resumed run skips finished units and continues a unit from its last
state (model, optimiser, best state, patience, history, random streams), so its outputs
are byte-identical to an uninterrupted run's on CPU.

The folder also holds a fingerprint of the resolved config and of the preprocessed data;
resuming from checkpoints of another run is refused (:class:`balmm.errors.InputError`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from balmm.errors import InputError

logger = logging.getLogger("balmm")

FORMAT = 1
MANIFEST = "checkpoint.json"
# keys that cannot change the outputs (where and how fast), so a resume may change them
_NEUTRAL_KEYS = ("device", "threads", "checkpoint_every")


def fingerprint(config: dict[str, Any], processed, split_idx: dict[str, np.ndarray]) -> str:
    """SHA-256 over the output-relevant config and the preprocessed data and split."""
    h = hashlib.sha256()
    cfg = {k: v for k, v in config.items() if k not in _NEUTRAL_KEYS}
    h.update(json.dumps(cfg, sort_keys=True).encode())
    h.update("\0".join(map(str, processed.ids)).encode())
    h.update(np.ascontiguousarray(processed.y).tobytes())
    for m in sorted(processed.X):
        h.update(m.encode())
        x = processed.X[m]  # in row chunks: features on disk (--backed) are never read whole
        for start in range(0, len(x), 8192):
            h.update(np.ascontiguousarray(x[start : start + 8192]).tobytes())
        h.update(np.ascontiguousarray(processed.mask[m]).tobytes())
    for name in sorted(split_idx):
        h.update(name.encode())
        h.update(np.ascontiguousarray(split_idx[name]).tobytes())
    return h.hexdigest()


def _file(unit: str, kind: str) -> str:
    return unit.replace(":", "--").replace("/", "_") + f".{kind}.pt"


class Checkpointer:
    """Saves and restores training units in ``folder`` (None: checkpoints off)."""

    def __init__(self, folder: Path | None, fingerprint: str, every: int) -> None:
        self.folder = None if folder is None else Path(folder)
        self.every = every
        self.resumed_units: list[str] = []
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = self.folder / MANIFEST
        if manifest.exists():
            try:
                saved = json.loads(manifest.read_text())
            except (OSError, ValueError) as exc:
                raise InputError(f"{self.folder}: unreadable checkpoint manifest ({exc})") from exc
            if saved.get("format") != FORMAT or saved.get("fingerprint") != fingerprint:
                raise InputError(
                    f"{self.folder}: these checkpoints belong to another run (different "
                    "config or data); resume with the same inputs and config, or start afresh"
                )
        else:
            self._write_json(manifest, {"format": FORMAT, "fingerprint": fingerprint})

    @property
    def enabled(self) -> bool:
        return self.folder is not None

    # -- finished units ---------------------------------------------------------------
    def done(self, unit: str) -> dict | None:
        """The saved result of a finished unit, or None."""
        st = self._load(_file(unit, "done"))
        if st is not None:
            self.resumed_units.append(unit)
        return st

    def save_done(self, unit: str, payload: dict) -> None:
        if self.folder is None:
            return
        self._save(_file(unit, "done"), payload)
        part = self.folder / _file(unit, "loop")
        part.unlink(missing_ok=True)  # the finished unit supersedes its partial state

    # -- units in progress ------------------------------------------------------------
    def loop_hook(self, unit: str) -> Callable[[Any], None] | None:
        """``on_epoch`` for a :class:`~balmm.training.loop.TrainLoop`: save its state every
        ``every`` epochs (None when checkpoints are off)."""
        if self.folder is None or self.every <= 0:
            return None

        def hook(loop) -> None:
            if loop.epoch % self.every == 0:
                self._save(_file(unit, "loop"), loop.state(), durable=False)

        return hook

    def resume_loop(self, unit: str, loop) -> None:
        """Restore ``loop`` from the unit's partial state, if one was saved. An unreadable
        one (a partial state is not forced to disk, so a system crash may leave it empty)
        is dropped and the unit starts again: its random streams are seeded by the unit,
        so the outputs are the same."""
        try:
            st = self._load(_file(unit, "loop"))
        except InputError as exc:
            logger.warning("%s; unit %s starts again", exc, unit)
            st = None
        if st is not None:
            loop.load_state(st)
            self.resumed_units.append(f"{unit}@{st['epoch']}")

    # -- files ------------------------------------------------------------------------
    def _load(self, name: str) -> dict | None:
        if self.folder is None or not (self.folder / name).exists():
            return None
        try:
            return torch.load(self.folder / name, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a bad checkpoint
            raise InputError(f"{self.folder / name}: unreadable checkpoint ({exc})") from exc

    def _save(self, name: str, payload: dict, durable: bool = True) -> None:
        """Write ``payload`` atomically (a kill leaves the old file or the new one);
        ``durable``: forced to disk first, so a system crash cannot leave it empty either
        (3 ms a file here, a tenth of the checkpointing of a small run: partial loop states,
        written every few epochs and replaceable by training again, are not forced)."""
        assert self.folder is not None
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(payload, fh)
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, self.folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _write_json(self, path: Path, obj: dict) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh)
        os.replace(tmp, path)
