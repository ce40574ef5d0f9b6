"""Resolve `device=` and `dtype=` arguments once, in one place."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from personas.errors import PersonasError

if TYPE_CHECKING:
    import torch

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float64": "float64",
}


def resolve_device(device: str | torch.device | None = "cpu") -> torch.device:
    """Turn "auto", "cpu", "cuda", "cuda:1", "mps" or None into a `torch.device`.

    "auto" picks CUDA when it is available, then MPS, then the CPU.
    """
    import torch

    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise PersonasError(
            f"device={device!r} is not a device torch knows; expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'."
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise PersonasError(
            f"device={device!r} was asked for but CUDA is not available here; pass device='cpu' or 'auto'."
        )
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None = "float32", device: torch.device | None = None) -> torch.dtype:
    """Turn a dtype name ("float32", "bf16", "auto"...) or a `torch.dtype` into a `torch.dtype`.

    "auto" is bfloat16 on CUDA devices that support it and float32 elsewhere.
    """
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.float32
    if dtype == "auto":
        if device is not None and device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    name = _DTYPES.get(str(dtype).lower().removeprefix("torch."))
    if name is None:
        raise PersonasError(f"dtype={dtype!r} is not supported; expected one of {sorted(set(_DTYPES))} or 'auto'.")
    return getattr(torch, name)


def sae_dtype(model_dtype: str | torch.dtype | None, device: str | torch.device | None = "cpu") -> str | torch.dtype:
    """The dtype an SAE runs at beside a model at ``model_dtype``: the model's on accelerators, float32 on the CPU.

    On the CPU a bfloat16 model is ~4x faster than float32 (AMX), but a bfloat16 SAE is not: its wide encoder matmul
    and TopK ran slower there than at float32 (the demo's capture took longer than the float32 run), and rounding
    the pre-activations to 8 bits reorders near-tied latents. The activations are cast to the SAE's dtype on entry
    (`personas.saes.encode_sparse`), so only the model runs at bfloat16.
    """
    resolved = resolve_device(device)  # "auto" and "cuda:1" alike
    return "float32" if resolved.type == "cpu" else (model_dtype if model_dtype is not None else "float32")


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_threads() -> int:
    """The thread count the command line uses when none is given: ``$PERSONAS_THREADS``, else every available CPU.

    Measured on an idle 2-core machine (`benchmarks/bench_dtype.py --dtypes float32 --threads 2,1`), the demo's
    SmolLM2 capture took 109.6 s at 2 threads and 183.7 s at 1: all the CPUs is fastest when nothing else runs,
    as torch's own default assumes. On a busy machine fewer threads can be faster (one thread made ``personas
    rank`` 2.6x faster on a 2-core machine under load): set ``PERSONAS_THREADS`` or ``--threads`` there.
    """
    env = os.environ.get("PERSONAS_THREADS")
    if env:
        try:
            value = int(env)
        except ValueError:
            raise PersonasError(f"PERSONAS_THREADS={env!r} is not a whole number; expected e.g. 4, or unset it.") from None
        if value < 1:
            raise PersonasError(f"PERSONAS_THREADS={env!r}; expected at least 1.")
        return value
    return available_cpus()


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to ``n`` (default `default_threads()`); return the number set."""
    import torch

    if n is None:
        n = default_threads()
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise PersonasError(f"threads={n!r}; expected a whole number >= 1 (e.g. --threads 4).")
    torch.set_num_threads(n)
    return n
