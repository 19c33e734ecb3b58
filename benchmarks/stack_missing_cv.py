"""Zero-fill or pattern stacker on samples missing assays? Evidence inside the training split.

Repeated stratified 5-fold CV over each dataset's labelled **training** samples (the test
split is never read). In each outer fold, per-modality logistic regressions (C by inner
CV) give out-of-fold log-probabilities on the outer-training samples, which train both
stackers (``stack_missing = "zero-fill"`` and ``"pattern"``, balmm's own code); their
refits on all outer-training samples give the held-out samples' log-probabilities. The
held-out samples are scored with their own assays (``natural``) and with one assay hidden
in every held-out sample (``without <assay>``, e.g. BRCA's protein, which no test sample
has). Logistic regressions stand in for balmm's heads, whose OOF logits the stacker sees
in ``balmm train``: the comparison is between the two ways of stacking the same inputs::

    OMP_NUM_THREADS=1 python benchmarks/stack_missing_cv.py --data ../shared/data \
        [--only acc brca rosmap] [--repeats 3]

Prints, per dataset and scenario, the held-out log-loss and accuracy of each stacker
(means over the folds) and the paired Wilcoxon p of the per-fold log-loss difference.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from balmm.bench.classic import _oof_and_test_logits
from balmm.data.io import load_inputs
from balmm.data.preprocess import Preprocessor
from balmm.training.stack_patterns import fit_pattern, make_source
from balmm.training.stacking import Stacker

sys.path.insert(0, str(Path(__file__).parent))
from kd_tally import datasets  # noqa: E402


def _pattern_proba(source: dict, logits: dict, present: dict, zero: Stacker) -> np.ndarray:
    """The pattern stacker's probabilities: each held-out pattern by its own stacker."""
    assays = source["assays"]
    pres = np.stack([present[a] for a in assays], 1)
    proba = zero.predict_proba(logits, present)
    for key in map(tuple, np.unique(pres, axis=0).tolist()):
        st, _ = fit_pattern(source, key)
        if st is None:
            continue
        rows = (pres == np.array(key)).all(1)
        sub = [a for a, on in zip(assays, key, strict=True) if on]
        proba[rows] = st.predict_proba({a: logits[a][rows] for a in sub}, None)
    return proba


def _scores(proba: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    ll = float(-np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, 1)).mean())
    return ll, float((proba.argmax(1) == y).mean())


def one_fold(data, train_ids, held_ids, seed: int) -> dict[str, dict[str, tuple]]:
    pre = Preprocessor().fit(data, train_ids)
    tr, te = pre.transform(data, train_ids), pre.transform(data, held_ids)
    n_classes = len(tr.classes)
    oof, held = {}, {}
    for m in tr.X:
        got = _oof_and_test_logits(tr.X[m][tr.mask[m]], tr.y[tr.mask[m]],
                                   te.X[m][te.mask[m]], n_classes, seed)  # fmt: skip
        if got is None:
            continue
        oof[m] = np.zeros((len(tr.y), n_classes), dtype=np.float32)
        oof[m][tr.mask[m]] = got[0]
        held[m] = np.zeros((len(te.y), n_classes), dtype=np.float32)
        held[m][te.mask[m]] = got[1]
    assays = list(oof)
    present_tr = {m: tr.mask[m] for m in assays}
    zero = Stacker(seed=seed).fit(oof, present_tr, tr.y)
    source = make_source(assays, oof, present_tr, tr.y, seed, cv=5)
    scenarios = {"natural": {m: te.mask[m] for m in assays}}
    for m in assays:
        masked = {a: te.mask[a] & (a != m) for a in assays}
        if any(te.mask[m]) and np.stack(list(masked.values()), 1).any(1).all():
            scenarios[f"without {m}"] = masked
    out = {}
    for name, present in scenarios.items():
        logits = {a: np.where(present[a][:, None], held[a], 0.0) for a in assays}
        out[name] = (
            _scores(zero.predict_proba(logits, present), te.y),
            _scores(_pattern_proba(source, logits, present, zero), te.y),
            int(sum((~present[a]).sum() for a in assays) > 0),
        )
    return out


def main() -> None:
    from scipy.stats import wilcoxon
    from sklearn.model_selection import StratifiedKFold

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data", type=Path)
    ap.add_argument("--only", nargs="*", default=["acc", "brca", "rosmap"])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    for name, (inputs, options) in datasets(args.data).items():
        if name not in args.only:
            continue
        data = load_inputs(inputs, **options)
        obs = data.obs
        lab = obs["label"].notna() & (obs["split"] == "train")
        ids = obs.index[lab]
        y = obs.loc[ids, "label"].astype(str).to_numpy()
        res: dict[str, list] = {}
        for rep in range(args.repeats):
            skf = StratifiedKFold(5, shuffle=True, random_state=rep)
            for k, (a, b) in enumerate(skf.split(np.zeros(len(y)), y)):
                with threadpool_limits(limits=1):
                    fold = one_fold(data, ids[a], ids[b], seed=rep)
                for sc, v in fold.items():
                    res.setdefault(sc, []).append(v)
                print(f"{name} repeat {rep} fold {k} done", file=sys.stderr, flush=True)
        print(f"\n{name}: {len(ids)} labelled training samples, {args.repeats} x 5 folds")
        print("| scenario | zero-fill log-loss | pattern log-loss | zero-fill accuracy | "
              "pattern accuracy | Δ log-loss, pattern − zero-fill (Wilcoxon p) |")  # fmt: skip
        print("|---|---|---|---|---|---|")
        for sc, rows in res.items():
            z = np.array([r[0] for r in rows])
            p = np.array([r[1] for r in rows])
            d = p[:, 0] - z[:, 0]
            pv = wilcoxon(d).pvalue if np.any(d != 0) else 1.0
            print(f"| {sc} | {z[:, 0].mean():.3f} | {p[:, 0].mean():.3f} | {z[:, 1].mean():.3f}"
                  f" | {p[:, 1].mean():.3f} | {d.mean():+.3f} (p = {pv:.2g}) |")  # fmt: skip


if __name__ == "__main__":
    main()
