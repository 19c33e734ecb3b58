"""balmm.pl on a real (small, simulated) training run and profile: every plot returns its
Axes, draws what the run recorded, and takes a result object, a dict or an output folder.
The train and profile reports are drawn with the same functions."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

import balmm
from balmm import pl
from balmm.data.simulate import simulate

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def data():
    d = simulate(n_samples=140, seed=1)
    d.label_mapping = {"class0": "healthy", "class1": "disease"}
    return d


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("pl") / "run"
    return balmm.train(data, out=out, seed=0, epochs=6, pretrain_epochs=3)


@pytest.fixture(scope="module")
def prof(data):
    return balmm.profile(data, n_boot=10, seed=0)


def _ax() -> Axes:
    return Figure().subplots()


def test_every_train_plot_takes_a_result_a_dict_or_a_folder(run) -> None:
    for fn in (pl.loss_weights, pl.validation_f1, pl.imbalance, pl.contributions,
               pl.confusion_matrix, pl.roc, pl.kd_plan):  # fmt: skip
        for src in (run, run.out):
            ax = _ax()
            assert fn(src, ax=ax) is ax, fn.__name__
    for fn in (pl.imbalance, pl.contributions, pl.confusion_matrix, pl.kd_plan):
        ax = _ax()
        assert fn(run.metrics, ax=ax) is ax


def test_loss_weights_draw_the_logged_weights(run) -> None:
    ax = pl.loss_weights(run, ax=_ax())
    last = [h for h in run.history if "weights" in h]
    stage = last[-1]["stage"]
    recs = [h for h in run.history if h.get("stage") == stage and "weights" in h]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    for head in recs[0]["weights"]:
        np.testing.assert_allclose(lines[head].get_ydata(), [h["weights"][head] for h in recs])


def test_confusion_matrix_uses_class_names_and_counts(run) -> None:
    ax = pl.confusion_matrix(run, ax=_ax())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["healthy", "disease"]
    cm = np.array(run.metrics["test"]["fused"]["confusion_matrix"])
    assert sorted(int(t.get_text()) for t in ax.texts) == sorted(cm.ravel().tolist())
    # from the folder, the names come from the saved model bundle
    ax = pl.confusion_matrix(run.out, ax=_ax())
    assert [t.get_text() for t in ax.get_yticklabels()] == ["healthy", "disease"]


def test_roc_auc_matches_metrics(run) -> None:
    ax = pl.roc(run, ax=_ax())
    label = next(t.get_text() for t in ax.get_legend().get_texts() if "disease" in t.get_text())
    auc = float(label.split("AUC = ")[1].rstrip(")"))
    assert auc == pytest.approx(run.metrics["test"]["fused"]["auroc"], abs=0.006)


def test_contributions_and_imbalance_bars_match_metrics(run) -> None:
    imb = run.metrics["imbalance"]
    ax = pl.contributions(run, ax=_ax())
    widths = sorted(p.get_width() for p in ax.patches)
    assert widths == pytest.approx(sorted(imb["contributions"]["test"].values()))
    ax = pl.imbalance(run, ax=_ax())
    heights = sorted(p.get_height() for p in ax.patches)
    gap = imb["under_optimisation_gap"]
    want = [v["alone_test"] for v in gap.values()] + [v["joint_test"] for v in gap.values()]
    assert heights == pytest.approx(sorted(want))


def test_kd_plan_draws_one_arrow_per_enabled_edge() -> None:
    from matplotlib.patches import FancyArrowPatch

    plan = {
        "label_mi_bits": {"a": {}, "b": {}, "c": {}},
        "stage1": {"a": {"val_macro_f1": 0.9}, "b": {"val_macro_f1": 0.6}, "c": {}},
        "kd_plan": [
            {"teacher": "a", "student": "b", "gap_bits": 0.2, "enabled": True, "weight": 1.0},
            {"teacher": "a", "student": "c", "gap_bits": 0.1, "enabled": True, "weight": 0.5,
             "accepted": False},
            {"teacher": "b", "student": "c", "gap_bits": -0.1, "enabled": False, "weight": 0},
        ],
    }  # fmt: skip
    ax = pl.kd_plan(plan, ax=_ax())
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == 2
    assert any("reverted" in t.get_text() for t in ax.texts)  # a distillation not kept


def test_profile_plots(prof, tmp_path: Path) -> None:
    prof.write(tmp_path / "prof")
    for fn in (pl.unimodal_strength, pl.mi_heatmap, pl.kd_plan, pl.shapley, pl.per_class_f1):
        for src in (prof, prof.to_dict(), tmp_path / "prof"):
            ax = _ax()
            assert fn(src, ax=ax) is ax, fn.__name__
    ax = pl.mi_heatmap(prof, ax=_ax())
    pair = next(p for p in prof.pairs if p["estimator"] == prof.settings["primary_estimator"])
    assert f"{pair['mi_bits']:.2f}" in [t.get_text() for t in ax.texts]
    ax = pl.per_class_f1(prof, ax=_ax())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["healthy", "disease"]


def test_embedding_umap_coloured_by_class_name(run) -> None:
    ax = pl.embedding(run, ax=_ax())
    n = sum(len(c.get_offsets()) for c in ax.collections)
    assert n == run.embeddings.n_obs
    assert {"healthy", "disease"} <= {t.get_text() for t in ax.get_legend().get_texts()}
    assert "X_umap" not in run.embeddings.obsm  # the result is left untouched


def test_embedding_pca_basis_and_the_reports_choice(run, monkeypatch) -> None:
    from balmm.training import report
    from balmm.training.report import UMAP_MIN_SAMPLES, embedding_basis, plotted_embeddings

    ax = pl.embedding(run, basis="pca", ax=_ax())
    assert sum(len(c.get_offsets()) for c in ax.collections) == run.embeddings.n_obs
    assert "X_pca" not in run.embeddings.obsm  # the result is left untouched
    # the report: PCA for a bulk cohort, UMAP at single-cell sizes or when asked
    assert embedding_basis("auto", UMAP_MIN_SAMPLES - 1) == "pca"
    assert embedding_basis("auto", UMAP_MIN_SAMPLES) == "umap"
    assert embedding_basis("umap", 10) == "umap"
    # above REPORT_MAX_POINTS samples it shows a stratified subsample of that many
    assert plotted_embeddings(run, 0).n_obs == run.embeddings.n_obs
    monkeypatch.setattr(report, "REPORT_MAX_POINTS", 40)
    shown = plotted_embeddings(run, 0)
    assert shown.n_obs == 40 and set(shown.obs_names) <= set(run.embeddings.obs_names)
    assert set(shown.obs["split"]) == set(run.embeddings.obs["split"])
    np.testing.assert_allclose(shown.obsm["X_fused"], run.embeddings[shown.obs_names]
                               .obsm["X_fused"], rtol=1e-5, atol=1e-6)  # fmt: skip
    page = (run.out / "report.html").read_text("utf-8")
    assert "principal components of the fused embedding" in page


def test_without_ax_a_pyplot_figure_is_made(run) -> None:
    import matplotlib.pyplot as plt

    ax = pl.contributions(run)
    assert isinstance(ax, Axes) and plt.fignum_exists(ax.figure.number)
    plt.close(ax.figure)


def test_train_report_shows_names_plots_and_no_pandas_index(run) -> None:
    page = (run.out / "report.html").read_text("utf-8")
    for png in ("roc_test", "embedding", "contributions", "imbalance", "confusion_test", "weights"):
        assert (run.out / "plots" / f"{png}.png").is_file(), png
    assert "healthy" in page and "disease" in page
    assert "<th></th>" not in page  # no unnamed (0..n) index column
    assert "balanced accuracy" in page and "balanced_accuracy" not in page
    metrics = json.loads((run.out / "metrics.json").read_text())
    assert metrics["classes"] == ["class0", "class1"]  # codes stay codes in the data files


def test_missing_folder_is_an_input_error(tmp_path: Path) -> None:
    from balmm.errors import InputError

    with pytest.raises(InputError, match="metrics.json"):
        pl.contributions(tmp_path)


def test_embedding_of_a_mudata_after_tl_train(run) -> None:
    import anndata as ad
    import mudata as md

    emb = run.embeddings
    mod = ad.AnnData(
        np.zeros((emb.n_obs, 1), dtype=np.float32), obs=pd.DataFrame(index=emb.obs_names)
    )
    mdata = md.MuData({"m": mod})
    mdata.obsm["X_balmm"] = emb.obsm["X_fused"]
    mdata.obs["cond"] = pd.Categorical(emb.obs["label"].astype(str).to_numpy())
    ax = pl.embedding(mdata, use_rep="X_balmm", color="cond", ax=_ax())
    assert sum(len(c.get_offsets()) for c in ax.collections) == emb.n_obs
    assert "X_umap" not in mdata.obsm  # the user's object is left untouched


def test_markers_bars_from_the_run_folder(run) -> None:
    table = pd.read_csv(run.out / "markers.csv")
    ax = pl.markers(run.out, "strong", top=3, ax=_ax())
    want = table[(table["modality"] == "strong") & (table["rank"] <= 3)]
    assert sorted(p.get_width() for p in ax.patches) == pytest.approx(sorted(want["score"]))
    assert {t.get_text() for t in ax.get_yticklabels()} == set(want["feature"])
