"""Packaging: licence, typing marker, one version, and only MIT-compatible bundled data."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import balmm

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "src" / "balmm"


def test_license_and_typing_marker_are_shipped():
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the balmm authors" in text
    assert (PKG / "py.typed").is_file()
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "MIT"
    assert "py.typed" in meta["tool"]["setuptools"]["package-data"]["balmm"]


def test_version_is_defined_once():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "balmm.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", balmm.__version__)


def test_every_bundled_data_file_is_listed_with_an_mit_licence():
    readme = (PKG / "example_data" / "README.md").read_text()
    rows = [ln for ln in readme.splitlines() if ln.startswith("| `")]
    licensed = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        for name in re.findall(r"`([^`]+)`", cells[0]):
            licensed[name] = cells[-1]
    data = sorted(
        p.name for p in (PKG / "example_data").iterdir() if p.suffix in {".h5mu", ".h5ad", ".csv"}
    )
    assert data, "no bundled example data found"
    for name in data:
        assert name in licensed, f"{name} is not listed in example_data/README.md"
        assert licensed[name].startswith("MIT"), f"{name}: licence {licensed[name]!r}"
