"""The tensors MambaMixer hands the selective scan, with the model's own strides, for the scan scripts' "model" layout.

The mixer computes u, Δ, z, B, C from its linear layers' (b, l, ·) outputs and transposes them into (b, d, l) views
(mambadna/model.py, `MambaMixer.ssm`); which of them are views and with which strides depends on those ops (and, for
the convolution's output, on the backend). Rather than restate that here, a real mixer of the same width is run once
and its call to the scan is intercepted, so the benchmark and the GPU check follow model.py if it changes.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from mambadna import model as model_module
from mambadna.config import MambaConfig


class _Captured(Exception):
    pass


def model_scan_views(b: int, d: int, l: int, n: int, dtype: torch.dtype, device) -> dict[str, torch.Tensor]:
    """u, delta, z (b, d, l) and B, C (b, n, l) laid out as a d_inner = d mixer passes them under `dtype` autocast
    (fp32: none). Their values are left as computed from uninitialised input: callers fill them in place."""
    mixer = model_module.MambaMixer(MambaConfig(d_model=d // 2, n_layer=1, d_state=n)).to(device)
    seen = {}

    def capture(u, delta, A, B, C, D=None, z=None, **_):
        seen.update(u=u, delta=delta, z=z, B=B, C=C)
        raise _Captured

    amp = nullcontext() if dtype == torch.float32 else torch.autocast(torch.device(device).type, dtype=dtype)
    real = model_module.selective_scan
    model_module.selective_scan = capture
    try:
        with torch.no_grad(), amp:
            mixer.ssm(*mixer.project(torch.zeros(b, l, d // 2, device=device, dtype=dtype)))
    except _Captured:
        pass
    finally:
        model_module.selective_scan = real
    return seen


def out_grad_view(b: int, d: int, l: int, dtype: torch.dtype, device, generator=None) -> torch.Tensor:
    """The gradient of the scan's output as the model's backward delivers it: y is used as y.transpose(1, 2) by
    out_proj, so its gradient is a (b, d, l) view of (b, l, d) storage."""
    return torch.randn(b, l, d, device=device, generator=generator).to(dtype).transpose(1, 2)
