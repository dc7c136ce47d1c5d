"""llmembed.hardware: /proc/cpuinfo parsing, bf16 detection and usable cores."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from llmembed import hardware
from llmembed.errors import LLMEmbedError

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme avx2 avx512f amx_bf16 amx_tile

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme avx2 avx512f amx_bf16 amx_tile
"""
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 bf16

Hardware\t: Some SoC
"""
OLD_X86 = "processor\t: 0\nmodel name\t: Intel(R) Core(TM) i7-8550U\nflags\t\t: fpu avx2 avx512f\n"


@pytest.fixture
def cpuinfo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    def use(text: str | None) -> None:
        path = tmp_path / "cpuinfo"
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(text)
        monkeypatch.setattr(hardware, "_CPUINFO", path)
        hardware._cpuinfo.cache_clear()

    yield use
    hardware._cpuinfo.cache_clear()


def test_x86(cpuinfo) -> None:
    cpuinfo(X86)
    assert hardware.cpu_model() == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"avx2", "amx_bf16", "fpu"} <= hardware.cpu_flags()
    assert hardware.cpu_has_bf16()
    cpuinfo(OLD_X86)
    assert hardware.cpu_model() == "Intel(R) Core(TM) i7-8550U"
    assert not hardware.cpu_has_bf16()  # avx512f alone is not bf16
    assert not hardware.cpu_has_fp16()
    cpuinfo(X86.replace("amx_tile", "amx_tile avx512_fp16"))
    assert hardware.cpu_has_fp16()


def test_arm_and_missing(cpuinfo, monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo(ARM)
    assert hardware.cpu_model() == "Some SoC"
    assert "asimd" in hardware.cpu_flags()
    assert not hardware.cpu_has_bf16()  # ARM bf16 is not the x86 matmul path
    cpuinfo(None)
    monkeypatch.setattr(hardware.platform, "processor", lambda: "")
    monkeypatch.setattr(hardware.platform, "machine", lambda: "arm64")
    assert hardware.cpu_model() == "arm64"
    assert hardware.cpu_flags() == frozenset()
    assert not hardware.cpu_has_bf16()


def test_cpuinfo_is_read_once(cpuinfo, tmp_path: Path) -> None:
    cpuinfo(X86)
    assert hardware.cpu_has_bf16()
    (tmp_path / "cpuinfo").write_text(OLD_X86)
    assert hardware.cpu_has_bf16()  # cached for the process


def _cgroups(tmp_path: Path, rel: str, limits: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for folder, value in limits.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "cpu.max").write_text(value + "\n")
    proc = tmp_path / "self-cgroup"
    proc.write_text(f"0::{rel}\n")
    return root, proc


@pytest.mark.parametrize(
    "rel,limits,want",
    [
        ("/", {".": "max 100000"}, 64),
        ("/", {".": "150000 100000"}, 2),  # 1.5 CPUs -> 2
        ("/", {".": "50000 100000"}, 1),
        ("/a/b", {"a": "200000 100000", "a/b": "max 100000"}, 2),  # a parent's limit counts
        ("/a/b", {"a": "400000 100000", "a/b": "300000 100000"}, 3),
        ("/a", {}, 64),  # no cpu.max anywhere
    ],
)
def test_usable_cores_cgroup_quota(monkeypatch, tmp_path, rel, limits, want) -> None:
    root, proc = _cgroups(tmp_path, rel, limits)
    monkeypatch.setattr(hardware, "_CGROUP_ROOT", root)
    monkeypatch.setattr(hardware, "_PROC_CGROUP", proc)
    monkeypatch.setattr(hardware.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert hardware.usable_cores() == want


def test_usable_cores_without_affinity_or_cgroups(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(hardware, "_PROC_CGROUP", tmp_path / "none")
    monkeypatch.delattr(hardware.os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(hardware.os, "cpu_count", lambda: None)
    assert hardware.usable_cores() == 1


def test_usable_cores_here() -> None:
    n = hardware.usable_cores()
    assert 1 <= n <= (os.cpu_count() or 1)


@pytest.fixture
def fresh_policy(monkeypatch):
    monkeypatch.delenv(hardware.THREADS_ENV, raising=False)
    monkeypatch.setattr(hardware, "_policy", None)
    return monkeypatch


@pytest.mark.parametrize("busy,cores,want", [(0.0, 2, 2), (0.6, 2, 1), (1.0, 2, 1), (7.0, 4, 1)])
def test_default_threads_leaves_busy_cores_alone(fresh_policy, busy, cores, want):
    fresh_policy.setattr(hardware, "busy_cores", lambda seconds=0.1: busy)
    fresh_policy.setattr(hardware, "usable_cores", lambda: cores)
    assert hardware.default_threads() == want


def test_threads_env_wins_and_is_checked(fresh_policy):
    fresh_policy.setenv(hardware.THREADS_ENV, "3")
    assert hardware.default_threads() == 3
    for bad in ("0", "-1", "two", "1.5"):
        fresh_policy.setenv(hardware.THREADS_ENV, bad)
        with pytest.raises(LLMEmbedError, match="LLMEMBED_THREADS"):
            hardware.default_threads()


def test_torch_threads_sets_and_restores():
    import torch

    before = torch.get_num_threads()
    with hardware.torch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(LLMEmbedError, match="positive integer"), hardware.torch_threads(0):
        pass


def test_refresh_threads_follows_the_load_inside_automatic_blocks_only(fresh_policy):
    import torch

    load = [1.0]  # another process keeps one of two cores busy when the block opens
    fresh_policy.setattr(hardware, "busy_cores", lambda seconds=0.1: load[0])
    fresh_policy.setattr(hardware, "usable_cores", lambda: 2)
    fresh_policy.setattr(hardware, "_POLICY_TTL", 0.0)
    before = torch.get_num_threads()
    with hardware.torch_threads() as n:
        assert n == 1 and torch.get_num_threads() == 1
        load[0] = 0.0  # ... and then finishes
        hardware.refresh_threads()
        assert torch.get_num_threads() == 2
        with hardware.torch_threads(1):  # an explicit count is never overridden
            hardware.refresh_threads()
            assert torch.get_num_threads() == 1
        load[0] = 1.0
        hardware.refresh_threads()
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    hardware.refresh_threads()  # outside any block: nothing changes
    assert torch.get_num_threads() == before


def test_busy_cores_sees_another_busy_process():
    import subprocess
    import sys

    if not Path("/proc/stat").exists():
        pytest.skip("no /proc/stat")
    spin = subprocess.Popen(
        [sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<3: pass"]
    )
    try:
        time.sleep(0.5)
        assert hardware.busy_cores(0.5) >= 0.5  # the spinning process keeps one core busy
    finally:
        spin.kill()
