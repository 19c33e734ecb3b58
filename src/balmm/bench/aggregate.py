"""Shard files and their merge: ``balmm bench --shard I/N`` writes a partial result,
``balmm aggregate`` checks that the shards belong together and cover every unit
exactly once, and rebuilds the rows of an unsharded run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from balmm.bench.run import BenchResult, normalise_rows, order_rows
from balmm.bench.spec import BenchSpec, Unit
from balmm.errors import InputError
from balmm.outputs import OutputRun, output_dir, output_path, to_json

PARTIAL = "partial.csv"
TIMING = "timing.csv"
MANIFEST = "manifest.json"


def write_rows_csv(rows: pd.DataFrame, path: Path) -> None:
    """CSV with round-trip float precision, so a re-read frame is bit-identical."""
    rows.to_csv(path, index=False, float_format="%.17g")


def read_rows_csv(path: Path, modalities: list[str]) -> pd.DataFrame:
    return normalise_rows(pd.read_csv(path, float_precision="round_trip"), modalities)


def write_partial(result: BenchResult, out: str | Path | OutputRun) -> Path:
    """A shard's folder: partial.csv (rows), timing.csv and manifest.json (atomic)."""
    with output_dir(out, "bench") as tmp:
        write_rows_csv(result.rows, tmp / PARTIAL)
        result.timing.to_csv(tmp / TIMING, index=False)
        (tmp / MANIFEST).write_text(to_json(result.manifest, indent=2) + "\n")
    return output_path(out)


def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise InputError(f"{folder}: not a bench shard or result folder (no {MANIFEST})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc


def _rows_file(folder: Path) -> Path:
    for name in (PARTIAL, "bench.csv"):
        if (folder / name).is_file():
            return folder / name
    raise InputError(f"{folder}: no {PARTIAL} or bench.csv")


def aggregate(folders: Sequence[str | Path]) -> BenchResult:
    """Merge shard folders (or whole results) of the same benchmark into one result.

    Raises InputError naming the folder when shards come from different benchmarks
    (other data, options or balmm version), overlap, or leave units missing.
    """
    if not folders:
        raise InputError("aggregate needs at least one shard folder")
    folders = [Path(f) for f in folders]
    manifests = [_read_manifest(f) for f in folders]
    first = manifests[0]
    for folder, man in zip(folders[1:], manifests[1:], strict=True):
        for key, what in (("spec", "options"), ("data", "input data")):
            if man.get(key) != first.get(key):
                raise InputError(
                    f"{folder}: shard of a different benchmark ({what} differ from {folders[0]})"
                )
        if man.get("balmm_version") != first.get("balmm_version"):
            raise InputError(f"{folder}: written by balmm {man.get('balmm_version')}, "
                             f"{folders[0]} by {first.get('balmm_version')}")  # fmt: skip
    spec = BenchSpec(**first["spec"])
    all_units = spec.units()
    seen: dict[Unit, Path] = {}
    for folder, man in zip(folders, manifests, strict=True):
        for s, f, m in man["units"]:
            u = Unit(int(s), int(f), str(m))
            if u in seen:
                raise InputError(f"{folder}: unit {u} is also in {seen[u]} (overlapping shards)")
            seen[u] = folder
    missing = [u for u in all_units if u not in seen]
    if missing:
        n = first.get("shard", [1, 1])[1]
        raise InputError(
            f"{len(missing)} of {len(all_units)} units missing (e.g. seed {missing[0].seed} "
            f"fold {missing[0].fold} method {missing[0].method}); were all {n} shards given?"
        )
    modalities = list(first["data"]["modalities"])
    parts = [read_rows_csv(_rows_file(f), modalities) for f in folders]
    rows = pd.concat([p for p in parts if len(p)] or parts[:1])
    rows = order_rows(normalise_rows(rows, modalities), all_units)
    frames = [pd.read_csv(f / TIMING) for f in folders if (f / TIMING).is_file()]
    frames = [t for t in frames if len(t)]  # empty shards (more tasks than units)
    timing = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["seed", "fold", "method", "seconds"])
    )
    manifest = {
        **first,
        "shard": [1, 1],
        "units": [[u.seed, u.fold, u.method] for u in all_units],
        "aggregated_from": [str(f) for f in folders],
    }
    return BenchResult(rows=rows, timing=timing, manifest=manifest)
