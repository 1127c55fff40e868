"""The selective scan, defined as a plain sequential loop (the definition every other backend must match).

Semantics follow the Mamba paper and mamba_ssm's ``selective_scan_ref``:

    Δ   = softplus(delta + delta_bias)          (softplus only when ``delta_softplus``)
    h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t       (h_{-1} = initial_state or 0)
    y_t = C_t · h_t + D u_t
    y   = y * silu(z)                           (when z is given)

Everything is computed in fp32 whatever the input dtypes (fp64 when u is fp64, for gradcheck); y comes back
in u's dtype and the final state in the compute dtype.
This is slow (one Python step per position) and exists to be obviously right, not fast; see scan_chunked.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def expand_groups(M: torch.Tensor, d: int, dtype: torch.dtype) -> torch.Tensor:
    """Return B or C as (b, d, n, l) in dtype: shared (b, n, l) broadcasts to every channel, grouped
    (b, g, n, l) gives channel c the group c // (d // g)."""
    M = M.to(dtype)
    if M.dim() == 3:
        return M.unsqueeze(1).expand(-1, d, -1, -1)  # (b, n, l) -> (b, d, n, l)
    return M.repeat_interleave(d // M.shape[1], dim=1)  # (b, g, n, l) -> (b, d, n, l)


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
):
    """Sequential selective scan. Shapes: u, delta, z (b, d, l); A (d, n); B, C (b, n, l) or (b, g, n, l);
    D, delta_bias (d,); initial_state (b, d, n). Returns y (b, d, l) [, h_last (b, d, n) fp32]."""
    dtype_in = u.dtype
    b, d, l = u.shape
    n = A.shape[1]
    cdt = torch.promote_types(u.dtype, torch.float32)
    u32 = u.to(cdt)
    dt = delta.to(cdt)
    if delta_bias is not None:
        dt = dt + delta_bias.to(cdt)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    A32 = A.to(cdt)
    Bx = expand_groups(B, d, cdt)  # (b, d, n, l)
    Cx = expand_groups(C, d, cdt)  # (b, d, n, l)

    if initial_state is None:
        h = u32.new_zeros(b, d, n)
    else:
        h = initial_state.to(cdt)
    # unbind (not indexing) per position: its backward is one stack, where indexing would build a full-size
    # zero gradient at every step and make the backward quadratic in l.
    ys = []
    for dt_t, u_t, B_t, C_t in zip(dt.unbind(-1), u32.unbind(-1), Bx.unbind(-1), Cx.unbind(-1)):
        decay = torch.exp(dt_t[..., None] * A32)  # (b, d, n)
        h = decay * h + (dt_t * u_t)[..., None] * B_t
        ys.append((h * C_t).sum(-1))  # (b, d)
    y = torch.stack(ys, dim=-1) if ys else u32.new_zeros(b, d, 0)  # (b, d, l)

    if D is not None:
        y = y + D.to(cdt)[:, None] * u32
    if z is not None:
        y = y * F.silu(z.to(cdt))
    y = y.to(dtype_in)
    return (y, h) if return_final_state else y
