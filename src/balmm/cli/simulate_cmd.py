"""Command: simulate (paired data whose imbalance is known, as one .h5mu file)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from balmm.cli.app import app
from balmm.cli.common import OverwriteOpt, SeedOpt, TestSizeOpt, cli_output
from balmm.cli.console import print_table
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
