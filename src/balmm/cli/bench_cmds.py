"""Commands: simulate, bench, aggregate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from balmm.cli.app import app
from balmm.cli.console import out_console
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


def _one_or_many(vals: list | None):
    """A single value applies to every modality; several give one per modality."""
    if vals is None:
        return None
    return vals[0] if len(vals) == 1 else vals


@app.command()
def simulate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .h5mu file.")],
    samples: Annotated[int, typer.Option("--samples", "-n", help="Number of samples.")] = 300,
    classes: Annotated[int, typer.Option("--classes", help="Number of classes.")] = 2,
    modalities: Annotated[
        str,
        typer.Option("--modalities", help="Comma-separated modality names."),
    ] = "strong,weak,noise",
    features: Annotated[
        str, typer.Option("--features", help="Features per modality (one value or one each).")
    ] = "100",
    signal: Annotated[
        str,
        typer.Option(
            "--signal",
            help="Class separation per modality in latent sd units; 0 = noise-only. "
            "Default for strong,weak,noise: 2.5,1,0.",
        ),
    ] = "",
    noise: Annotated[str, typer.Option("--noise", help="Per-feature noise sd.")] = "1",
    informative: Annotated[
        str | None,
        typer.Option("--informative", help="Informative features (default: features/5, >= 5)."),
    ] = None,
    shared: Annotated[
        str,
        typer.Option("--shared", help="Shared (vs modality-unique) fraction of the signal."),
    ] = "0.5",
    missing_rate: Annotated[
        str,
        typer.Option("--missing-rate", help="Fraction of samples lacking each modality."),
    ] = "0",
    count_like: Annotated[
        bool, typer.Option("--count-like/--continuous", help="Integer counts (NB) or reals.")
    ] = False,
    dispersion: Annotated[
        float, typer.Option("--dispersion", help="NB dispersion of counts (0 = Poisson).")
    ] = 0.2,
    test_size: Annotated[float, typer.Option("--test-size", min=0.05, max=0.9)] = 0.3,
    latent_dim: Annotated[int, typer.Option("--latent-dim", help="Latent width.")] = 8,
    class_weights: Annotated[
        str | None, typer.Option("--class-weights", help="Class proportions, e.g. 0.7,0.3.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
) -> None:
    """Simulate paired multi-omics data whose imbalance is known, as one .h5mu file.

    The ground truth (per-modality signal, effective signal-to-noise, informativeness rank,
    noise-only modalities, informative features, realised missing rate) is stored in
    .uns['simulation'].
    """
    from rich.table import Table

    from balmm.data.io import write_h5mu
    from balmm.data.simulate import DEFAULT_MODALITIES, ModalitySpec, simulate

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
    data = simulate(
        n_samples=samples,
        n_classes=classes,
        modalities=specs,
        test_size=test_size,
        latent_dim=latent_dim,
        class_weights=_floats(class_weights, "--class-weights"),
        seed=seed,
    )
    if out.suffix != ".h5mu":
        raise InputError(f"--out {out}: the output must be a .h5mu file")
    write_h5mu(data, out)
    truth = data.uns["simulation"]
    table = Table(title=f"simulated {samples} samples, {classes} classes -> {out}")
    for col in ("modality", "features", "signal", "noise", "eff. SNR", "rank", "missing"):
        table.add_column(col, justify="left" if col == "modality" else "right")
    for name, t in truth["modalities"].items():
        table.add_row(
            name + (" (noise only)" if t["noise_only"] else ""),
            str(t["n_features"]),
            f"{t['signal']:g}",
            f"{t['noise']:g}",
            f"{t['effective_snr']:.2f}",
            str(t["informativeness_rank"]),
            f"{t['missing_rate']:.2f}",
        )
    out_console.print(table)
