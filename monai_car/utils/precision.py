"""Which precision a training stage runs in: ``amp`` settings of the bundles, resolved for the machine at hand."""

from __future__ import annotations

from pathlib import Path

import torch

from .validation import check_bool

__all__ = ["has_native_bf16", "resolve_amp"]

_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def has_native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` is a CPU with bfloat16 arithmetic in hardware (AMX or AVX512-BF16).

    On such CPUs ``torch.autocast("cpu")`` (bfloat16) runs G and D's convolutions in oneDNN's bf16 kernels, several
    times faster than fp32; elsewhere bfloat16 is emulated and slower. Any other device type gives False.
    """
    device = torch.device(device)
    if device.type != "cpu":
        return False
    probes = [getattr(torch.cpu, n, None) for n in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if all(callable(p) for p in probes):
        return any(bool(p()) for p in probes)
    cpuinfo = Path("/proc/cpuinfo")  # torch builds without the probes
    flags = cpuinfo.read_text(errors="replace").split() if cpuinfo.exists() else []
    return any(flag in flags for flag in _CPU_BF16_FLAGS)


def resolve_amp(setting: bool | str, device: torch.device | str, default: bool = False) -> bool:
    """A stage's ``amp`` setting as the bool its trainer takes.

    Args:
        setting: True / False (or the words ``true`` / ``false``, as the bundle CLI passes them); ``"auto"``:
            ``default``, or bfloat16 autocast where the device is a CPU with native bfloat16
            (:func:`has_native_bf16`) -- fp32 on other CPUs and on GPUs.
        device: the device the stage trains on.
        default: the run-wide ``amp`` (``"auto"`` never turns it off).

    Raises:
        ValueError: ``setting`` is none of true, false, "auto" (or ``default`` is not a bool).
    """
    default = check_bool(default, "amp (the run-wide setting)")
    if isinstance(setting, str) and setting.strip().lower() == "auto":
        return default or has_native_bf16(device)
    try:
        return check_bool(setting, "amp")
    except ValueError:
        raise ValueError(f'amp must be true, false or "auto", got {setting!r}.') from None
