"""What the CPU is and how much of it this process may use.

One reader of ``/proc/cpuinfo`` (read once per process, cached) answers :func:`cpu_model`,
:func:`cpu_flags`, :func:`cpu_has_bf16` and :func:`cpu_has_fp16`; :func:`usable_cores` counts
the cores the process may actually run on (CPU affinity, then a cgroup v2 CPU quota), which on
a container or a ``taskset`` is fewer than :func:`os.cpu_count`. :func:`default_threads` is the
thread policy: ``LLMEMBED_THREADS`` when set, else the usable cores that other processes are not
keeping busy.

Nothing here imports torch at module import time.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import platform
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import ConfigError

__all__ = [
    "THREADS_ENV",
    "available_memory",
    "cpu_flags",
    "cpu_has_bf16",
    "cpu_has_fp16",
    "cpu_model",
    "default_threads",
    "refresh_threads",
    "torch_threads",
    "usable_cores",
]

THREADS_ENV = "LLMEMBED_THREADS"
"""Environment variable fixing the torch thread count (a positive integer)."""

_CPUINFO = Path("/proc/cpuinfo")
_PROC_CGROUP = Path("/proc/self/cgroup")
_PROC_MEMINFO = Path("/proc/meminfo")
_CGROUP_ROOT = Path("/sys/fs/cgroup")

# Native bf16 matmul: AVX512-BF16 (Cooper Lake, Zen 4+) or AMX (Sapphire Rapids+).
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# Native fp16 matmul: AVX512-FP16 (Sapphire Rapids+) or AMX-FP16 (Granite Rapids+).
_FP16_FLAGS = frozenset({"avx512_fp16", "amx_fp16"})


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


def cpu_has_fp16() -> bool:
    """True when the CPU has native fp16 matmul (avx512_fp16 or AMX-FP16)."""
    return not _FP16_FLAGS.isdisjoint(cpu_flags())


def _cgroup_dirs() -> list[Path]:
    """This process's cgroup v2 folder and its ancestors up to the root (empty off cgroup v2):
    every level may set its own limit, so the tightest one counts."""
    try:
        lines = _PROC_CGROUP.read_text().splitlines()
    except OSError:
        return []
    rel = next((line[3:] for line in lines if line.startswith("0::")), None)
    if rel is None:  # cgroup v1 only
        return []
    folder = Path(os.path.normpath(_CGROUP_ROOT / rel.strip().lstrip("/")))
    out = [folder]
    while folder != _CGROUP_ROOT and _CGROUP_ROOT in folder.parents:
        folder = folder.parent
        out.append(folder)
    return out


def _cgroup_quota_cores() -> float | None:
    """CPUs allowed by the tightest cgroup v2 ``cpu.max`` on this process's cgroup path, or None.

    ``cpu.max`` holds ``"<quota> <period>"`` (microseconds) or ``"max <period>"`` (no limit).
    """
    best: float | None = None
    for folder in _cgroup_dirs():
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            if quota != "max" and float(period) > 0:
                cores = float(quota) / float(period)
                best = cores if best is None else min(best, cores)
        except (OSError, ValueError):
            pass
    return best


def available_memory() -> int | None:
    """Bytes of memory this process can still take without swapping, or None when unknown.

    Linux ``MemAvailable`` (free memory plus the page cache the kernel can drop), capped by
    the tightest cgroup v2 ``memory.max`` minus its ``memory.current`` (a container's limit).
    Why: ``fit`` streams training features from disk when they would not fit.
    """
    best: int | None = None
    try:
        for line in _PROC_MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                best = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    for folder in _cgroup_dirs():
        try:
            limit = (folder / "memory.max").read_text().strip()
            if limit != "max":
                free = int(limit) - int((folder / "memory.current").read_text())
                best = free if best is None else min(best, free)
        except (OSError, ValueError):
            pass
    return None if best is None else max(0, best)


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


_PROC_STAT = Path("/proc/stat")
_SAMPLE_SECONDS = 0.1
_POLICY_TTL = 10.0  # seconds a measured thread count is reused (predict may be called often)
_policy_lock = threading.Lock()
_policy: tuple[float, int] | None = None
_automatic = threading.local()  # .depth: torch_threads(None) blocks open in this thread


def _busy_ticks() -> tuple[int, int] | None:
    """(busy jiffies of the whole machine, this process's jiffies), or None off Linux."""
    try:
        fields = _PROC_STAT.read_text().split("\n", 1)[0].split()[1:]
        values = [int(v) for v in fields]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        mine = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        own = int(mine[11]) + int(mine[12])  # utime + stime
    except (OSError, ValueError, IndexError):
        return None
    return sum(values[:8]) - idle, own


def busy_cores(seconds: float = _SAMPLE_SECONDS) -> float:
    """Cores kept busy by *other* processes over the next ``seconds`` (0.0 when unknown).

    Sampled from ``/proc/stat`` minus this process's own CPU time, so a process that has just
    been computing does not count itself.
    """
    first = _busy_ticks()
    if first is None:
        return 0.0
    time.sleep(seconds)
    second = _busy_ticks()
    if second is None:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    others = (second[0] - first[0]) - (second[1] - first[1])
    return max(0.0, others / ticks / seconds)


def default_threads() -> int:
    """Threads torch should use now: ``LLMEMBED_THREADS`` if set, else the usable cores
    (:func:`usable_cores`) minus those other processes keep busy, at least 1.

    Why: torch's default (every core) on a machine where another job is running oversubscribes
    it, and two cores fighting over one made 2-thread extraction 12-40x slower than 1 thread
    here. The busy measure takes 0.1 s and is reused for 10 s.

    Raises:
        ConfigError: ``LLMEMBED_THREADS`` is not a positive integer.
    """
    global _policy
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ConfigError(f"{THREADS_ENV}={env!r}: give a positive integer (threads)")
        return int(env)
    with _policy_lock:
        now = time.monotonic()
        if _policy is None or now - _policy[0] > _POLICY_TTL:
            cores = usable_cores()
            free = cores - math.floor(busy_cores() + 0.5)
            _policy = (now, max(1, min(cores, free)))
        return _policy[1]


@contextlib.contextmanager
def torch_threads(threads: int | None = None) -> Iterator[int]:
    """Run the block with ``threads`` torch threads (None: :func:`default_threads`), then
    restore the previous count; yields the count used.

    Raises:
        ConfigError: ``threads`` is not a positive integer, or as :func:`default_threads`.
    """
    import torch

    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive integer or None, not {threads!r}")
    n = threads if threads is not None else default_threads()
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    depth = getattr(_automatic, "depth", 0)
    _automatic.depth = depth + 1 if threads is None else 0
    try:
        yield n
    finally:
        _automatic.depth = depth
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def refresh_threads() -> None:
    """Inside a ``torch_threads(None)`` block, set torch's thread count to
    :func:`default_threads` again (measured at most every 10 s); elsewhere, or under an
    explicit count, do nothing.

    Why: the busy measure is a 0.1 s sample taken when a fit starts, and a blip then (a
    process starting, a job finishing) would hold an hour-long extraction at one thread on an
    idle machine, or at two on a machine that became busy. Long loops call this between units
    of work (extraction: between batches, :meth:`llmembed.backbones.Backbone.iter_embed`).
    """
    if getattr(_automatic, "depth", 0) == 0:
        return
    import torch

    n = default_threads()
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
