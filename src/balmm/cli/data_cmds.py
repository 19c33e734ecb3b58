"""Commands: inspect (a dry run of loading) and convert (any input -> one .h5mu)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from balmm.cli.app import app
from balmm.cli.common import (
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
    VarKeyOpt,
    cli_output,
    input_paths,
    load_from_cli,
)
from balmm.cli.console import out_console, plain_table, print_table
from balmm.cli.help import BalmmCommand
from balmm.errors import InputError

AllowUnlabelledOpt = Annotated[
    bool,
    typer.Option(
        "--allow-unlabelled/--require-labels",
        help="Accept inputs without usable labels (profile/train would refuse them).",
    ),
]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _tables(info: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table inspect prints."""
    from balmm.data.summary import UNLABELLED  # here: anndata/pandas would slow `balmm --help`

    mods = info["modalities"]
    pairing = info["pairing"]
    out = []
    rows = [
        [
            name,
            str(m["n_samples"]),
            str(m["n_features"]),
            f"{m['missing_values']} ({_pct(m['missing_fraction'])})",
            _pct(m["sparsity"]),
            m["storage"],
            str(m["n_train"]),
            str(m["n_test"]),
        ]
        for name, m in mods.items()
    ]
    out.append(
        (
            "Modalities",
            ["modality", "samples", "features", "missing", "zeros", "X", "train", "test"],
            rows,
        )
    )
    splits = list(pairing["per_split"])
    rows = []
    for name, m in pairing["modalities"].items():
        row = [name, str(m["present"]), str(m["missing"])]
        row += [str(pairing["per_split"][s]["present"][name]) for s in splits]
        rows.append(row)
    row = ["matched (all)", str(pairing["complete"]), str(pairing["partial"])]
    row += [str(pairing["per_split"][s]["complete"]) for s in splits]
    rows.append(row)
    out.append(
        (
            f"Pairing by sample ID ({pairing['n_samples']} samples)",
            ["modality", "present", "missing", *[f"present in {s}" for s in splits]],
            rows,
        )
    )
    if len(pairing["combinations"]) > 1:
        rows = [[k, str(v)] for k, v in pairing["combinations"].items()]
        out.append(("Modality combinations", ["modalities", "samples"], rows))
    labels = info["labels"]
    classes = sorted(
        {c for counts in labels.values() for c in counts}, key=lambda c: (c == UNLABELLED, c)
    )
    rows = [[c, *[str(labels[s].get(c, 0)) for s in labels]] for c in classes]
    mapping = info["label_mapping"]
    if any(mapping.get(c, c) != c for c in classes):
        rows = [[f"{r[0]} (= {mapping[r[0]]})" if r[0] in mapping else r[0], *r[1:]] for r in rows]
    out.append((f"Labels: {info['label_key']}", ["class", *labels], rows))
    return out


def _print_summary(info: dict) -> None:
    head = [
        ("source", info["source"]),
        ("label", str(info["label_key"])),
        ("split", info["split_source"]),
    ]
    if out_console.is_terminal:
        for k, v in head:
            out_console.print(f"[bold]{k}:[/] {v}", highlight=False, soft_wrap=True)
        for title, header, rows in _tables(info):
            print_table(title, header, rows)
        for n in info["notes"]:
            out_console.print(f"[yellow]note:[/] {n}", highlight=False, soft_wrap=True)
        return
    # Plain, aligned text for logs and pipes.
    lines = [f"{k}: {v}" for k, v in head]
    for title, header, rows in _tables(info):
        lines += ["", plain_table(title, header, rows)]
    if info["notes"]:
        lines.append("")
        lines += [f"note: {n}" for n in info["notes"]]
    typer.echo("\n".join(lines))


@app.command(cls=BalmmCommand)
def inspect(
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
    allow_unlabelled: AllowUnlabelledOpt = False,
    json_out: Annotated[
        bool, typer.Option("--json/--tables", help="Print the summary as JSON instead of tables.")
    ] = False,
) -> None:
    """Dry run: show the modalities, pairing and labels per split that would be loaded.

    Tables: modalities (samples, features, missing values, sparsity); pairing by sample ID
    (matched / missing per modality); labels with class counts per split.

    It reads and validates everything a long job would, so bad input fails here: exit code 2
    and one line naming the file, sample or key.

    Examples:

      balmm inspect                    (the bundled ROSMAP example)

      balmm inspect data.h5mu --json

      balmm inspect mrna=mrna.csv cnv=cnv.tsv.gz --labels clin.csv --label-col subtype
    """
    from balmm.data.summary import describe
    from balmm.outputs import to_json

    data = load_from_cli(
        inputs,
        labels,
        label_col,
        test,
        split_col,
        test_size,
        seed,
        require_labels=not allow_unlabelled,
        no_ids=no_ids,
        layer=layer,
        var_key=var_key,
    )
    info = describe(data)
    if json_out:
        typer.echo(to_json(info, indent=2))
    else:
        _print_summary(info)


@app.command(cls=BalmmCommand)
def convert(
    inputs: InputsArg = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", metavar="FILE.h5mu", help="The .h5mu file to write.", show_default=False
        ),
    ] = ...,  # type: ignore[assignment]
    labels: LabelsOpt = None,
    label_col: LabelColOpt = None,
    test: TestOpt = None,
    split_col: SplitColOpt = None,
    test_size: TestSizeOpt = 0.3,
    seed: SeedOpt = 0,
    no_ids: NoIdsOpt = False,
    layer: LayerOpt = None,
    var_key: VarKeyOpt = None,
    allow_unlabelled: AllowUnlabelledOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write any accepted input as one MuData (.h5mu) file with labels and split in .obs.

    One mod per modality; `label` and `split` in the global .obs; metadata in .uns['balmm'].
    `balmm inspect OUT.h5mu` shows the same summary as the original input.

    Examples:

      balmm convert mrna=mrna.csv prot=prot.h5ad --labels y.csv --out data.h5mu

      balmm convert ROSMAP/ --out rosmap.h5mu        (a MOGONET folder)
    """
    from balmm.data.io import write_h5mu
    from balmm.data.summary import describe

    if out.suffix.lower() != ".h5mu":
        raise InputError(f"--out {out}: the output file must end in .h5mu")
    protect = input_paths(inputs, labels, test)
    with cli_output(out, "convert", overwrite=overwrite, protect=protect, kind="file") as run:
        data = load_from_cli(
            inputs,
            labels,
            label_col,
            test,
            split_col,
            test_size,
            seed,
            require_labels=not allow_unlabelled,
            no_ids=no_ids,
            layer=layer,
            var_key=var_key,
        )
        write_h5mu(data, run.work)
        run.commit()
    _print_summary(describe(data))
    typer.echo(f"wrote {out}")
