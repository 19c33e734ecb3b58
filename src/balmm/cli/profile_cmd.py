"""Command: profile (the imbalance report card of a labelled dataset)."""

from __future__ import annotations

from enum import StrEnum
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
    SeedOpt,
    SplitColOpt,
    TestOpt,
    TestSizeOpt,
    ThreadsOpt,
    VarKeyOpt,
    cli_output,
    imports_out_of_gc,
    input_paths,
    load_from_cli,
)
from balmm.cli.console import out_console, print_table
from balmm.cli.help import BalmmCommand
from balmm.errors import ConfigError


class ProbeKind(StrEnum):
    logreg = "logreg"
    mlp = "mlp"


def _print_summary(result, out: Path) -> None:
    from balmm.profiling.report import fmt_ci

    d = result.to_dict()
    title = "Modality strength (training-set cross-validation, 95% CI)"
    header = ["modality", "n", "macro-F1", "I(X;Y) bits", "Shapley", "teachers"]
    rows = []
    for m, e in d["modalities"].items():
        if "probe" not in e:
            rows.append([m, str(e["n_train_samples"]), "–", "–", "–", "(not probed)"])
            continue
        p = e["probe"]
        teachers = ", ".join(f"{x['teacher']} ({x['weight']:.2f})" for x in e["teachers"])
        rows.append(
            [
                m,
                str(p["n_samples"]),
                fmt_ci(p["macro_f1"], p["macro_f1_ci"]),
                fmt_ci(e["mi_label_bits"], e["mi_label_bits_ci"]),
                f"{d['shapley']['values'].get(m, float('nan')):+.3f}",
                teachers or "–",
            ]
        )
    c = d["concatenated"]
    rows.append(
        [
            "all (concatenated)",
            str(c["probe"]["n_samples"]),
            fmt_ci(c["probe"]["macro_f1"], c["probe"]["macro_f1_ci"]),
            fmt_ci(c["mi_label_bits"], c["mi_label_bits_ci"]),
            "",
            "",
        ]
    )
    print_table(title, header, rows)
    out_console.print("[bold]Verdict[/]")
    for s in d["verdict"]["sentences"]:
        out_console.print(f"  • {s}", highlight=False)
    for w in d["warnings"]:
        out_console.print(f"  [yellow]warning:[/] {w}", highlight=False)
    out_console.print(
        f"Report: {out / 'profile.html'} (also profile.json, profile.md, plots/) "
        f"in {d['timings_s'].get('total', 0):.1f} s",
        highlight=False,
    )


@app.command(cls=BalmmCommand)
def profile(
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
    out: Annotated[
        Path,
        typer.Option("--out", "-o", metavar="DIR", help="Report folder (written atomically)."),
    ] = Path("balmm-profile"),
    max_samples: Annotated[
        int,
        typer.Option(
            "--max-samples",
            min=50,
            metavar="N",
            help="Pairwise MI and outlier detection use a stated random subsample above this "
            "many samples; probes and Shapley values above 10x this many.",
        ),
    ] = 2000,
    n_boot: Annotated[
        int,
        typer.Option(
            "--n-boot", min=0, metavar="N", help="Bootstrap replicates for the intervals."
        ),
    ] = 200,
    device: DeviceOpt = Device.auto,
    probe: Annotated[
        ProbeKind,
        typer.Option(
            "--probe",
            metavar="logreg|mlp",
            help="logreg: scikit-learn logistic regression; mlp: torch MLP.",
        ),
    ] = ProbeKind.logreg,
    estimators: Annotated[
        str,
        typer.Option(
            "--estimators",
            metavar="LIST",
            help="Comma-separated pairwise MI estimators: ksg, gaussian, infonce.",
        ),
    ] = "ksg,gaussian",
    threads: ThreadsOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Profile a labelled dataset before training: per-assay quality, cross-validated
    strength (macro-F1 with intervals), label information I(X;Y) and pairwise
    I(Z_a;Z_b) in bits, the cross-modal distillation plan, Shapley contributions and a
    plain-language verdict. Uses training samples only.

    Examples:

      balmm profile                                  (the bundled ROSMAP example)

      balmm profile data.h5mu --out profile/

      balmm profile mrna=mrna.csv mirna=mirna.csv --labels y.csv --max-samples 5000
    """
    from balmm.cli.progress import make_progress

    with imports_out_of_gc():
        # the report's figures: imported here, out of the collector's rescans too
        import matplotlib.figure  # noqa: F401

        from balmm.profiling.run import ESTIMATORS
        from balmm.profiling.run import profile as run_profile

    est = [e.strip() for e in estimators.split(",") if e.strip()]
    bad = [e for e in est if e not in ESTIMATORS]
    if bad or not est:
        raise ConfigError(
            f"--estimators: unknown {', '.join(bad) or '(empty)'}; choose from "
            f"{', '.join(ESTIMATORS)}"
        )
    if device == Device.cuda:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available")
    protect = input_paths(inputs, labels, test)
    with cli_output(out, "profile", overwrite=overwrite, protect=protect) as run:
        data = load_from_cli(inputs, labels, label_col, test, split_col, test_size, seed, True,
                             no_ids, layer, var_key)  # fmt: skip
        with make_progress() as progress:
            result = run_profile(
                data,
                out=run,
                max_samples=max_samples,
                n_boot=n_boot,
                estimators=est,
                probe=probe.value,
                seed=seed,
                device=device.value,
                threads=threads,
                progress=progress,
            )
    _print_summary(result, out)
