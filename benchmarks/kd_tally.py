"""Which distillation edges does ``balmm train`` plan and keep on the bundled real datasets?

For each dataset and seed, print every enabled edge of the distillation plan with whether
it was kept (``accepted``: the student's out-of-fold log-loss fell and macro-F1 rose) and
the OOF log-loss and macro-F1 before and after (docs/results.md, issue-9 targets)::

    .venv/bin/python benchmarks/kd_tally.py --data ../shared/data --seeds 3 [--only brca]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from balmm.data.io import load_inputs
from balmm.training.fit import train


def datasets(d: Path) -> dict[str, tuple[list[str], dict]]:
    """The INPUTS and label options of each dataset (as in docs/bench_results/*/bench.md)."""
    brca, acc, nci = d / "tcga_brca_mixomics/h5ad", d / "tcga_acc_mini", d / "nci60_multidrug"
    return {
        "rosmap": ([str(d / "mogonet_rosmap")], {}),
        "brca": (
            [f"{m}={brca}/{m}.h5ad" for m in ("mrna", "mirna", "protein")],
            {"label_col": "subtype", "split_col": "split"},
        ),
        "acc": (
            [
                f"rna={acc}/rnaseq_gene_norm.csv",
                f"cnv={acc}/cnv_gistic_thresholded.csv",
                f"rppa={acc}/rppa.csv",
                f"mirna={acc}/mirnaseq.csv",
                f"mut={acc}/mutations.csv",
            ],
            {"labels": [acc / "clinical.csv"], "label_col": "C1A.C1B"},
        ),  # fmt: skip
        "nci60": (
            [f"abc={nci}/abc_transporter_expression.csv", f"drug={nci}/compound_activity.csv"],
            {"labels": [nci / "cell_line_class.csv"], "label_col": "tissue_class"},
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data", type=Path)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=None, help="dataset names (default: all)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    for name, (inputs, options) in datasets(args.data).items():
        if args.only and name not in args.only:
            continue
        data = load_inputs(inputs, **options)
        for seed in range(args.seeds):
            res = train(data, seed=seed, threads=1)
            planned = [e for e in res.plan if e.get("enabled")]
            print(f"{name} seed {seed}: {len(res.plan)} pairs, {len(planned)} planned", flush=True)
            for e in planned:
                print(
                    f"  {e['teacher']} -> {e['student']}: kept {e.get('accepted')}, OOF "
                    f"log-loss {e['oof_log_loss_before']:.3f} -> {e['oof_log_loss_after']:.3f}, "
                    f"OOF macro-F1 {e['oof_macro_f1_before']:.3f} -> {e['oof_macro_f1_after']:.3f}"
                )


if __name__ == "__main__":
    main()
