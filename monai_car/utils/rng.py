"""Random-number-generator seeds and states, in one place.

- :func:`derive_seed` mixes a seed with other values (iteration, rank, case id) into a new, well-spread seed.
- :func:`capture_rng_states` / :func:`restore_rng_states` record python, numpy, torch (CPU and CUDA) and named
  ``torch.Generator`` states in a form that ``torch.load(..., weights_only=True)`` accepts (the engines' checkpoints).
- :func:`isolated_rng` runs a block under torch's global generator seeded afresh, restoring the outer state after.
- :func:`get_torch_rng_state` / :func:`set_torch_rng_state` read and set torch's global CPU generator and one
  device's CUDA generator, the pair that decides dropout masks and ``torch.rand*`` draws of a forward pass (the
  two-pass generator update replays chunks with them).
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from .checkpoint import CheckpointKeyError
from .validation import check_non_negative_int

__all__ = [
    "TorchRngState",
    "capture_rng_states",
    "derive_seed",
    "get_torch_rng_state",
    "isolated_rng",
    "restore_rng_states",
    "set_torch_rng_state",
]

TorchRngState = tuple[torch.Tensor, "torch.Tensor | None"]
"""``(cpu_state, cuda_state)``: torch's global CPU generator state and one CUDA device's (``None`` off CUDA)."""


def derive_seed(seed: int, *values: int | str) -> int:
    """A 63-bit seed derived from ``seed`` and further ``values`` (ints or strings), stable across processes.

    Uses numpy's ``SeedSequence`` (strings go through SHA-256 first, never python's salted ``hash``), so nearby inputs
    (iteration 7 and 8, rank 0 and 1) give unrelated seeds.

    Args:
        seed: a non-negative int.
        values: non-negative ints or strings mixed into the seed, in order.

    Returns:
        an int in ``[0, 2**63)``.

    Raises:
        ValueError: when ``seed`` or a value is not a non-negative int (or, for ``values``, a string).

    Example:
        >>> derive_seed(0, 5) == derive_seed(0, 5) != derive_seed(0, 6)
        True
    """
    entropy = [check_non_negative_int(seed, "seed")]
    for v in values:
        if isinstance(v, str):
            entropy.append(int.from_bytes(hashlib.sha256(v.encode("utf-8")).digest()[:8], "little"))
        elif isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0:
            entropy.append(int(v))
        else:
            raise ValueError(f"derive_seed values must be non-negative ints or strings, got {v!r}.")
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def capture_rng_states(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """The states of python's, numpy's and torch's global generators (CUDA too when initialised) and of ``generators``.

    Args:
        generators: named ``torch.Generator`` objects to record as well (e.g. a trainer's noise generator).

    Returns:
        A dict of tensors, ints, floats and strings only (safe for ``torch.load(weights_only=True)``), for
        :func:`restore_rng_states`.

    Raises:
        TypeError: when a value of ``generators`` is not a ``torch.Generator``.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]  # noqa: NPY002
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available() and torch.cuda.is_initialized()
        else [],
        "generators": {},
    }
    for key, gen in (generators or {}).items():
        if not isinstance(gen, torch.Generator):
            raise TypeError(f"generators[{key!r}] must be a torch.Generator, got {type(gen).__name__}.")
        states["generators"][str(key)] = gen.get_state()
    return states


def restore_rng_states(states: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None) -> None:
    """Restore what :func:`capture_rng_states` recorded.

    Args:
        states: the dict :func:`capture_rng_states` returned (possibly through ``torch.save`` / ``torch.load``).
        generators: the same named generators that were recorded, to restore in place.

    Raises:
        CheckpointKeyError: when ``states`` lacks an entry, or the named generators differ from the recorded ones.
    """
    required = ("python", "numpy", "torch", "cuda", "generators")
    missing = [k for k in required if k not in states]
    if missing:
        raise CheckpointKeyError(f"RNG states lack {missing}; they must come from capture_rng_states().")
    gens = dict(generators or {})
    recorded = dict(states["generators"])
    if set(gens) != set(recorded):
        raise CheckpointKeyError(
            f"RNG states hold generators {sorted(recorded)} but {sorted(gens)} were given to restore; "
            "pass the same named generators that were recorded."
        )
    py = states["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = states["numpy"]
    keys = torch.as_tensor(n["keys"]).cpu().numpy().astype(np.uint32)  # a map_location may have moved it
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))  # noqa: NPY002
    torch.set_rng_state(torch.as_tensor(states["torch"], dtype=torch.uint8).cpu())
    cuda_states = list(states["cuda"])
    if cuda_states and torch.cuda.is_available():
        for i, s in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(torch.as_tensor(s, dtype=torch.uint8).cpu(), i)
    for key, gen in gens.items():
        gen.set_state(torch.as_tensor(recorded[key], dtype=torch.uint8).cpu())


@contextlib.contextmanager
def isolated_rng(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Run a block with torch's global CPU (and ``device``'s CUDA) generator seeded by ``seed``, restoring the previous
    states afterwards.

    The engines wrap each iteration in this with a seed derived from (seed, iteration, rank), so dropout and every
    other draw of an iteration depend on nothing but those numbers: a resumed run repeats them exactly whatever ran in
    between (validation, data loading, other handlers).

    Args:
        seed: a non-negative int (a python ``int``).
        device: the device whose CUDA generator is seeded too (CPU only when ``None`` or a CPU device).

    Raises:
        ValueError: when ``seed`` is not a non-negative int.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
    device = torch.device(device) if device is not None else torch.device("cpu")
    cuda = device.type == "cuda"
    index = (device.index if device.index is not None else torch.cuda.current_device()) if cuda else None
    with torch.random.fork_rng(devices=[index] if cuda else [], device_type="cuda"):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


def get_torch_rng_state(device: torch.device | str) -> TorchRngState:
    """``(cpu_state, cuda_state)``: torch's global CPU generator state and, when ``device`` is a CUDA device, that
    device's generator state (``None`` otherwise).

    Args:
        device: the device the draws to replay run on.

    Returns:
        the pair, for :func:`set_torch_rng_state`.
    """
    device = torch.device(device)
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def set_torch_rng_state(state: TorchRngState, device: torch.device | str) -> None:
    """Restore a pair from :func:`get_torch_rng_state`: the CPU generator, and ``device``'s CUDA generator when the
    pair holds one.

    Args:
        state: ``(cpu_state, cuda_state)``.
        device: the CUDA device the state was read from (ignored when ``cuda_state`` is ``None``).
    """
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], torch.device(device))
