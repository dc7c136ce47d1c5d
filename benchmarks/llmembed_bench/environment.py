"""What machine, packages and commit made a record (stored in every record)."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from llmembed.hardware import cpu_has_bf16, cpu_model, usable_cores


def machine_info() -> dict[str, Any]:
    """CPU, cores (all and usable), RAM, platform, load, torch threads and GPU of this machine."""
    ram_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram_gb = round(int(line.split()[1]) / 1024**2, 1)
                break
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "bf16_cpu": cpu_has_bf16(),
        "ram_gb": ram_gb,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    with contextlib.suppress(OSError, AttributeError):
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001
        pass
    return info


def package_versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in (
        "llmembed",
        "torch",
        "transformers",
        "tokenizers",
        "scikit-learn",
        "numpy",
        "safetensors",
        "setfit",
        "sentence-transformers",
    ):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_info(path: str | os.PathLike | None = None) -> dict[str, Any]:
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": bool(dirty)}


def process_tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB (Linux ``/proc``; processes
    that exit while being read are skipped). For servers with worker processes and for Ray,
    whose raylet and workers are children of the driver."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in (task / "children").read_text().split()]
    return total / 1024


def run_meta(repo: str | os.PathLike, **extra: Any) -> dict[str, Any]:
    """The ``_meta`` record of a side study's JSON: when, the load, the machine, the commit."""
    import time

    return {
        "measured": time.strftime("%Y-%m-%d %H:%M"),
        "loadavg": os.getloadavg()[0],
        **extra,
        "machine": machine_info(),
        "git": git_info(repo),
    }
