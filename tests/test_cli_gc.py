"""The CLI's imports run with the cyclic garbage collector paused and are then frozen out of
its passes; main() hands them back when the command ends."""

from __future__ import annotations

import gc

from balmm.cli.common import imports_out_of_gc, thaw_gc


def test_imports_out_of_gc_pauses_then_freezes_then_thaws() -> None:
    assert gc.get_freeze_count() == 0
    assert gc.isenabled()
    with imports_out_of_gc():
        assert not gc.isenabled()  # no collector pass while the libraries load
        import email.mime.text  # noqa: F401 - any import
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0  # what existed is out of the collector's passes
    with imports_out_of_gc():  # a second block of imports in the same command
        assert not gc.isenabled()
    thaw_gc()
    assert gc.get_freeze_count() == 0
    assert gc.isenabled()


def test_a_callers_own_freeze_is_left_alone() -> None:
    gc.freeze()
    try:
        with imports_out_of_gc():
            assert gc.isenabled()  # nothing paused or frozen on the caller's behalf
        thaw_gc()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_main_thaws_after_a_command(tmp_path) -> None:
    from balmm.cli.app import main

    # a command that fails on its input after its imports: the freeze is still undone
    assert main(["profile", str(tmp_path / "missing.h5mu"), "--out", str(tmp_path / "o")]) == 2
    assert gc.get_freeze_count() == 0


def test_predict_imports_out_of_gc_then_thaws(tmp_path, monkeypatch) -> None:
    import importlib

    app = importlib.import_module("balmm.cli.app")  # the module (balmm.cli.app is the Typer app)

    frozen = []

    def thaw() -> None:
        frozen.append(gc.get_freeze_count())
        thaw_gc()

    monkeypatch.setattr(app, "thaw_gc", thaw)
    code = app.main(["predict", str(tmp_path / "no-model"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert frozen and frozen[0] > 0  # its imports were frozen out of the collector's passes
    assert gc.get_freeze_count() == 0
    assert gc.isenabled()
