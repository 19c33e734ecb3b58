"""Run a benchmark: balancers x seeds x folds plus classic floors, optionally one shard of it.

The work is a fixed, ordered list of *units* ``(seed, fold, method)``, where
``method`` is a balancer name or ``classic`` (all classic floors of that split).
``--shard I/N`` runs every N-th unit starting at the I-th; ``balmm aggregate``
puts the rows back in unit order, so the merged tables equal an unsharded run's. The
spec, the units and the manifest are :mod:`balmm.bench.spec`; this module runs them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from balmm.bench.classic import METRICS, classic_floors
from balmm.bench.spec import (
    CLASSIC,
    HEAD_PREFIX,
    INT_COLS,
    BenchSpec,
    Unit,
    fold_split,
    make_manifest,
    shard_units,
)
from balmm.bench.spec import cv_fold as cv_fold  # benchmarks/ import it from here
from balmm.bench.store import UnitStore, run_parallel
from balmm.data.dataset import TEST, TRAIN, MultiOmicsData
from balmm.errors import InputError
from balmm.progress import NULL_PROGRESS, Progress
from balmm.testpoints import pause_point
from balmm.threads import default_threads

logger = logging.getLogger("balmm")


def _train_rows(data: MultiOmicsData, spec: BenchSpec, unit: Unit) -> list[dict[str, Any]]:
    from balmm.config import load_config
    from balmm.training.fit import train

    cfg = load_config(None, {**spec.config, "seed": unit.seed, "balancer": unit.method})
    result = train(data, config=cfg, device=spec.device)
    test = result.metrics["test"]
    fused = test["fused"]
    row: dict[str, Any] = {
        "kind": "balancer",
        "modality": "fused",
        "n_train": len(data.ids(TRAIN)),
        "n_test": int(fused.get("n", len(data.ids(TEST)))),
    }
    row.update({k: float(fused.get(k, np.nan)) for k in METRICS})
    heads = test.get("modalities", {}) or {}
    for name in data.mods:
        head = heads.get(name) or {}
        row[HEAD_PREFIX + name] = float(head.get("macro_f1", np.nan))
    return [row]


def run_unit(data: MultiOmicsData, spec: BenchSpec, unit: Unit) -> list[dict[str, Any]]:
    """Rows of one unit (each with seed, fold, method, kind, metrics, ``seconds``)."""
    d = fold_split(data, spec, unit.seed, unit.fold)
    if unit.method == CLASSIC:
        rows = classic_floors(
            d,
            d.ids(TRAIN),
            d.ids(TEST),
            seed=unit.seed,
            methods=spec.classic,
            max_features=spec.max_features,
        )
        for r in rows:
            r["kind"] = "classic"
    else:
        rows = _train_rows(d, spec, unit)
        rows[0]["method"] = unit.method
    for r in rows:
        r.update(seed=unit.seed, fold=unit.fold)
    return rows


@dataclass
class BenchResult:
    """Rows (one per method x seed x fold), per-unit wall times and the manifest."""

    rows: pd.DataFrame
    timing: pd.DataFrame
    manifest: dict[str, Any]


def normalise_rows(rows: pd.DataFrame, modalities: list[str]) -> pd.DataFrame:
    """Fixed column order and dtypes, so rows from shards and from one run compare equal."""
    cols = ["seed", "fold", "method", "kind", "modality", "n_train", "n_test", *METRICS]
    cols += [HEAD_PREFIX + m for m in modalities]
    rows = rows.reindex(columns=cols)
    for c in INT_COLS:
        rows[c] = rows[c].astype("int64")
    for c in cols[7:]:
        rows[c] = rows[c].astype("float64")
    return rows.reset_index(drop=True)


def order_rows(rows: pd.DataFrame, units: list[Unit]) -> pd.DataFrame:
    """Sort rows by unit order (classic rows keep their method order within a unit)."""
    pos = {(u.seed, u.fold, u.method): i for i, u in enumerate(units)}
    unit_method = np.where(rows["kind"] == "classic", CLASSIC, rows["method"])
    key = [pos[(s, f, m)] for s, f, m in zip(rows["seed"], rows["fold"], unit_method, strict=True)]
    within = rows.groupby(key, sort=False).cumcount()
    order = np.lexsort((within.to_numpy(), np.asarray(key)))
    return rows.iloc[order].reset_index(drop=True)


_WORKER: dict[str, Any] = {}


def write_worker_data(data: MultiOmicsData, folder: Path) -> Path:
    """``data`` as files in ``folder`` for the bench's worker processes, written once: each
    modality's AnnData as ``.h5ad`` (anndata's writer; dense or CSR float32 as in memory; a
    backed one is read a modality at a time to be written) and the sample table with the
    other small fields as ``data.pkl``. Workers read them (:func:`read_worker_data`)
    instead of each receiving a pickled copy of every matrix."""
    import anndata as ad

    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for i, (name, a) in enumerate(data.mods.items()):
        path = folder / f"mod{i}.h5ad"
        with ad.settings.override(allow_write_nullable_strings=True):
            (a.to_memory() if a.isbacked else a).write_h5ad(path)
        names[name] = path.name
    rest = {k: v for k, v in vars(data).items() if k != "mods"}
    with open(folder / "data.pkl", "wb") as f:
        pickle.dump({"mods": names, "rest": rest}, f, protocol=pickle.HIGHEST_PROTOCOL)
    return folder


def read_worker_data(folder: Path) -> MultiOmicsData:
    """The data :func:`write_worker_data` wrote into ``folder``."""
    import anndata as ad

    with open(folder / "data.pkl", "rb") as f:
        meta = pickle.load(f)
    mods = {name: ad.read_h5ad(folder / file) for name, file in meta["mods"].items()}
    return MultiOmicsData(mods=mods, **meta["rest"])


def _init_worker(data_dir: Path, spec: BenchSpec, threads: int) -> None:
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    # Kept alive for the worker's lifetime: BLAS/OpenMP pools of scikit-learn and numpy.
    _WORKER["limits"] = threadpool_limits(limits=threads)
    _WORKER["data"], _WORKER["spec"] = read_worker_data(data_dir), spec


def _worker_unit(unit: Unit) -> tuple[Unit, list[dict[str, Any]], float]:
    t0 = time.perf_counter()
    rows = run_unit(_WORKER["data"], _WORKER["spec"], unit)
    return unit, rows, time.perf_counter() - t0


def _spread_units(todo: list[Unit], data: MultiOmicsData, spec: BenchSpec, threads: int,
                  finished) -> None:  # fmt: skip
    """The units shared out over torchrun's ranks, each run by one rank alone; every rank
    gets every unit's rows (rank 0 stores and writes them)."""
    import torch
    from threadpoolctl import threadpool_limits

    from balmm.training import distributed

    def one(unit: Unit) -> tuple[list[dict[str, Any]], float]:
        t0 = time.perf_counter()
        return run_unit(data, spec, unit), time.perf_counter() - t0

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            done = distributed.spread(todo, one)
    finally:
        torch.set_num_threads(before)
    for unit, (rows, secs) in zip(todo, done, strict=True):
        finished(unit, rows, secs)


def run_bench(
    data: MultiOmicsData,
    spec: BenchSpec,
    shard: tuple[int, int] = (1, 1),
    jobs: int = 1,
    threads: int = 0,
    progress: Progress = NULL_PROGRESS,
    checkpoints: str | Path | None = None,
    scratch: str | Path | None = None,
) -> BenchResult:
    """Run the units of ``shard`` (all by default), ``jobs`` processes in parallel.

    ``threads``: torch and BLAS/OpenMP threads per process (0 = usable CPUs // jobs). On a
    shared or busy machine 1 is often several times faster than more: the models are
    small and idle thread pools spin.
    ``checkpoints``: a folder where each unit's rows are stored as soon as it finishes;
    units already stored there (by an interrupted run of the same benchmark) are not rerun.
    ``scratch``: where the data are written once for ``jobs`` > 1 (default ``$TMPDIR``; the
    CLI gives its output's work folder, so a killed run leaves nothing elsewhere).
    """
    import torch
    from threadpoolctl import threadpool_limits

    if not data.classes or len(data.classes) < 2:
        raise InputError("bench needs labels with at least 2 classes")
    units = shard_units(spec.units(), shard)
    manifest = make_manifest(data, spec, shard, units)
    results: dict[Unit, tuple[list[dict[str, Any]], float]] = {}
    store = None
    if checkpoints is not None:
        identity = {k: manifest[k] for k in ("balmm_version", "spec", "data", "shard")}
        store = UnitStore(Path(checkpoints), identity)
        for unit in units:
            found = store.load(unit)
            if found is not None:
                results[unit] = found
        if results:
            logger.info("resuming: %d of %d units already finished", len(results), len(units))
    todo = [u for u in units if u not in results]
    progress.start("bench", f"bench shard {shard[0]}/{shard[1]}", total=len(units))
    if results:
        progress.update("bench", advance=len(results))

    def finished(unit: Unit, rows: list[dict[str, Any]], secs: float) -> None:
        results[unit] = (rows, secs)
        if store is not None:
            store.save(unit, rows, secs)
        progress.update("bench", method=unit.method, seed=unit.seed)
        pause_point(f"unit{len(results)}")

    from balmm.training import distributed

    # sfast (issue 12): under torchrun the units are shared out over the ranks
    ranks = distributed.current() is not None
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if ranks else jobs
    threads = threads or default_threads(per_node)
    if ranks:
        _spread_units(todo, data, spec, threads, finished)
    elif jobs <= 1 or len(todo) <= 1:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with threadpool_limits(limits=threads):
                for unit in todo:
                    t0 = time.perf_counter()
                    rows = run_unit(data, spec, unit)
                    finished(unit, rows, time.perf_counter() - t0)
        finally:
            torch.set_num_threads(before)
    else:
        with tempfile.TemporaryDirectory(prefix=".bench-data-", dir=scratch) as folder:
            data_dir = write_worker_data(data, Path(folder))
            runs = run_parallel(todo, jobs, _init_worker, (data_dir, spec, threads), _worker_unit)
            with contextlib.closing(runs):  # an interrupt here terminates the workers at once
                for unit, rows, secs in runs:
                    finished(unit, rows, secs)
    progress.finish("bench")
    all_rows = [r for u in units for r in results[u][0]]
    timing = pd.DataFrame(
        [
            {"seed": u.seed, "fold": u.fold, "method": u.method, "seconds": results[u][1]}
            for u in units
        ],
        columns=["seed", "fold", "method", "seconds"],
    )
    rows = normalise_rows(pd.DataFrame(all_rows), list(data.mods))
    rows = order_rows(rows, spec.units())
    return BenchResult(rows=rows, timing=timing, manifest=manifest)
