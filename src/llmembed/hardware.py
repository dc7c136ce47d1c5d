"""What the CPU is and how much of it this process may use.

One reader of ``/proc/cpuinfo`` (read once per process, cached) answers :func:`cpu_model`,
:func:`cpu_flags` and :func:`cpu_has_bf16`; :func:`usable_cores` counts the cores the process
may actually run on (CPU affinity, then a cgroup v2 CPU quota), which on a container or a
``taskset`` is fewer than :func:`os.cpu_count`.

Nothing here imports torch.
"""

from __future__ import annotations

import functools
import math
import os
import platform
from pathlib import Path

__all__ = ["cpu_flags", "cpu_has_bf16", "cpu_model", "usable_cores"]

_CPUINFO = Path("/proc/cpuinfo")
_PROC_CGROUP = Path("/proc/self/cgroup")
_CGROUP_ROOT = Path("/sys/fs/cgroup")

# Native bf16 matmul: AVX512-BF16 (Cooper Lake, Zen 4+) or AMX (Sapphire Rapids+).
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> str:
    """Text of /proc/cpuinfo, or "" where there is none (macOS, Windows) or it is unreadable."""
    try:
        return _CPUINFO.read_text(errors="replace")
    except OSError:
        return ""


def _fields(name: str) -> list[str]:
    """Values of every ``name : value`` line of /proc/cpuinfo (one per logical CPU)."""
    out = []
    for line in _cpuinfo().splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            out.append(value.strip())
    return out


def cpu_model() -> str:
    """The CPU's model name, e.g. ``"AMD EPYC 9B14"``.

    From /proc/cpuinfo (``model name``, or ``Model`` / ``Hardware`` on ARM boards), else
    :func:`platform.processor`, else :func:`platform.machine`, else ``"unknown"``.
    """
    for key in ("model name", "Model", "Hardware"):
        values = [v for v in _fields(key) if v]
        if values:
            return values[0]
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> frozenset[str]:
    """Feature flags of the CPU (x86 ``flags``, ARM ``Features``), lower case; empty if unknown.

    The union over all logical CPUs listed in /proc/cpuinfo.
    """
    flags: set[str] = set()
    for key in ("flags", "Features"):
        for value in _fields(key):
            flags.update(value.lower().split())
    return frozenset(flags)


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matmul (avx512_bf16 or AMX), where bf16 is ~4x faster."""
    return not _BF16_FLAGS.isdisjoint(cpu_flags())


def _cgroup_quota_cores() -> float | None:
    """CPUs allowed by the tightest cgroup v2 ``cpu.max`` on this process's cgroup path, or None.

    ``cpu.max`` holds ``"<quota> <period>"`` (microseconds) or ``"max <period>"`` (no limit);
    every ancestor cgroup may set its own limit, so the smallest quota / period counts.
    """
    try:
        lines = _PROC_CGROUP.read_text().splitlines()
    except OSError:
        return None
    rel = next((line[3:] for line in lines if line.startswith("0::")), None)
    if rel is None:  # cgroup v1 only
        return None
    folder = Path(os.path.normpath(_CGROUP_ROOT / rel.strip().lstrip("/")))
    best: float | None = None
    while True:
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            if quota != "max" and float(period) > 0:
                cores = float(quota) / float(period)
                best = cores if best is None else min(best, cores)
        except (OSError, ValueError):
            pass
        if folder == _CGROUP_ROOT or _CGROUP_ROOT not in folder.parents:
            return best
        folder = folder.parent


def usable_cores() -> int:
    """Cores this process may run on: at least 1.

    ``len(os.sched_getaffinity(0))`` where the platform has it (Linux), else
    :func:`os.cpu_count`; then capped by a cgroup v2 CPU quota (``cpu.max``, as set by Docker
    ``--cpus`` or Kubernetes CPU limits), rounded up: a quota of 1.5 CPUs gives 2.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_quota_cores()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)
