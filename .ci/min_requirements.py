"""Print pyproject's runtime dependencies pinned to their declared minimum ("name==floor").

Used by .ci/run to install the oldest versions balmm claims to support. torch is left out:
CI installs the CPU build 2.13.0 from the machine's wheel folder in both environments.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

SKIP = {"torch"}

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
for dep in project["project"]["dependencies"]:
    m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)(\s*,.*)?", dep)
    if m is None:
        raise SystemExit(f"dependency {dep!r} has no '>=' floor to test")
    if m.group(1).lower() not in SKIP:
        print(f"{m.group(1)}=={m.group(2)}")
