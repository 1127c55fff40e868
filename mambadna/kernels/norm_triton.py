"""RMSNorm forward and backward in Triton, for the model setting `norm_backend` (mambadna/model.py, RMSNorm).

    x (..., d), weight (d,)  ->  y = x · rstd · weight  (..., d) in weight's dtype,  rstd = rsqrt(mean(x²) + eps)
    backward: x̂ = x · rstd, g = dy · weight;  dx = rstd · (g − x̂ · mean(g · x̂)) in x's dtype;  dweight = Σ dy · x̂

Leading dims are flattened to rows; all arithmetic is fp32. The eager norm is ~5 kernels forward and ~10 backward,
each a pass over the (b, l, d) fp32 residual stream (18% of a training step's kernel time went to element-wise
kernels, experiments/results/gpu_scan_h100_2026-12-07f/); these are one launch each way plus a small sum. A program
holds BLOCK_M whole rows in registers; the forward saves rstd (rows,) fp32 so the backward reads x and dy once.
dweight is summed per backward program into (programs, d) fp32 partials, then over programs by torch in a fixed
order: deterministic, no atomics. `rms_norm_ref` is the eager module's math, the tests' reference.

Names: ``i_`` ids, ``o_`` offsets, ``m_`` masks, ``p_`` pointers, ``b_`` blocks, ``s_`` strides; row offsets int64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mambadna.kernels.buffers import alloc

# Widest row: 16 fp32 values a thread a tensor at 16 warps, where the sm_90 build of the backward takes 115 registers
# without spilling (tests/kernels/test_norm_triton_compile.py); at 16384 it spills.
MAX_D = 8192
TILE = 2048  # elements a program holds per tensor: BLOCK_M = TILE // BLOCK_D rows (one row when d > TILE)
ELEMENTS_PER_THREAD = 8  # num_warps = tile / (32 · 8): a thread holds 8 values of a tile (two 128-bit fp32 accesses)
BWD_PROGRAMS = 1024  # at most this many backward programs (so as many dweight partials), whatever the GPU


@triton.jit
def _rms_norm_fwd(p_x, p_w, p_y, p_rstd, M, D, s_x, eps, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    o_m = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    o_d = tl.arange(0, BLOCK_D)
    m_m, m_d = o_m < M, o_d < D
    m = m_m[:, None] & m_d[None, :]
    b_x = tl.load(p_x + o_m[:, None] * s_x + o_d[None, :], mask=m, other=0.0).to(tl.float32)
    b_rstd = tl.rsqrt(tl.sum(b_x * b_x, axis=1) / D + eps)  # (BLOCK_M,); padded columns add 0
    b_w = tl.load(p_w + o_d, mask=m_d, other=0.0).to(tl.float32)
    b_y = b_x * b_rstd[:, None] * b_w[None, :]  # the eager order: (x · rstd) · w
    tl.store(p_y + o_m[:, None] * D + o_d[None, :], b_y.to(p_y.dtype.element_ty), mask=m)
    tl.store(p_rstd + o_m, b_rstd, mask=m_m)


@triton.jit
def _rms_norm_bwd(p_x, p_w, p_dy, p_rstd, p_dx, p_dw, M, D, s_x, s_dy, BLOCKS, BLOCK_M: tl.constexpr,
         BLOCK_D: tl.constexpr):
    # Program i takes row blocks i·BLOCKS ... (i+1)·BLOCKS − 1, so its dweight partial covers BLOCKS·BLOCK_M rows.
    i_p = tl.program_id(0)
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < D
    b_w = tl.load(p_w + o_d, mask=m_d, other=0.0).to(tl.float32)
    b_dw = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for i in range(0, BLOCKS):
        o_m = ((i_p * BLOCKS + i) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        m_m = o_m < M
        m = m_m[:, None] & m_d[None, :]
        # rows past M load zeros everywhere, so they add nothing to dweight
        b_x = tl.load(p_x + o_m[:, None] * s_x + o_d[None, :], mask=m, other=0.0).to(tl.float32)
        b_dy = tl.load(p_dy + o_m[:, None] * s_dy + o_d[None, :], mask=m, other=0.0).to(tl.float32)
        b_rstd = tl.load(p_rstd + o_m, mask=m_m, other=0.0)
        b_xhat = b_x * b_rstd[:, None]
        b_g = b_dy * b_w[None, :]
        b_c = tl.sum(b_g * b_xhat, axis=1) / D  # (BLOCK_M,) mean(g · x̂) of each row
        b_dx = b_rstd[:, None] * (b_g - b_xhat * b_c[:, None])
        tl.store(p_dx + o_m[:, None] * D + o_d[None, :], b_dx.to(p_dx.dtype.element_ty), mask=m)
        b_dw += tl.sum(b_dy * b_xhat, axis=0)
    tl.store(p_dw + i_p * D + o_d, b_dw, mask=m_d)


def launch_shape(d: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_D, num_warps) for rows of width d; ValueError above MAX_D."""
    if d > MAX_D:
        raise ValueError(f"the Triton RMSNorm holds a row in registers, at most {MAX_D} wide; got d = {d}: use "
                         "norm_backend torch")
    block_d = triton.next_power_of_2(d)
    block_m = max(1, TILE // block_d)
    num_warps = min(16, max(1, block_m * block_d // (32 * ELEMENTS_PER_THREAD)))
    return block_m, block_d, num_warps


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(..., d) -> (rows, d) with the last dim contiguous: a view where the leading dims merge, else a copy."""
    d = t.shape[-1]
    if t.stride(-1) != 1 and d > 1:
        t = t.contiguous()
    return t.reshape(-1, d)


def _check(x: torch.Tensor, weight: torch.Tensor) -> None:
    if x.dim() < 1 or weight.dim() != 1 or x.shape[-1] != weight.shape[0]:
        raise ValueError(f"RMSNorm needs x (..., d) and weight (d,); got {tuple(x.shape)} and {tuple(weight.shape)}")
    if not (x.is_floating_point() and weight.is_floating_point()):
        raise ValueError(f"RMSNorm needs floating-point x and weight; got {x.dtype} and {weight.dtype}")
    if x.device != weight.device:
        raise ValueError(f"x is on {x.device} but weight is on {weight.device}")


def forward(x2: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x2 (rows, d), last dim contiguous -> (y (rows, d) in weight's dtype, rstd (rows,) fp32)."""
    m, d = x2.shape
    block_m, block_d, warps = launch_shape(d)
    y = alloc((m, d), weight.dtype, x2.device)
    rstd = alloc((m,), torch.float32, x2.device)
    if m:
        _rms_norm_fwd[(triton.cdiv(m, block_m),)](x2, weight, y, rstd, m, d, x2.stride(0), eps, BLOCK_M=block_m,
                                                  BLOCK_D=block_d, num_warps=warps)
    return y, rstd


def backward(dy2: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """dy2, x2 (rows, d), last dims contiguous -> (dx (rows, d) in x's dtype, dweight (d,) in weight's dtype)."""
    m, d = x2.shape
    block_m, block_d, warps = launch_shape(d)
    n_blocks = triton.cdiv(m, block_m)
    per_program = triton.cdiv(n_blocks, BWD_PROGRAMS)
    programs = triton.cdiv(n_blocks, per_program) if m else 0
    dx = alloc((m, d), x2.dtype, x2.device)
    dw_part = alloc((programs, d), torch.float32, x2.device)
    if m:
        _rms_norm_bwd[(programs,)](x2, weight, dy2, rstd, dx, dw_part, m, d, x2.stride(0), dy2.stride(0),
                                   per_program, BLOCK_M=block_m, BLOCK_D=block_d, num_warps=warps)
    return dx, dw_part.sum(0).to(weight.dtype)  # a fixed-order reduction over programs (deterministic)


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        x2, w = _rows(x), weight.contiguous()
        y, rstd = forward(x2, w, eps)
        ctx.save_for_backward(x2, w, rstd)
        ctx.shape = x.shape
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x2, w, rstd = ctx.saved_tensors
        dx, dw = backward(_rows(dy), x2, w, rstd)
        return dx.view(ctx.shape), dw, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x (..., d), weight (d,) -> RMSNorm(x) · weight (..., d) in weight's dtype, differentiable in x and weight."""
    _check(x, weight)
    return RMSNormFunction.apply(x, weight, eps)


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The eager mambadna.model.RMSNorm op for op (in fp32; in float64 for float64 inputs, the tests' exact run)."""
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    x32 = x.to(compute)
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return (normed * weight.to(compute)).to(weight.dtype)
