"""Options shared by the commands that read INPUTS, and the call that loads them."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shlex
import sys
import tomllib
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from balmm.errors import ConfigError, InputError
from balmm.testpoints import pause_point

if TYPE_CHECKING:
    from balmm.outputs import OutputRun

InputsArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="INPUTS",
        help="One .h5mu file; or NAME=PATH pairs (.h5ad, .csv, .tsv, optionally .gz); or a "
        "MOGONET or Flexynesis folder. Nothing: the bundled ROSMAP example.",
        show_default=False,
    ),
]
LabelsOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--labels",
        metavar="FILE",
        help="CSV/TSV of labels, first column = sample ID (repeatable: files are stacked).",
    ),
]
LabelColOpt = Annotated[
    str | None,
    typer.Option(
        "--label-col", metavar="COL", help="Column of --labels (or of .obs) that holds the label."
    ),
]
TestOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--test",
        metavar="FILE|NAME=PATH",
        help="The given test split: a file of test sample IDs (first column), or NAME=PATH "
        "files holding the test samples of modality NAME (repeatable).",
    ),
]
SplitColOpt = Annotated[
    str | None,
    typer.Option(
        "--split-col",
        metavar="COL",
        help="Column (of --labels or .obs) with train/test per sample.",
    ),
]
TestSizeOpt = Annotated[
    float,
    typer.Option(
        "--test-size",
        min=0.05,
        max=0.9,
        metavar="FRACTION",
        help="Test fraction when no split is given.",
    ),
]
SeedOpt = Annotated[
    int,
    typer.Option(
        "--seed",
        metavar="N",
        help="Random seed (splits, models, resampling); the same seed gives byte-identical "
        "outputs on CPU.",
    ),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        metavar="N",
        show_default=False,
        help="CPU threads for torch and BLAS, per process. Unset: automatic (1 for small "
        "data, else the CPUs this job may use: affinity, cgroup quota, SLURM_CPUS_PER_TASK; "
        "shared among --jobs).",
    ),
]
NoIdsOpt = Annotated[
    bool,
    typer.Option(
        "--no-ids/--ids",
        help="NAME=PATH and --labels files have no sample-ID column (only a header): rows are "
        "paired by position and named row_0001, ... (every file needs the same row count).",
    ),
]
LayerOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--layer",
        metavar="[NAME=]LAYER",
        help="Read this AnnData/MuData layer instead of .X (e.g. counts): LAYER for every "
        "modality or NAME=LAYER per modality (repeatable).",
    ),
]
VarKeyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--var-key",
        metavar="[NAME=]COL",
        help="Boolean .var column selecting the features to use (e.g. highly_variable): COL "
        "for every modality or NAME=COL per modality (repeatable).",
    ),
]
BackedOpt = Annotated[
    bool | None,
    typer.Option(
        "--backed/--in-memory",
        help="Leave .h5ad/.h5mu matrices on disk and stream them in chunks (anndata backed "
        "mode); preprocessed features go to a scratch file under $TMPDIR. Default: backed "
        "only for a matrix over 4 GiB as float32.",
        show_default=False,
    ),
]


def load_from_cli(
    inputs: list[str] | None,
    labels: list[Path] | None,
    label_col: str | None,
    test: list[str] | None,
    split_col: str | None,
    test_size: float,
    seed: int,
    require_labels: bool = True,
    no_ids: bool = False,
    layer: list[str] | None = None,
    var_key: list[str] | None = None,
    backed: bool | None = False,
):
    """Load INPUTS through the data layer (errors propagate as InputError -> exit 2)."""
    from balmm.data.anndata_input import parse_per_modality
    from balmm.data.io import load_inputs

    pause_point("load")
    return load_inputs(
        inputs or [],
        labels=labels or [],
        label_col=label_col,
        test=test or [],
        split_col=split_col,
        test_size=test_size,
        seed=seed,
        require_labels=require_labels,
        no_ids=no_ids,
        layer=parse_per_modality(layer, "--layer"),
        var_key=parse_per_modality(var_key, "--var-key"),
        backed=backed,
    )


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


DeviceOpt = Annotated[
    Device,
    typer.Option("--device", metavar="auto|cpu|cuda", help="auto: CUDA when present, else CPU."),
]


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``--set KEY=VALUE`` (repeatable) -> {key: value}; a value is read as a TOML literal,
    else kept as the plain string."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value.strip()
    return out


OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite/--no-overwrite",
        help="Replace an existing --out even if it is not a complete output of this command.",
    ),
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume/--no-resume",
        help="Continue an interrupted run into the same --out from its checkpoints "
        "(nothing to resume: a warning, then a fresh start).",
    ),
]


def input_paths(*groups: list[str] | list[Path] | Path | str | None) -> list[Path]:
    """The existing files and folders named by INPUTS, NAME=PATH pairs, --labels, --test,
    --config or a model folder: an output must never replace or lie inside one of them."""
    found: list[Path] = []
    for group in groups:
        if group is None:
            continue
        items = group if isinstance(group, list) else [group]
        for item in items:
            text = str(item)
            cands = [text]
            if "=" in text:
                cands.append(text.partition("=")[2])
            found += [Path(c) for c in cands if c and Path(c).exists()]
    return found


def check_device(device: str | None) -> None:
    """--device, checked before any data is read (``cuda`` needs a CUDA device here)."""
    if device is None or device in ("auto", "cpu"):
        return
    if device != "cuda":
        raise ConfigError(f"--device {device}: choose auto, cpu or cuda")
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")


@contextlib.contextmanager
def cli_output(
    out: Path,
    command: str,
    *,
    overwrite: bool = False,
    resume: bool = False,
    protect: list[Path] = (),  # type: ignore[assignment]
    kind: str = "dir",
) -> Iterator[OutputRun]:
    """Open ``--out`` (checked, probed and locked) before any data is read; the crash log
    of an internal error then goes beside it."""
    from balmm.cli.state import state
    from balmm.outputs import open_output

    if command not in ("train", "bench") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # only train and bench are rank-aware; N copies of another would race for one --out
        raise InputError(
            f"balmm {command} does not run under torchrun (WORLD_SIZE="
            f"{os.environ['WORLD_SIZE']}): only balmm train and bench do; run {command} as "
            "one process"
        )
    state.out = out
    run = None
    try:
        with open_output(out, command, overwrite=overwrite, resume=resume, protect=protect,
                         kind=kind) as run:  # fmt: skip
            pause_point("open")
            yield run
    except BaseException:
        if run is not None and run.checkpoints.is_dir() and any(run.checkpoints.iterdir()):
            argv = ["balmm", *sys.argv[1:]]
            logging.getLogger("balmm").warning(
                "to continue: %s", shlex.join(argv + ([] if "--resume" in argv else ["--resume"]))
            )
        raise


# set when a command froze the garbage collector's view (main() thaws it when it returns)
_FROZEN: list[bool] = [False]


@contextlib.contextmanager
def imports_out_of_gc() -> Iterator[None]:
    """Import a command's libraries with the cyclic garbage collector paused, then freeze
    every object that exists (``gc.freeze``): otherwise each of its full passes rescans the
    few hundred thousand objects torch, scikit-learn, pandas and matplotlib create, six
    times in a small ``balmm train`` (0.7-1.2 s here). Long-lived module objects are what
    is frozen; :func:`thaw_gc` (the end of ``main``) hands them back to the collector."""
    if gc.get_freeze_count() and not _FROZEN[0]:  # frozen by the caller: leave it be
        yield
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        _FROZEN[0] = True
        if enabled:
            gc.enable()


def thaw_gc() -> None:
    """Undo :func:`imports_out_of_gc` (for callers of ``main`` in a longer process)."""
    if _FROZEN[0]:
        gc.unfreeze()
        _FROZEN[0] = False
