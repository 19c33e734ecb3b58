"""CLI help and option polish: defaults shown, examples, readable metavars, one meaning for
--seed and --threads, flags that take no value, plain summaries off a terminal."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from balmm.cli.app import main
from balmm.config import TrainConfig
from balmm.data.io import example_path

COMMANDS = ["inspect", "convert", "profile", "train", "predict", "simulate", "bench", "aggregate"]
EX = example_path().parent


def _help(capsys, *argv: str) -> str:
    assert main([*argv, "--help"]) == 0
    return capsys.readouterr().out


def _option_line(text: str, flag: str) -> str:
    """The row of the options table that describes ``flag``."""
    return next(ln for ln in text.splitlines() if ln.lstrip("│ ").startswith(f"{flag} "))


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one line per option: easier to search


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_has_an_example_and_no_python_types(capsys, command):
    text = _help(capsys, command)
    assert "Example" in text
    last = [ln.strip() for ln in text.split("╭")[0].splitlines() if ln.strip()][-1]
    assert last.startswith("balmm "), last  # the description ends with an example command
    assert "<bool>" not in text and "list[" not in text
    assert not re.search(r"<(str|int|float|path|Path)>", text), text


def test_group_help_has_examples_and_completion(capsys):
    text = _help(capsys)
    assert "Example" in text and "--install-completion" in text
    assert "<bool>" not in text and "--quiet" in text and "--no-quiet" in text


def test_train_help_shows_the_config_defaults(capsys):
    text = _help(capsys, "train")
    cfg = TrainConfig()
    for flag, value in [
        ("--balancer", cfg.balancer),
        ("--seed", cfg.seed),
        ("--device", cfg.device),
        ("--encoder", cfg.encoder),
        ("--epochs", cfg.epochs),
    ]:
        line = _option_line(text, flag)
        assert f"[default: {value}]" in line, line
    assert "[default: inductive]" in text


@pytest.mark.parametrize("command", ["inspect", "convert", "profile", "train", "bench", "simulate"])
def test_seed_defaults_to_zero_everywhere(capsys, command):
    line = _option_line(_help(capsys, command), "--seed")
    assert "[default: 0]" in line, line


@pytest.mark.parametrize("command", ["profile", "train", "bench"])
def test_threads_unset_means_automatic_everywhere(capsys, command):
    text = _help(capsys, command)
    line = _option_line(text, "--threads")
    assert "automatic" in line and "[default:" not in line, line


@pytest.mark.parametrize("argv", [["--quiet=true", "inspect"], ["inspect", "--no-ids=yes"]])
def test_a_value_given_to_a_flag_is_a_clean_usage_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "does not take a value" in err


def test_balmm_help_imports_no_heavy_library():
    # `balmm --help` and completion stay fast: the science stack is imported by commands only.
    code = (
        "import sys\n"
        "from balmm.cli.app import main\n"
        "import balmm.cli\n"
        "assert main(['--help']) == 0 and main(['train', '--help']) == 0\n"
        "heavy = {'torch', 'anndata', 'mudata', 'scanpy', 'pandas', 'sklearn', 'matplotlib'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_config_file_wins_over_defaults_flags_win_over_config(tmp_path, capsys):
    cfg = tmp_path / "hp.toml"
    cfg.write_text("seed = 7\nepochs = 9\npretrain_epochs = 2\nkd_epochs = 1\nn_boot = 5\n")
    out = tmp_path / "run"
    mods = [f"{m}={EX / f'rosmap_small_{m}.csv'}" for m in ("mrna", "mirna")]
    argv = ["train", *mods, "--labels", str(EX / "rosmap_small_labels.csv"),
            "--config", str(cfg), "--epochs", "2", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    used = json.loads((out / "model" / "model.json").read_text())["config"]
    assert used["seed"] == 7  # --seed not given: the file's value, not the flag's default 0
    assert used["epochs"] == 2  # --epochs given: it overrides the file
    # Not a terminal (captured): the summary is plain aligned text, no box drawing.
    stdout = capsys.readouterr().out
    assert re.search(r"^split\s+head\s+n\s+accuracy", stdout, re.M), stdout
    assert not set("┃━┏│─") & set(stdout)
