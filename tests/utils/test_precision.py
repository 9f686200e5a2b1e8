"""The amp setting of a training stage: "auto" is bf16 autocast only on CPUs with native bfloat16."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from monai_car.utils import precision
from monai_car.utils.precision import has_native_bf16, resolve_amp


def test_native_bf16_agrees_with_the_cpu_flags():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo on this system to compare with")
    flags = set(cpuinfo.read_text(errors="replace").split())
    assert has_native_bf16("cpu") == bool(flags & {"amx_bf16", "avx512_bf16"})
    assert has_native_bf16(torch.device("meta")) is False and has_native_bf16("cuda") is False


def test_native_bf16_falls_back_to_the_flags_without_torch_probes(monkeypatch, tmp_path):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    fake = tmp_path / "cpuinfo"
    monkeypatch.setattr(precision, "Path", lambda _: fake)
    fake.write_text("flags\t\t: fpu sse avx2 avx512f\n")
    assert has_native_bf16("cpu") is False
    fake.write_text("flags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    assert has_native_bf16("cpu") is True


@pytest.mark.parametrize("native", [True, False])
def test_resolve_amp(monkeypatch, native):
    monkeypatch.setattr(precision, "has_native_bf16", lambda device: native)
    assert resolve_amp("auto", "cpu") is native
    assert resolve_amp("AUTO", "cpu", default=True) is True  # "auto" never turns a run-wide amp off
    assert resolve_amp(True, "cpu") is True and resolve_amp(False, "cpu", default=True) is False
    # the bundle CLI passes --stage2#amp false / --amp true as words
    assert resolve_amp("false", "cpu") is False and resolve_amp("True", "cpu") is True
    assert resolve_amp("auto", "cpu", default="true") is True
    for bad in ("maybe", 2, None):
        with pytest.raises(ValueError, match="auto"):
            resolve_amp(bad, "cpu")
