"""llmembed.hardware: /proc/cpuinfo parsing, bf16 detection and usable cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmembed import hardware

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
