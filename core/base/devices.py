"""Where and in which precision models run: one default for the rankers and the fusers."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The given device, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(
    dtype: str | torch.dtype | None, device: torch.device, *, allow_fp16: bool = True
) -> torch.dtype:
    """The given dtype (a torch dtype or its name); default bf16 on GPUs that have it, fp32 on CPU.

    ``allow_fp16=False`` for T5: it overflows in fp16, so GPUs without bf16 run it in fp32.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype != "auto":
        resolved = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16' or 'float16'")
        return resolved
    if dtype is not None and dtype != "auto":
        raise TypeError(f"dtype must be a torch.dtype, its name or None, got {type(dtype).__name__}")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16 if allow_fp16 else torch.float32
    return torch.float32
