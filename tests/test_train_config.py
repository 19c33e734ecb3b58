"""TrainConfig: TOML loading, overrides, and errors naming the key (CLI exit 2)."""

from __future__ import annotations

import pytest

from balmm.cli.app import main
from balmm.config import TrainConfig, load_config
from balmm.errors import ConfigError


def test_defaults_and_toml_and_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('balancer = "none"\nlr = 1\nepochs = 7\n[train]\ndropout = 0.1\n')
    cfg = load_config(p, {"epochs": 3, "seed": None})
    assert cfg.balancer == "none"
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)  # int accepted for a float key
    assert cfg.epochs == 3  # the override wins; None means "not given"
    assert cfg.dropout == 0.1
    assert cfg.hidden == TrainConfig().hidden


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("learning_rate = 0.1\n", "learning_rate"),
        ('epochs = "ten"\n', "epochs"),
        ("kd = 1\n", "kd"),
        ('balancer = "magic"\n', "balancer"),
        ("dropout = 1.5\n", "dropout"),
    ],
)
def test_bad_keys_name_the_key(tmp_path, text, key):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=key):
        load_config(p)


def test_invalid_toml(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("epochs = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)


def test_cli_bad_config_key_exits_2(tmp_path, capsys):
    p = tmp_path / "c.toml"
    p.write_text("no_such_key = 3\n")
    code = main(["train", "--config", str(p), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "no_such_key" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_cli_bad_set_value_exits_2(tmp_path, capsys):
    code = main(["train", "--set", "epochs=abc", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "epochs" in capsys.readouterr().err
