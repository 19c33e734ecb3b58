"""Commands: train and predict (thin: parse options, call the library, print a summary)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from balmm.cli.app import app
from balmm.cli.common import (
    BackedOpt,
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
    imports_out_of_gc,
    input_paths,
    load_from_cli,
    parse_sets,
)
from balmm.cli.console import out_console, print_table
from balmm.cli.help import BalmmCommand
from balmm.config import TrainConfig
from balmm.errors import InputError

# The defaults --help shows are TrainConfig's; a flag overrides --config only when given.
DEFAULTS = TrainConfig()


class BalancerName(StrEnum):
    balmm = "balmm"
    none = "none"
    concat = "concat"
    uncertainty = "uncertainty"
    ogm_ge = "ogm-ge"


class EncoderName(StrEnum):
    linear = "linear"
    mlp = "mlp"
    gcn = "gcn"


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was given (command line or environment), not defaulted."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _f(v: Any) -> str:
    return "–" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def _summary(result) -> None:
    m = result.metrics
    p = m["protocol"]
    title = f"balmm train · balancer {p['balancer']} · encoder {p['encoder']}" + (
        f" ({p['graph'].upper()})" if p.get("graph") else ""
    )
    header = ["split", "head", "n", "accuracy", "bal. acc", "macro-F1", "AUROC", "weight"]
    w = m["imbalance"]["weights"]
    rows = []
    for split in ("val", "test"):
        heads = {"fused": m[split]["fused"], **m[split]["modalities"]}
        for h, v in heads.items():
            if v.get("n", 0) == 0:
                continue
            rows.append([split, h, str(v["n"]), _f(v["accuracy"]), _f(v["balanced_accuracy"]),
                         _f(v["macro_f1"]), _f(v["auroc"]), _f(w.get(h))])  # fmt: skip
    print_table(title, header, rows, n_left=2)
    plan = result.plan
    if plan:
        on = [f"{e['teacher']}→{e['student']}" for e in plan if e["enabled"]]
        txt = ", ".join(on) if on else "no pair enabled"
        skipped = len(plan) - len(on)
        out_console.print(f"distillation: {txt} ({skipped} pairs skipped; reasons in metrics.json)")
    for mod, why in m["imbalance"]["excluded_from_fusion"].items():
        out_console.print(f"[yellow]{mod}[/]: {why}")
    by_folds = p.get("decisions", {}).get("stage2_epochs", {}).get("kind") == "crossfit"
    how = "(the count from the cross-fitting folds)" if by_folds else "on validation fused macro-F1"
    out_console.print(
        f"selected epoch {p['selected_epoch']} {how}; test evaluated once"
        f" · {result.timing.get('total_s', float('nan')):.1f} s"
    )
    if result.out is not None:
        out_console.print(f"outputs: {result.out}")


@app.command(cls=BalmmCommand)
def train(
    ctx: typer.Context,
    inputs: InputsArg = None,
    labels: LabelsOpt = None,
    label_col: LabelColOpt = None,
    test: TestOpt = None,
    split_col: SplitColOpt = None,
    test_size: TestSizeOpt = 0.3,
    no_ids: NoIdsOpt = False,
    layer: LayerOpt = None,
    var_key: VarKeyOpt = None,
    backed: BackedOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Output folder.")] = Path(
        "balmm-train"
    ),
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help="TOML file of hyper-parameters (docs/method.md); the options below, when "
            "given, override it.",
        ),
    ] = None,
    balancer: Annotated[
        BalancerName,
        typer.Option(
            "--balancer",
            metavar="NAME",
            help="balmm, or a baseline: none, concat, uncertainty, ogm-ge.",
        ),
    ] = BalancerName(DEFAULTS.balancer),
    seed: SeedOpt = DEFAULTS.seed,
    device: DeviceOpt = Device(DEFAULTS.device),
    threads: ThreadsOpt = None,
    encoder: Annotated[
        EncoderName, typer.Option("--encoder", metavar="linear|mlp|gcn", help="Encoder per assay.")
    ] = EncoderName(DEFAULTS.encoder),
    transductive: Annotated[
        bool,
        typer.Option(
            "--transductive/--inductive",
            help="gcn: build the graph over all samples' features (MOGONET-style; named in "
            "every output) instead of attaching test samples to training samples only.",
        ),
    ] = DEFAULTS.transductive,
    epochs: Annotated[
        int,
        typer.Option(
            "--epochs",
            min=1,
            metavar="N",
            help="Stage-2 and distillation epochs (at most: early stopping).",
        ),
    ] = DEFAULTS.epochs,
    kd_epochs: Annotated[
        int | None,
        typer.Option(
            "--kd-epochs",
            min=0,
            metavar="N",
            help="Distillation epochs per student (default: --epochs when given, else the "
            "config's kd_epochs).",
        ),
    ] = None,
    time_budget: Annotated[
        float | None,
        typer.Option(
            "--time-budget",
            min=0,
            metavar="SECONDS",
            help="Wall-clock limit per stage (stage 1, distillation, stage 2): a stage that "
            "spends it stops at an epoch boundary, noted in history.jsonl and metrics.json.",
        ),
    ] = None,
    folds: Annotated[
        int,
        typer.Option(
            "--folds",
            min=0,
            metavar="K",
            help="Cross-fitting folds for the decisions (0 or 1: one validation carve).",
        ),
    ] = DEFAULTS.folds,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Override any config key, e.g. --set lr=0.002 (repeatable).",
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
) -> None:
    """Train a balanced multimodal classifier: stage 1 (each assay alone, plus cross-modal
    distillation where the plan enables it), then stage 2 (balanced joint training).

    Model selection uses a stratified validation split of the training data; the test
    split is evaluated once, at the end. Writes metrics.json, predictions.csv,
    history.jsonl, model/, report.html and plots/ (docs/outputs.md).

    Examples:

      balmm train --out run1                          (the bundled ROSMAP example)

      balmm train data.h5mu --balancer none --seed 1 --out run-none

      balmm train mrna=mrna.csv meth=meth.csv --labels y.csv --config hp.toml --out run2
    """
    from balmm.cli.progress import make_progress
    from balmm.config import load_config

    with imports_out_of_gc():
        # the report's figures: imported here, out of the collector's rescans too
        import matplotlib.figure  # noqa: F401
        import scanpy  # noqa: F401

        from balmm.training.fit import train as fit_train

    overrides = parse_sets(set_)
    flags = {
        "balancer": balancer.value,
        "seed": seed,
        "device": device.value,
        "threads": threads,
        "encoder": encoder.value,
        "transductive": transductive,
        "epochs": epochs,
        "kd_epochs": kd_epochs,
        "time_budget": time_budget,
        "folds": folds,
    }
    overrides.update({k: v for k, v in flags.items() if _given(ctx, k) and v is not None})
    if "epochs" in overrides:  # distillation epochs follow --epochs unless set explicitly
        overrides.setdefault("kd_epochs", overrides["epochs"])
    cfg = load_config(config, overrides)
    check_device(cfg.device)
    from balmm.training import distributed

    if distributed.launched():  # under torchrun (docs/hpc.md)
        if resume:
            raise InputError("--resume is not available under torchrun (rank 0 alone holds "
                             "the checkpoints): resume it as a single process")  # fmt: skip
        if distributed.env_rank() > 0:  # rank 0 alone checks --out, writes and prints
            data = load_from_cli(inputs, labels, label_col, test, split_col, test_size,
                                 cfg.seed, no_ids=no_ids, layer=layer, var_key=var_key)  # fmt: skip
            fit_train(data, cfg)
            return
    protect = input_paths(inputs, labels, test, config)
    with cli_output(out, "train", overwrite=overwrite, resume=resume, protect=protect) as run:
        data = load_from_cli(inputs, labels, label_col, test, split_col, test_size, cfg.seed,
                             no_ids=no_ids, layer=layer, var_key=var_key,
                             backed=backed)  # fmt: skip
        with make_progress() as progress:
            # the raw values are freed once preprocessed (the CLI needs them no more)
            result = fit_train(data, cfg, out=run, progress=progress, release_raw=True)
    _summary(result)


@app.command(cls=BalmmCommand)
def predict(
    model_dir: Annotated[
        Path,
        typer.Argument(
            metavar="MODEL_DIR", help="A model folder (train --out DIR, or its model/ subfolder)."
        ),
    ],
    inputs: InputsArg = None,
    labels: LabelsOpt = None,
    label_col: LabelColOpt = None,
    no_ids: NoIdsOpt = False,
    layer: LayerOpt = None,
    var_key: VarKeyOpt = None,
    backed: BackedOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Output folder.")] = Path(
        "balmm-predict"
    ),
    device: DeviceOpt = Device.auto,
    overwrite: OverwriteOpt = False,
) -> None:
    """Apply a trained model to new samples (labels optional: metrics when present).

    Samples missing an assay are predicted from the assays they have (column
    modalities_used of predictions.csv).

    Examples:

      balmm predict run1 new.h5mu --out run1-new

      balmm predict run1 mrna=new_mrna.csv meth=new_meth.csv --out run1-new
    """
    from balmm.cli.progress import make_progress

    with imports_out_of_gc():  # what a prediction imports, out of the collector's rescans
        import balmm.data.io  # noqa: F401
        import balmm.training.evaluate  # noqa: F401
        import balmm.training.fit  # noqa: F401
        from balmm.model.bundle import read_meta
        from balmm.predict import predict as run_predict

    check_device(device.value)
    protect = [model_dir, *input_paths(inputs, labels)]
    with cli_output(out, "predict", overwrite=overwrite, protect=protect) as run:
        read_meta(model_dir)  # a missing or damaged model fails before any data is read
        data = load_from_cli(inputs, labels, label_col, None, None, 0.3, 0,
                             require_labels=False, no_ids=no_ids, layer=layer,
                             var_key=var_key, backed=backed)  # fmt: skip
        with make_progress() as progress:
            df = run_predict(model_dir, data, out=run, device=device.value, progress=progress,
                             release_raw=True)  # fmt: skip
    lab = df["true"].notna()
    line = f"{len(df)} samples predicted"
    if lab.any():
        acc = float((df.loc[lab, "true"] == df.loc[lab, "predicted"]).mean())
        line += f"; accuracy on the {int(lab.sum())} labelled: {acc:.3f}"
    n_used = df["modalities_used"].fillna("").map(lambda v: len([x for x in v.split(";") if x]))
    partial = int((n_used < n_used.max()).sum())
    if partial:
        line += f"; {partial} predicted from a subset of modalities (see modalities_used)"
    out_console.print(line)
    out_console.print(f"outputs: {out}")
