"""How many CPU threads this process may use: the default of every command.

``os.cpu_count()`` counts the node's cores; a batch job usually gets a few of them (a
128-core node with 2 allocated CPUs). The usable count is the smallest of the CPU
affinity mask, the cgroup CPU quota and ``SLURM_CPUS_PER_TASK``. :func:`scoped_threads`
limits torch and BLAS to a count for one block.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path

CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1 = (
    Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
    Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
)


def cgroup_cpus(v2: Path = CGROUP_V2, v1: tuple[Path, Path] = CGROUP_V1) -> float | None:
    """The cgroup CPU quota in CPUs (``200000 100000`` -> 2.0); None when unlimited/absent."""
    try:
        quota, period = v2.read_text().split()[:2]
        if quota == "max":
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us, period_us = (int(p.read_text().strip()) for p in v1)
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def available_cpus(env: dict[str, str] | None = None) -> int:
    """CPUs this process may use: affinity mask, cgroup quota and SLURM_CPUS_PER_TASK."""
    env = os.environ if env is None else env
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    quota = cgroup_cpus()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    slurm = env.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm.isdigit() and int(slurm) > 0:
        n = min(n, int(slurm))
    return max(1, n)


def default_threads(jobs: int = 1) -> int:
    """Threads per process when ``jobs`` processes share the available CPUs."""
    return max(1, available_cpus() // max(1, jobs))


@contextlib.contextmanager
def scoped_threads(n: int | None) -> Iterator[None]:
    """Limit torch and BLAS threads to ``n`` for the duration of a block (restored after)."""
    if n is None:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(old)
