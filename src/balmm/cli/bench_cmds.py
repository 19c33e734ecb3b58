"""Commands: simulate, bench, aggregate."""

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


def _floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise InputError(f"{what}: expected comma-separated numbers, got {text!r}") from exc


def _ints(text: str | None, what: str) -> list[int] | None:
    vals = _floats(text, what)
    if vals is None:
        return None
    if any(v != int(v) for v in vals):
        raise InputError(f"{what}: expected comma-separated integers, got {text!r}")
    return [int(v) for v in vals]


@app.command(cls=BalmmCommand)
def simulate(
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="FILE.h5mu", help="Output .h5mu file.")
    ],
    samples: Annotated[
        int, typer.Option("--samples", "-n", metavar="N", help="Number of samples.")
    ] = 300,
    classes: Annotated[int, typer.Option("--classes", metavar="N", help="Number of classes.")] = 2,
    modalities: Annotated[
        str,
        typer.Option("--modalities", metavar="LIST", help="Comma-separated modality names."),
    ] = "strong,weak,noise",
    features: Annotated[
        str,
        typer.Option(
            "--features", metavar="LIST", help="Features per modality (one value or one each)."
        ),
    ] = "100",
    signal: Annotated[
        str,
        typer.Option(
            "--signal",
            metavar="LIST",
            help="Class separation per modality in latent sd units; 0 = noise-only. "
            "Default for strong,weak,noise: 2.5,1,0.",
        ),
    ] = "",
    noise: Annotated[
        str, typer.Option("--noise", metavar="LIST", help="Per-feature noise sd.")
    ] = "1",
    informative: Annotated[
        str | None,
        typer.Option(
            "--informative",
            metavar="LIST",
            help="Informative features (default: features/5, >= 5).",
        ),
    ] = None,
    shared: Annotated[
        str,
        typer.Option(
            "--shared", metavar="LIST", help="Shared (vs modality-unique) fraction of the signal."
        ),
    ] = "0.5",
    missing_rate: Annotated[
        str,
        typer.Option(
            "--missing-rate", metavar="LIST", help="Fraction of samples lacking each modality."
        ),
    ] = "0",
    count_like: Annotated[
        bool, typer.Option("--count-like/--continuous", help="Integer counts (NB) or reals.")
    ] = False,
    dispersion: Annotated[
        float,
        typer.Option("--dispersion", metavar="X", help="NB dispersion of counts (0 = Poisson)."),
    ] = 0.2,
    test_size: TestSizeOpt = 0.3,
    latent_dim: Annotated[int, typer.Option("--latent-dim", metavar="N", help="Latent width.")] = 4,
    class_weights: Annotated[
        str | None,
        typer.Option("--class-weights", metavar="LIST", help="Class proportions, e.g. 0.7,0.3."),
    ] = None,
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
    scenario: Annotated[
        str | None,
        typer.Option(
            "--scenario",
            metavar="NAME",
            help="'complementary': 3 classes; 'strong' tells class0 from the rest, 'weak' "
            "class2 from the rest (sets the modalities, features, signal and classes).",
        ),
    ] = None,
) -> None:
    """Simulate paired multi-omics data whose imbalance is known, as one .h5mu file.

    The ground truth (per-modality signal, effective signal-to-noise, informativeness rank,
    noise-only modalities, informative features, realised missing rate) is stored in
    .uns['simulation'], with the Bayes accuracy of each modality and of all of them together
    (continuous data).

    Examples:

      balmm simulate --out sim.h5mu               (a strong, a weak and a noise-only assay)

      balmm simulate -n 1000 --classes 3 --modalities rna,atac --signal 2,0.5 --out sim.h5mu
    """
    from balmm.data.io import write_h5mu
    from balmm.data.simulate import (
        DEFAULT_MODALITIES,
        GROUND_TRUTH_KEY,
        SCENARIOS,
        ModalitySpec,
        simulate,
    )

    if out.suffix != ".h5mu":  # before simulating, which can be long
        raise InputError(f"--out {out}: the output must be a .h5mu file")
    names = [n.strip() for n in modalities.split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise InputError(f"--modalities: need unique names, got {modalities!r}")
    if signal:
        sig = _floats(signal, "--signal")
    elif all(n in DEFAULT_MODALITIES for n in names):
        sig = [DEFAULT_MODALITIES[n].signal for n in names]
    else:
        sig = [1.0]
    cols = {
        "n_features": _ints(features, "--features"),
        "signal": sig,
        "noise": _floats(noise, "--noise"),
        "n_informative": _ints(informative, "--informative"),
        "shared": _floats(shared, "--shared"),
        "missing_rate": _floats(missing_rate, "--missing-rate"),
    }
    specs = {}
    for i, name in enumerate(names):
        kw = {"count_like": count_like, "dispersion": dispersion}
        for key, vals in cols.items():
            if vals is None:
                continue
            if len(vals) not in (1, len(names)):
                raise InputError(
                    f"--{key.replace('n_', '').replace('_', '-')}: give 1 value or "
                    f"{len(names)} (one per modality), got {len(vals)}"
                )
            kw[key] = vals[0] if len(vals) == 1 else vals[i]
        specs[name] = ModalitySpec(**kw)
    if scenario is not None:
        if scenario not in SCENARIOS:
            raise InputError(f"--scenario: unknown {scenario!r}; known: {', '.join(SCENARIOS)}")
        classes, base = SCENARIOS[scenario]
        # the scenario fixes the modalities; shared/missing/count options still apply
        keep = ("shared", "missing_rate", "count_like", "dispersion")
        specs = {
            n: ModalitySpec(**{**vars(s), **{k: getattr(specs[names[0]], k) for k in keep}})
            for n, s in base.items()
        }
    with cli_output(out, "simulate", overwrite=overwrite, kind="file") as run:
        data = simulate(
            n_samples=samples,
            n_classes=classes,
            modalities=specs,
            test_size=test_size,
            latent_dim=latent_dim,
            class_weights=_floats(class_weights, "--class-weights"),
            seed=seed,
        )
        write_h5mu(data, run.work)
        run.commit()
    truth = data.uns[GROUND_TRUTH_KEY]
    rows = [
        [
            name + (" (noise only)" if t["noise_only"] else ""),
            str(t["n_features"]),
            f"{t['signal']:g}",
            f"{t['noise']:g}",
            f"{t['effective_snr']:.2f}",
            "–" if t["bayes_accuracy"] is None else f"{t['bayes_accuracy']:.3f}",
            str(t["informativeness_rank"]),
            f"{t['missing_rate']:.2f}",
        ]
        for name, t in truth["modalities"].items()
    ]
    if truth["bayes_accuracy"] is not None:
        rows.append(
            ["all (fused)", "", "", "", "", f"{truth['bayes_accuracy']['fused']:.3f}", "", ""]
        )
    header = ["modality", "features", "signal", "noise", "eff. SNR", "Bayes acc", "rank", "missing"]
    print_table(f"simulated {samples} samples, {classes} classes -> {out}", header, rows)


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
    from balmm.bench.run import BenchSpec, parse_shard, run_bench
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
