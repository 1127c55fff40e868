"""Output buffers of the Triton scans (v1 and v2), NaN-poisoned on request.

With ``MAMBADNA_POISON_OUTPUTS=1`` in the environment (or ``buffers.POISON_OUTPUTS = True``, which tests set) every
buffer a kernel is meant to fill starts as NaN, so an element a kernel forgot to write fails any comparison.
"""

from __future__ import annotations

import os

import torch

POISON_OUTPUTS = os.environ.get("MAMBADNA_POISON_OUTPUTS", "") == "1"


def alloc(shape, dtype, device) -> torch.Tensor:
    if POISON_OUTPUTS:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def alloc_like(x: torch.Tensor, dtype=None) -> torch.Tensor:
    """A (b, d, l) output in x's layout: (b, l, d) storage viewed as (b, d, l) when x is such a view (channels-last),
    else (b, d, l) contiguous."""
    b, d, l = x.shape
    dtype = dtype or x.dtype
    if x.stride(1) == 1 and x.stride(2) != 1 and d > 1:
        return alloc((b, l, d), dtype, x.device).transpose(1, 2)
    return alloc((b, d, l), dtype, x.device)
