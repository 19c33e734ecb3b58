"""Which regulariser matters for balmm's unimodal models: weight decay or the epoch count?

5-fold CV inside a dataset's training split (the test split is never loaded into the
comparison). Per held-out fold and modality it prints the held-out log-loss of

* the unimodal model with each weight decay in ``--weight-decays``, its epoch chosen on a
  validation carve of the other folds (balmm's one-carve protocol),
* the unimodal model trained on all the other folds for each count in ``--epochs``,
* a logistic regression with C chosen by inner CV on log-loss (the classic reference),

averaged over the folds (docs/method.md, "Regularisation on log-loss")::

    .venv/bin/python benchmarks/regularisation_curves.py --data ../shared/data/mogonet_rosmap
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold

from balmm.config import TrainConfig
from balmm.data.io import load_inputs
from balmm.data.preprocess import Preprocessor
from balmm.data.splits import stratified_split
from balmm.progress import NULL_PROGRESS
from balmm.training.checkpoint import Checkpointer
from balmm.training.stage1 import train_one, unimodal_net
from balmm.training.tensors import infer, restrict, single, split_from


def _held_loss(state: dict, m: str, test, y_held: np.ndarray, classes: list[int]) -> float:
    net = unimodal_net(m, test.X[m].shape[1], len(classes), TrainConfig())
    net.load_state_dict(state)
    return float(log_loss(y_held, infer(net, single(test, m))[m], labels=classes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/mogonet_rosmap")
    ap.add_argument("--fold-seed", type=int, default=0)
    ap.add_argument("--weight-decays", type=float, nargs="+", default=[1e-3, 0.1, 1.0, 10.0])
    ap.add_argument("--epochs", type=int, nargs="+", default=[10, 20, 30, 45, 60])
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    data = load_inputs([args.data])
    train_ids = data.ids("train")
    y_all = data.y(train_ids)
    off = Checkpointer(None, "", 0)
    rows: dict[tuple[str, str], list[float]] = {}
    cv = StratifiedKFold(5, shuffle=True, random_state=args.fold_seed)
    for k, (a, b) in enumerate(cv.split(np.zeros(len(train_ids)), y_all)):
        inside, held = train_ids[a], train_ids[b]
        fit_ids, val_ids = stratified_split(inside, data.y(inside), 0.2, k)
        order = fit_ids.append(val_ids).append(held)
        proc = Preprocessor().fit(data, inside).transform(data, order)
        nf, ni = len(fit_ids), len(inside)
        cpu = torch.device("cpu")
        fit, val = split_from(proc, np.arange(nf), cpu), split_from(proc, np.arange(nf, ni), cpu)
        both = split_from(proc, np.arange(ni), cpu)
        test = split_from(proc, np.arange(ni, len(order)), cpu)
        y_held = proc.y[ni:]
        classes = list(range(len(data.classes)))
        for m in proc.X:
            n_in = proc.X[m].shape[1]

            for wd in args.weight_decays:
                cfg = TrainConfig(weight_decay=wd)
                done = train_one(m, n_in, len(classes), restrict(fit, m), restrict(val, m), cfg,
                                 NULL_PROGRESS, off, "x", ("carve", m))  # fmt: skip
                rows.setdefault((m, f"weight decay {wd:g}, epoch on the carve"), []).append(
                    _held_loss(done["state"], m, test, y_held, classes)
                )
            for ep in args.epochs:
                done = train_one(m, n_in, len(classes), restrict(both, m), None, TrainConfig(),
                                 NULL_PROGRESS, off, "x", ("all", m), epochs=ep)  # fmt: skip
                rows.setdefault((m, f"{ep} epochs on all other folds"), []).append(
                    _held_loss(done["state"], m, test, y_held, classes)
                )
            lr = LogisticRegressionCV(Cs=np.logspace(-4, 1, 12), cv=5, scoring="neg_log_loss",
                                      max_iter=5000).fit(proc.X[m][:ni], proc.y[:ni])  # fmt: skip
            rows.setdefault((m, "logistic regression, C by inner CV"), []).append(
                log_loss(y_held, lr.predict_proba(proc.X[m][ni:]), labels=classes)
            )
        print(f"fold {k} done", flush=True)
    print(f"\n{'modality':12s} {'model':45s} held-out log-loss (mean of 5 folds)")
    for (m, name), v in rows.items():
        print(f"{m:12s} {name:45s} {np.mean(v):.3f}")


if __name__ == "__main__":
    main()
