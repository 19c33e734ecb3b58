"""Named pause points for the fault-injection tests (tests/test_faults.py).

With ``BALMM_TEST_PAUSE_AT=NAME`` a process stops at the point ``NAME`` (``open``,
``load``, a progress task such as ``stage2``, ``commit``, ``unit1``, ...), writes its PID
to ``BALMM_TEST_PAUSE_READY`` when set, and sleeps ``BALMM_TEST_PAUSE_S`` seconds (60),
so a test can kill it exactly there. Without the variable this does nothing.
"""

from __future__ import annotations

import os
import time


def pause_point(name: str) -> None:
    """Wait here when the fault-injection tests ask for it (see the module doc)."""
    want = os.environ.get("BALMM_TEST_PAUSE_AT")
    if not want or want != name:
        return
    ready = os.environ.get("BALMM_TEST_PAUSE_READY")
    if ready:
        with open(ready, "w") as fh:
            fh.write(str(os.getpid()))
    time.sleep(float(os.environ.get("BALMM_TEST_PAUSE_S", "60")))
