"""CPU threads that degrade gracefully when runs share a machine (experiments/cpu_threads.py measures it).

PyTorch's CPU kernels run on OpenMP threads, one per core by default, and OpenMP threads waiting for work spin
(busy-wait) for a while before they sleep. With two runs on the same cores the spinning threads of one take the
CPU from the working threads of the other, and both slow down far more than a fair share: a demo that took 78 s
alone took 1,434 s beside the test suite. Two measures, each skipped where the user has already decided:

- `OMP_WAIT_POLICY=PASSIVE` (unless OMP_WAIT_POLICY is set): waiting threads sleep at once. OpenMP reads it when it
  is loaded, so `mambadna/__init__.py` sets it before torch is imported, and it does nothing when torch was
  imported first (a library user's choice then stands).
- `torch.set_num_threads(n)` at the start of training, evaluation and embedding (unless OMP_NUM_THREADS is set):
  n = the CPUs this process may run on (its affinity mask, e.g. from taskset or a Slurm allocation), lowered to
  the cgroup's CPU quota when a container has one; torch's own default counts the machine's cores.
DataLoader worker processes already run one torch thread each (PyTorch sets it in every worker).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"


def prefer_passive_wait() -> None:
    """Let idle OpenMP threads sleep instead of spinning, if nobody chose otherwise and OpenMP is not loaded yet."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def cpu_quota(path: Path = CGROUP_CPU_MAX) -> int | None:
    """CPUs the cgroup's quota allows (rounded up), or None without a quota."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def cpu_threads() -> int:
    """The threads a CPU run should use: the CPUs it may run on, at most the cgroup quota."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cpu_quota()
    return max(1, min(available, quota) if quota else available)


def configure_torch_threads() -> int:
    """Set torch's CPU threads to `cpu_threads()` unless OMP_NUM_THREADS says otherwise; -> the threads in use."""
    import torch

    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(cpu_threads())
    return torch.get_num_threads()
