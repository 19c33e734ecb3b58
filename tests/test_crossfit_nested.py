"""Nested cross-fitting: fold k's stage-1 (decay, epoch count) is chosen on pair models that
never saw fold k, so no fold's choice or OOF output reads its own labels; without nesting
the same label flip moves fold 0's choice (the test has teeth)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from balmm.config import TrainConfig
from balmm.progress import NULL_PROGRESS
from balmm.training.checkpoint import Checkpointer
from balmm.training.crossfit import crossfit_alone
from balmm.training.fold_sets import fold_assignment
from balmm.training.nested import fold_pairs
from balmm.training.tensors import Split
from datagen import two_assay_split

# seed 2 of two_assay_split with these settings: flipping fold 0's labels moves fold 0's
# epoch count (a) and decay (b) when fold 0's choice reads the other folds' curves
CFG = dict(pretrain_epochs=12, pretrain_patience=3, kd_epochs=4, epochs=8, patience=0,
           n_boot=20, hidden=32, embed_dim=16, lr=0.01, folds=4,
           weight_decay_grid="0.001,1")  # fmt: skip
MODS, N_FEATURES = ["a", "b"], {"a": 10, "b": 10}
OFF = Checkpointer(None, "", 0)


@pytest.fixture(scope="module")
def runs() -> dict[tuple[bool, bool], object]:
    """crossfit_alone on the clean and the fold-0-flipped labels, nested and not."""
    s = two_assay_split(np.random.default_rng(2))
    y = s.y.numpy()
    folds = fold_assignment(y, 4, seed=0)
    flipped = y.copy()
    flipped[folds == 0] = 1 - flipped[folds == 0]
    dirty = Split(s.ids, s.X, s.M, torch.as_tensor(flipped))
    out = {}
    with one_thread():
        for nested in (True, False):
            cfg = TrainConfig(**CFG, crossfit_nested=nested)
            for flip, split in ((False, s), (True, dirty)):
                out[(nested, flip)] = crossfit_alone(MODS, N_FEATURES, 2, split, folds, cfg,
                                                     NULL_PROGRESS, OFF)  # fmt: skip
    return out


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Tiny models: extra threads only add overhead on shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_flipping_a_folds_labels_leaves_its_nested_choice_and_oof_outputs_unchanged(runs):
    clean, dirty = runs[(True, False)], runs[(True, True)]
    held = clean.folds == 0
    for m in MODS:
        assert clean.fold_rule[m] == "nested"
        assert clean.fold_epochs[m][0] == dirty.fold_epochs[m][0]
        assert clean.fold_decay[m][0] == dirty.fold_decay[m][0]
        np.testing.assert_array_equal(clean.logits[m][held], dirty.logits[m][held])
        np.testing.assert_array_equal(clean.z[m][held], dirty.z[m][held])
        assert not np.array_equal(clean.logits[m][~held], dirty.logits[m][~held])


def test_without_nesting_the_same_flip_moves_fold_0s_choice(runs):
    """The indirect path nesting closes: the other folds' models trained on fold 0's
    flipped labels, their curves move, and so does fold 0's choice and its OOF output."""
    clean, dirty = runs[(False, False)], runs[(False, True)]
    held = clean.folds == 0
    assert clean.fold_rule == {"a": "other folds", "b": "other folds"}
    assert clean.fold_epochs["a"][0] != dirty.fold_epochs["a"][0]
    assert clean.fold_decay["b"][0] != dirty.fold_decay["b"][0]
    assert not np.array_equal(clean.logits["a"][held], dirty.logits["a"][held])


def test_pair_members_leave_the_fold_members_and_the_final_choice_as_they_were(runs):
    """The pair members draw from their own random streams: the fold members' curves, and
    so the final model's (decay, epoch count), are bit for bit those without nesting."""
    nested, flat = runs[(True, False)], runs[(False, False)]
    assert nested.epochs == flat.epochs and nested.decay == flat.decay
    assert nested.oof_loss_curve == flat.oof_loss_curve
    assert not flat.pair_traces


def test_fold_choice_is_the_pooled_log_loss_minimum_of_its_pair_curves(runs):
    """By hand: fold k's (decay, count) minimises, over decays and epochs, the mean negative
    log-probability of the true class on every fold j != k, scored by pair {j, k}. Pair
    curves run every epoch (no patience: it would read a fold's held-out labels)."""
    cf = runs[(True, False)]
    n_folds = int(cf.folds.max()) + 1
    assert len(fold_pairs(n_folds)) == n_folds * (n_folds - 1) // 2
    for m in MODS:
        for k in range(n_folds):
            best = None
            for wd in (0.001, 1.0):
                total, count = np.zeros(CFG["pretrain_epochs"]), 0
                for j in range(n_folds):
                    t = cf.pair_traces[m][wd][k][j]
                    if j == k:
                        assert t is None
                        continue
                    y = cf.y[cf.folds == j]
                    assert t.shape == (CFG["pretrain_epochs"], len(y), 2)
                    total += -t[:, np.arange(len(y)), y].sum(1)
                    count += len(y)
                ep = int(np.argmin(total)) + 1
                if best is None or total[ep - 1] / count < best[0]:
                    best = (total[ep - 1] / count, wd, ep)
            assert (cf.fold_decay[m][k], cf.fold_epochs[m][k]) == best[1:]


def test_fold_students_learn_from_pair_teachers_that_never_saw_their_fold(runs, monkeypatch):
    """Distillation b <- a in every fold (kept whatever the evidence, to read the students'
    OOF logits): with fold 0's labels flipped, fold 0's student is bit for bit the same,
    since its targets on fold j come from a's pair model {j, 0}. With the teachers' OOF
    logits as targets instead (models that trained on fold 0), the flip moves it."""
    import copy

    from balmm.profiling.plan import KDEdge
    from balmm.training import crossfit

    monkeypatch.setattr(crossfit, "evidence_record", lambda *a: {"accepted": True})
    cfg = TrainConfig(**CFG)

    def student_oof(cf) -> np.ndarray:
        cf = copy.deepcopy(cf)
        edges = [KDEdge("a", "b", 0.1, 0.1, True, "test", 1.0)]
        plan = [{"teacher": "a", "student": "b", "enabled": True}]
        with one_thread():
            accepted = crossfit.crossfit_kd(cf, edges, plan, MODS, 2, cfg, NULL_PROGRESS, OFF)
        assert accepted == {"b"}
        return cf.logits["b"][cf.folds == 0]

    clean, dirty = runs[(True, False)], runs[(True, True)]
    before = clean.logits["b"][clean.folds == 0]
    distilled = student_oof(clean)
    assert not np.array_equal(distilled, before)  # distillation changed the student
    np.testing.assert_array_equal(distilled, student_oof(dirty))
    monkeypatch.setattr(crossfit, "fold_targets", lambda cf, k: dict(cf.logits))
    assert not np.array_equal(student_oof(clean), student_oof(dirty))


def test_above_nest_groups_folds_the_pairs_are_of_groups_and_still_never_read_the_fold(
    monkeypatch,
):
    """7 folds pool into 5 groups (fold k -> group k * 5 // 7: folds 0 and 1 share group 0):
    10 pair models, not 21. Fold k's choice is its group's, the pooled log-loss minimum of
    the pairs {g, h} on group h's rows; flipping fold 0's labels leaves fold 0's choice, OOF
    outputs and distilled student (whose targets on fold 1, in its own group, come from a
    pair model outside that group) bit for bit the same."""
    import copy

    from balmm.profiling.plan import KDEdge
    from balmm.training import crossfit
    from balmm.training.nested import NEST_GROUPS, nest_groups

    s = two_assay_split(np.random.default_rng(2), n=210)
    y = s.y.numpy()
    folds = fold_assignment(y, 7, seed=0)
    groups = nest_groups(folds)
    assert NEST_GROUPS == 5 and list(np.unique(groups)) == [0, 1, 2, 3, 4]
    assert (groups[folds == 0] == 0).all() and (groups[folds == 1] == 0).all()
    flipped = y.copy()
    flipped[folds == 0] = 1 - flipped[folds == 0]
    dirty_split = Split(s.ids, s.X, s.M, torch.as_tensor(flipped))
    cfg = TrainConfig(**{**CFG, "folds": 7, "weight_decay_grid": ""})
    with one_thread():
        clean, dirty = (crossfit_alone(MODS, N_FEATURES, 2, split, folds, cfg, NULL_PROGRESS,
                                       OFF) for split in (s, dirty_split))  # fmt: skip
    held = folds == 0
    for m in MODS:
        per_group = clean.pair_traces[m][0.001]
        assert len(per_group) == 5 and sum(t is not None for r in per_group for t in r) == 20
        for k in range(7):
            g = int(groups[folds == k][0])
            total, count = np.zeros(CFG["pretrain_epochs"]), 0
            for h in range(5):
                if h != g:
                    yh = clean.y[groups == h]
                    total += -per_group[g][h][:, np.arange(len(yh)), yh].sum(1)
                    count += len(yh)
            assert clean.fold_epochs[m][k] == int(np.argmin(total)) + 1
        assert clean.fold_epochs[m][0] == clean.fold_epochs[m][1]  # one group, one choice
        assert clean.fold_epochs[m][0] == dirty.fold_epochs[m][0]
        np.testing.assert_array_equal(clean.logits[m][held], dirty.logits[m][held])
        np.testing.assert_array_equal(clean.z[m][held], dirty.z[m][held])

    monkeypatch.setattr(crossfit, "evidence_record", lambda *a: {"accepted": True})

    def student_oof(cf) -> np.ndarray:
        cf = copy.deepcopy(cf)
        edges = [KDEdge("a", "b", 0.1, 0.1, True, "test", 1.0)]
        plan = [{"teacher": "a", "student": "b", "enabled": True}]
        with one_thread():
            crossfit.crossfit_kd(cf, edges, plan, MODS, 2, cfg, NULL_PROGRESS, OFF)
        return cf.logits["b"][cf.folds == 0]

    np.testing.assert_array_equal(student_oof(clean), student_oof(dirty))
