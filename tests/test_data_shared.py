"""Readers on the real datasets in ../shared/data (skipped where it is absent)."""

from __future__ import annotations

import numpy as np
import pytest

from balmm.cli import main
from balmm.data.io import example_path, load_inputs, read_h5mu

pytestmark = pytest.mark.shared


def test_rosmap_folder_equals_bundled_example(shared_data):
    d = load_inputs([str(shared_data / "mogonet_rosmap")])
    ex = read_h5mu(example_path("rosmap"))
    assert list(d.mods) == list(ex.mods) == ["mrna", "methylation", "mirna"]
    for m in d.mods:
        np.testing.assert_array_equal(d.mods[m].X, ex.mods[m].X)
        assert list(d.mods[m].var_names) == list(ex.mods[m].var_names)
    assert (d.obs["label"].to_numpy() == ex.obs["label"].to_numpy()).all()
    assert (d.obs["split"].to_numpy() == ex.obs["split"].to_numpy()).all()


def test_brca_csv_with_test_files_equals_h5ad(shared_data):
    b = shared_data / "tcga_brca_mixomics"
    csv = load_inputs(
        [
            f"mrna={b / 'mrna_train.csv'}",
            f"mirna={b / 'mirna_train.csv'}",
            f"protein={b / 'protein_train.csv'}",
        ],
        labels=[b / "subtype_train.csv", b / "subtype_test.csv"],
        test=[f"mrna={b / 'mrna_test.csv'}", f"mirna={b / 'mirna_test.csv'}"],
    )
    h5 = load_inputs([f"{m}={b / 'h5ad' / m}.h5ad" for m in ("mrna", "mirna", "protein")])
    assert set(h5.obs.index) == set(csv.obs.index)
    o = h5.obs.loc[csv.obs.index]
    assert (o["label"] == csv.obs["label"]).all() and (o["split"] == csv.obs["split"]).all()
    for m in csv.mods:
        ids = csv.mods[m].obs_names
        np.testing.assert_allclose(h5.mods[m][ids].X, csv.mods[m].X, rtol=1e-6)
    assert h5.classes == ["Basal", "Her2", "LumA"]
    assert csv.presence().groupby(csv.obs["split"])["protein"].sum().to_dict() == {
        "test": 0,
        "train": 150,
    }


def test_acc_partial_coverage_and_clinical_label(shared_data):
    a = shared_data / "tcga_acc_mini"
    d = load_inputs(
        [
            f"rna={a / 'rnaseq_gene_norm.csv'}",
            f"cnv={a / 'cnv_gistic_thresholded.csv'}",
            f"rppa={a / 'rppa.csv'}",
        ],
        labels=[a / "clinical.csv"],
        label_col="C1A.C1B",
    )
    pres = d.presence()
    assert pres.all(axis=1).sum() == 45  # README: 45 patients have RNA, CNV and RPPA
    lab = d.obs.loc[pres.all(axis=1), "label"]
    assert lab.value_counts().to_dict() == {"C1A": 24, "C1B": 20} and lab.isna().sum() == 1


def test_nci60_nans_and_nutrimouse_without_ids(shared_data, capsys):
    n = shared_data / "nci60_multidrug"
    d = load_inputs(
        [f"abc={n / 'abc_transporter_expression.csv'}", f"drug={n / 'compound_activity.csv'}"],
        labels=[n / "cell_line_class.csv"],
    )
    assert int(np.isnan(d.mods["drug"].X).sum()) == 3300
    assert int(np.isnan(d.mods["abc"].X).sum()) == 1
    assert (d.obs.loc[d.obs["label"] == "PROSTATE", "split"] == "train").all()
    m = shared_data / "nutrimouse"
    argv = [
        "inspect",
        f"gene={m / 'gene.csv'}",
        f"lipid={m / 'lipid.csv'}",
        "--labels",
        str(m / "genotype.csv"),
        "--labels",
        str(m / "diet.csv"),
        "--label-col",
        "diet",
    ]
    assert main(argv) == 2  # no sample-ID column: the gene values are not IDs
    capsys.readouterr()
    assert main([*argv, "--no-ids"]) == 0
    out = capsys.readouterr().out
    assert "gene" in out and "lipid" in out and "fish" in out
