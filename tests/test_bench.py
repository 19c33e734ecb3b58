"""balmm bench / aggregate: classic floors on data with a known answer, the statistics,
shard + aggregate equal to one run, CV folds, the CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from balmm.bench.classic import classic_floors
from balmm.bench.report import paired_table, summary_table
from balmm.bench.run import BenchSpec, fold_split, run_bench
from balmm.cli.app import main
from balmm.data.simulate import make_specs, simulate
from balmm.errors import InputError

# Tiny training run: enough to exercise the whole protocol, not to learn well.
TINY = ["--set", "epochs=2", "--set", "pretrain_epochs=1", "--set", "kd_epochs=1",
        "--set", "n_boot=0", "--set", "patience=1", "--set", "pretrain_patience=1",
        "--threads", "1"]  # fmt: skip
TABLES = ["bench.csv", "summary.csv", "paired.csv", "heads.csv", "bench.md"]


@pytest.fixture(scope="module")
def sim_path(tmp_path_factory) -> str:
    from balmm.data.io import write_h5mu

    specs = make_specs(["strong", "noise"], n_features=20, signal=[3.0, 0.0])
    data = simulate(n_samples=90, modalities=specs, seed=0)
    path = tmp_path_factory.mktemp("sim") / "sim.h5mu"
    write_h5mu(data, path)
    return str(path)


def test_classic_floors_follow_the_ground_truth() -> None:
    specs = make_specs(["strong", "noise"], n_features=30, signal=[3.0, 0.0])
    data = simulate(n_samples=300, modalities=specs, missing_rate=0.1, seed=1)
    rows = {
        r["method"]: r
        for r in classic_floors(data, data.ids("train"), data.ids("test"), methods=["logreg"])
    }
    assert set(rows) == {"logreg:strong", "logreg:noise", "logreg:concat"}
    assert rows["logreg:strong"]["macro_f1"] > 0.8
    assert abs(rows["logreg:noise"]["balanced_accuracy"] - 0.5) < 0.15
    # Per-modality models score only the test samples that have the modality.
    has = data.presence().loc[data.ids("test")]
    assert rows["logreg:strong"]["n_test"] == has["strong"].sum()
    assert rows["logreg:concat"]["n_test"] == len(data.ids("test"))
    for r in rows.values():
        assert set(r) >= {"accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "auroc"}


def _rows(values: dict[str, list[float]]) -> pd.DataFrame:
    out = []
    for method, vals in values.items():
        for seed, v in enumerate(vals):
            out.append({"seed": seed, "fold": 0, "method": method, "kind": "balancer",
                        "accuracy": v, "balanced_accuracy": v, "macro_f1": v,
                        "weighted_f1": v, "auroc": v})  # fmt: skip
    return pd.DataFrame(out)


def test_summary_and_paired_statistics() -> None:
    balmm = [0.80, 0.82, 0.78, 0.85, 0.81]
    other = [0.70, 0.75, 0.71, 0.74, 0.72]
    rows = _rows({"balmm": balmm, "none": other})
    s = summary_table(rows).set_index(["method", "metric"]).loc[("balmm", "macro_f1")]
    assert s["mean"] == pytest.approx(np.mean(balmm))
    assert s["sd"] == pytest.approx(np.std(balmm, ddof=1))
    half = stats.t.ppf(0.975, 4) * np.std(balmm, ddof=1) / np.sqrt(5)
    assert s["ci_low"] == pytest.approx(np.mean(balmm) - half)
    p = paired_table(rows).set_index("metric").loc["macro_f1"]
    diff = np.subtract(balmm, other)
    assert p["mean_diff"] == pytest.approx(diff.mean())
    assert p["boot_low"] <= diff.mean() <= p["boot_high"]
    assert diff.min() <= p["boot_low"] and p["boot_high"] <= diff.max()
    assert p["wilcoxon_p"] == pytest.approx(stats.wilcoxon(diff).pvalue)
    assert p["wins"] == 5


def test_cv_folds_cover_every_labelled_sample_once() -> None:
    data = simulate(n_samples=60, seed=2)
    spec = BenchSpec(balancers=[], seeds=[0, 1], cv=3, classic=["logreg"])
    for seed in (0, 1):
        tests = [fold_split(data, spec, seed, f).ids("test") for f in range(3)]
        assert sum(len(t) for t in tests) == 60
        assert len(set().union(*map(set, tests))) == 60
    # Different seeds shuffle differently.
    a, b = (fold_split(data, spec, s, 0).ids("test") for s in (0, 1))
    assert not a.equals(b)
    rows = run_bench(data, spec, threads=1).rows
    assert len(rows) == 2 * 3 * 4  # seeds x folds x logreg on (strong, weak, noise, concat)
    concat = rows[rows["method"] == "logreg:concat"]
    assert concat.groupby("seed")["n_test"].sum().eq(60).all()


def test_spec_rejects_unknown_names() -> None:
    with pytest.raises(InputError, match="bogus"):
        BenchSpec(balancers=["bogus"], seeds=[0])
    with pytest.raises(InputError, match="nothing to run"):
        BenchSpec(balancers=[], seeds=[0], classic=[])


def _read(folder, name: str) -> bytes:
    return (folder / name).read_bytes()


def test_shards_aggregate_to_exactly_the_unsharded_tables(sim_path, tmp_path) -> None:
    common = [sim_path, "--balancers", "none", "--classic", "logreg,svm", "--seeds", "2",
              "--device", "cpu", *TINY]  # fmt: skip
    assert main(["bench", *common, "--out", str(tmp_path / "full")]) == 0
    shards = []
    for i in (1, 2, 3):  # 4 units dealt round-robin: shard 1 gets two of them
        d = tmp_path / f"shard{i}"
        assert main(["bench", *common, "--shard", f"{i}/3", "--out", str(d)]) == 0
        assert (d / "partial.csv").is_file() and not (d / "bench.md").exists()
        shards.append(str(d))
    assert main(["aggregate", *shards, "--out", str(tmp_path / "merged")]) == 0
    for name in TABLES:
        assert _read(tmp_path / "full", name) == _read(tmp_path / "merged", name), name
    rows = pd.read_csv(tmp_path / "full" / "bench.csv")
    # one row per method x seed: 1 balancer + 2 classic x (2 modalities + concat)
    assert len(rows) == 2 * (1 + 2 * 3)
    assert rows["head_f1:strong"].notna().sum() == 2  # only the balancer has heads

    # A missing shard or a shard of another benchmark is refused with exit code 2.
    assert main(["aggregate", *shards[:2], "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()
    other = tmp_path / "other"
    assert main(["bench", sim_path, "--balancers", "", "--classic", "logreg", "--seeds", "2",
                 "--shard", "3/3", "--out", str(other)]) == 0  # fmt: skip
    assert main(["aggregate", *shards[:2], str(other), "--out", str(tmp_path / "bad")]) == 2


def test_bench_cli_end_to_end_with_cv_and_reference(sim_path, tmp_path, capsys) -> None:
    out = tmp_path / "b"
    rc = main(["bench", sim_path, "--balancers", "balmm", "--classic", "logreg",
               "--seeds", "2", "--cv", "2", "--reference", "mogonet-rosmap", "--device", "cpu",
               *TINY, "--out", str(out)])  # fmt: skip
    assert rc == 0
    rows = pd.read_csv(out / "bench.csv")
    assert len(rows) == 2 * 2 * (1 + 3)  # seeds x folds x (balmm + logreg on 2 mods + concat)
    assert rows["n_test"].groupby([rows["seed"], rows["method"]]).sum().eq(90).all()
    md = (out / "bench.md").read_text()
    assert "balmm minus each method" in md and "MOGONET" in md and "test set" in md
    html = (out / "bench.html").read_text()
    assert "data:image/png;base64," in html and "<img" in html
    assert (out / "plots" / "head_f1.png").is_file()
    man = json.loads((out / "manifest.json").read_text())
    assert man["spec"]["cv"] == 2 and man["units_total"] == 2 * 2 * 2
    assert "balmm" in capsys.readouterr().out


def test_bench_cli_bad_options_exit_2(sim_path, tmp_path) -> None:
    assert main(["bench", sim_path, "--balancers", "nope", "--out", str(tmp_path / "x")]) == 2
    assert main(["bench", sim_path, "--shard", "5/4", "--out", str(tmp_path / "x")]) == 2
    assert main(["bench", sim_path, "--set", "bogus=1", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


@pytest.mark.gpu
def test_bench_runs_balancers_on_cuda(sim_path, tmp_path) -> None:
    out = tmp_path / "gpu"
    rc = main(["bench", sim_path, "--balancers", "balmm,none", "--classic", "logreg",
               "--seeds", "2", "--device", "cuda", *TINY, "--out", str(out)])  # fmt: skip
    assert rc == 0
    rows = pd.read_csv(out / "bench.csv")
    assert rows.loc[rows["kind"] == "balancer", "macro_f1"].notna().all()


def test_stacked_logreg_floor_combines_complementary_modalities() -> None:
    # two modalities with independent (modality-unique) signal: the stack beats each alone
    specs = make_specs(["a", "b", "noise"], n_features=20, signal=[2.0, 2.0, 0.0], shared=0.0)
    data = simulate(n_samples=600, modalities=specs, missing_rate=0.1, seed=2)
    rows = {
        r["method"]: r
        for r in classic_floors(
            data, data.ids("train"), data.ids("test"), methods=["logreg", "stacked-logreg"]
        )
    }
    stacked = rows["stacked-logreg:fused"]
    assert stacked["n_test"] == len(data.ids("test"))  # missing modalities predicted too
    for m in ("a", "b"):
        assert stacked["accuracy"] > rows[f"logreg:{m}"]["accuracy"] + 0.03, (m, stacked)
    assert stacked["auroc"] > 0.8


def test_bench_workers_read_the_data_from_disk_with_the_same_results(sim_path, tmp_path) -> None:
    from balmm.bench.run import read_worker_data, write_worker_data
    from balmm.data.io import load_inputs

    data = load_inputs([sim_path])
    back = read_worker_data(write_worker_data(data, tmp_path / "data"))
    pd.testing.assert_frame_equal(back.obs, data.obs)
    for m, a in data.mods.items():
        np.testing.assert_array_equal(np.asarray(back.mods[m].X), np.asarray(a.X))
        assert list(back.mods[m].obs_names) == list(a.obs_names)
    assert (back.label_mapping, back.split_source) == (data.label_mapping, data.split_source)
    common = [sim_path, "--balancers", "none", "--classic", "logreg", "--seeds", "2",
              "--device", "cpu", *TINY]  # fmt: skip
    for jobs in (1, 2):
        assert (
            main(["bench", *common, "--jobs", str(jobs), "--out", str(tmp_path / f"j{jobs}")]) == 0
        )
    for name in TABLES:
        assert _read(tmp_path / "j1", name) == _read(tmp_path / "j2", name), name
