"""Commands: bench, aggregate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from balmm.cli.app import app
from balmm.cli.common import (
    Device,
    DeviceOpt,
    InputsArg,
    LabelColOpt,
    LabelsOpt,
    LayerOpt,
    NoIdsOpt,
    OverwriteOpt,
    ResumeOpt,
    SeedOpt,
    SplitColOpt,
    TestOpt,
    TestSizeOpt,
    ThreadsOpt,
    VarKeyOpt,
    check_device,
    cli_output,
    input_paths,
    load_from_cli,
    parse_sets,
)
from balmm.cli.console import out_console, print_table
from balmm.cli.help import BalmmCommand
from balmm.errors import InputError


def _names(text: str) -> list[str]:
    if text.strip().lower() in ("", "-"):
        return []
    return [v.strip() for v in text.split(",") if v.strip()]


def _mean_sd(mean: float, sd: float) -> str:
    if mean != mean:  # NaN: no test samples for this input
        return "–"
    return f"{mean:.3f}" if sd != sd else f"{mean:.3f}±{sd:.3f}"


def _print_summary(tables: dict, out: Path) -> None:
    summary = tables["summary"]
    metrics = ["accuracy", "macro_f1", "auroc"]
    rows = []
    for method, sub in summary.groupby("method", sort=False):
        sub = sub.set_index("metric")
        cells = [_mean_sd(sub.loc[m, "mean"], sub.loc[m, "sd"]) for m in metrics]
        rows.append([str(method), str(int(sub["n"].max())), *cells])
    title = f"balmm bench (test, mean ± sd over seeds) -> {out}"
    print_table(title, ["method", "seeds", "ACC", "macro-F1", "AUROC"], rows)


@app.command(cls=BalmmCommand)
def bench(
    inputs: InputsArg = None,
    labels: LabelsOpt = None,
    label_col: LabelColOpt = None,
    test: TestOpt = None,
    split_col: SplitColOpt = None,
    test_size: TestSizeOpt = 0.3,
    seed: SeedOpt = 0,
    no_ids: NoIdsOpt = False,
    layer: LayerOpt = None,
    var_key: VarKeyOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Output folder.")] = Path(
        "bench"
    ),
    balancers: Annotated[
        str,
        typer.Option(
            "--balancers",
            metavar="LIST",
            help="Comma-separated balancers (balmm, none, concat, uncertainty, ogm-ge); "
            "'' or - for classic floors only.",
        ),
    ] = "balmm,none,concat,uncertainty,ogm-ge",
    seeds: Annotated[
        int, typer.Option("--seeds", min=1, metavar="N", help="Number of seeds.")
    ] = 10,
    first_seed: Annotated[
        int, typer.Option("--first-seed", metavar="N", help="First seed value.")
    ] = 0,
    cv: Annotated[
        int | None,
        typer.Option(
            "--cv", metavar="K", help="Repeated stratified K-fold over all labelled samples."
        ),
    ] = None,
    classic: Annotated[
        str,
        typer.Option(
            "--classic",
            metavar="LIST",
            help="Classic floors: logreg,svm,hgb,stacked-logreg or none.",
        ),
    ] = "logreg,svm,hgb,stacked-logreg",
    config: Annotated[
        Path | None,
        typer.Option("--config", metavar="FILE", help="TOML training config (as balmm train)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="Training config override (repeatable)."),
    ] = None,
    device: DeviceOpt = Device.auto,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=1, metavar="N", help="Parallel processes.")
    ] = 1,
    threads: ThreadsOpt = None,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            metavar="I/N",
            help="Run only slice I of N (I/N, 1-based); merge with aggregate.",
        ),
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference", metavar="NAME", help="Published numbers to show (mogonet-rosmap)."
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
) -> None:
    """Compare balancers over seeds (and folds) with classic floors, honestly.

    Writes bench.csv (one row per method x seed x fold), summary/paired/heads tables,
    bench.md and a self-contained bench.html. With --shard I/N it writes the I-th slice
    (partial.csv + manifest.json) for `balmm aggregate`.

    Examples:

      balmm bench --seeds 5 --out bench-rosmap       (the bundled ROSMAP example)

      balmm bench data.h5mu --balancers balmm,none --jobs 2 --threads 1 --out bench1

      balmm bench data.h5mu --shard 3/10 --out shards/3   (one task of a job array)
    """
    import time

    from balmm.bench.aggregate import write_partial
    from balmm.bench.report import write_report
    from balmm.bench.run import run_bench
    from balmm.bench.spec import BenchSpec, parse_shard
    from balmm.cli.progress import make_progress
    from balmm.config import load_config

    overrides = parse_sets(set_)
    cfg = load_config(config, overrides)  # validates the file and keys before any work
    defaults = type(cfg)().to_dict()
    given = {k: v for k, v in cfg.to_dict().items() if v != defaults[k]}
    given.pop("seed", None)
    given.pop("balancer", None)
    spec = BenchSpec(
        balancers=_names(balancers),
        seeds=list(range(first_seed, first_seed + seeds)),
        cv=cv,
        classic=[c for c in _names(classic) if c.lower() != "none"],
        config=given,
        device=device.value,
        reference=reference,
    )
    shard_t = parse_shard(shard)
    check_device(device.value)
    from balmm.training import distributed

    if distributed.launched():  # sfast (issue 12): torchrun shares the units over the ranks
        if resume:
            raise InputError("--resume is not available under torchrun (rank 0 alone holds "
                             "the checkpoints): resume it as a single process")  # fmt: skip
        distributed.init_units(device.value)
        if distributed.env_rank() > 0:  # rank 0 alone checks --out, writes and prints
            data = load_from_cli(inputs, labels, label_col, test, split_col, test_size, seed,
                                 no_ids=no_ids, layer=layer, var_key=var_key)  # fmt: skip
            run_bench(data, spec, shard=shard_t, threads=threads or 0)
            return
    protect = input_paths(inputs, labels, test, config)
    with cli_output(out, "bench", overwrite=overwrite, resume=resume, protect=protect) as run:
        data = load_from_cli(inputs, labels, label_col, test, split_col, test_size, seed,
                             no_ids=no_ids, layer=layer, var_key=var_key)  # fmt: skip
        t0 = time.perf_counter()
        with make_progress() as progress:
            result = run_bench(data, spec, shard=shard_t, jobs=jobs, threads=threads or 0,
                               progress=progress,
                               checkpoints=run.checkpoints / "bench",
                               scratch=run.work)  # fmt: skip
        secs = time.perf_counter() - t0
        if shard_t != (1, 1):
            write_partial(result, run)
        else:
            tables = write_report(result, run)
    if shard_t != (1, 1):
        out_console.print(
            f"shard {shard_t[0]}/{shard_t[1]}: {len(result.manifest['units'])} units in "
            f"{secs:.1f} s -> {out} (merge with: balmm aggregate SHARD_DIRS... --out DIR)"
        )
        return
    _print_summary(tables, out)
    out_console.print(f"{len(result.rows)} rows in {secs:.1f} s; report: {out / 'bench.html'}")


@app.command(cls=BalmmCommand)
def aggregate(
    shards: Annotated[
        list[Path],
        typer.Argument(metavar="SHARD_DIR", help="Shard folders of one `balmm bench`."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Output folder.")] = Path(
        "bench"
    ),
    overwrite: OverwriteOpt = False,
) -> None:
    """Merge `balmm bench --shard I/N` folders into the tables of an unsharded run.

    Each SHARD_DIR is the --out of one `balmm bench --shard I/N` task.

    Example:

      balmm aggregate shards/* --out bench-all
    """
    from balmm.bench.aggregate import aggregate as merge
    from balmm.bench.report import write_report

    with cli_output(out, "aggregate", overwrite=overwrite, protect=list(shards)) as run:
        result = merge(shards)
        tables = write_report(result, run, command="aggregate")
    _print_summary(tables, out)
    out_console.print(f"merged {len(shards)} shard(s), {len(result.rows)} rows -> {out}")
