"""One-token recurrent step of a Mamba mixer, fused into two Triton kernels (plus an RMSNorm kernel).

Decoding one token through a mixer in eager PyTorch is ~35 small kernels per layer, and at batch 1 each costs
more to launch than to run; the decoder replays them from a CUDA graph (mambadna/inference.py), where what is
left is their count. These kernels cut a layer to seven launches: RMSNorm, in_proj, `conv_step`, x_proj,
`ssm_step`, out_proj and the residual add. The reference is the eager `MambaMixer.step` in mambadna/model.py;
tests compare the two in Triton's interpreter on the CPU.

    conv_step   conv state (b, d_inner, d_conv) <- shifted left, x appended;  x' = silu(conv(state) + bias)
    ssm_step    Δ = softplus(x_dbl[:, :r] @ W_dtᵀ + b_dt);  h <- exp(Δ A) h + Δ x' B;  y = (C·h + D x') silu(z)

Names: ``i_`` ids, ``o_`` offsets, ``m_`` masks, ``p_`` pointers, ``b_`` blocks; row offsets are int64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_D = 64  # channels a program: at batch 1, d_inner 512 gives 8 programs; the step is latency-bound anyway


@triton.jit
def _rmsnorm(p_x, p_w, p_out, D, s_x, s_out, eps, BLOCK: tl.constexpr):
    i_b = tl.program_id(0).to(tl.int64)
    o_d = tl.arange(0, BLOCK)
    m_d = o_d < D
    b_x = tl.load(p_x + i_b * s_x + o_d, mask=m_d, other=0.0).to(tl.float32)
    b_inv = 1.0 / tl.sqrt(tl.sum(b_x * b_x, axis=0) / D + eps)
    b_w = tl.load(p_w + o_d, mask=m_d, other=0.0).to(tl.float32)
    tl.store(p_out + i_b * s_out + o_d, (b_x * b_inv * b_w).to(p_out.dtype.element_ty), mask=m_d)


@triton.jit
def _conv_step(p_xz, p_conv, p_w, p_bias, p_x, D_INNER, s_xz, s_cb, s_cd, s_x,
               K: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr):
    i_b, i_blk = tl.program_id(0).to(tl.int64), tl.program_id(1)
    o_d = i_blk * BLOCK_D + tl.arange(0, BLOCK_D).to(tl.int64)
    o_k = tl.arange(0, BLOCK_K)
    m_d = o_d < D_INNER
    m_dk = m_d[:, None] & (o_k < K)[None, :]
    p_row = p_conv + i_b * s_cb + o_d[:, None] * s_cd + o_k[None, :]
    b_x = tl.load(p_xz + i_b * s_xz + o_d, mask=m_d, other=0.0)  # (BLOCK_D,) this position's conv input
    # state[k] <- state[k + 1], state[K - 1] <- x: the last d_conv inputs, oldest first
    b_next = tl.load(p_row + 1, mask=m_d[:, None] & (o_k < K - 1)[None, :], other=0.0)
    b_state = tl.where((o_k == K - 1)[None, :], b_x[:, None].to(b_next.dtype), b_next)  # (BLOCK_D, BLOCK_K)
    tl.debug_barrier()  # every lane has read its old columns before any lane writes the shifted ones
    tl.store(p_row, b_state, mask=m_dk)
    b_w = tl.load(p_w + o_d[:, None] * K + o_k[None, :], mask=m_dk, other=0.0).to(tl.float32)
    b_acc = tl.sum(b_state.to(tl.float32) * b_w, axis=1)  # (BLOCK_D,)
    if HAS_BIAS:
        b_acc += tl.load(p_bias + o_d, mask=m_d, other=0.0).to(tl.float32)
    tl.store(p_x + i_b * s_x + o_d, (b_acc * tl.sigmoid(b_acc)).to(p_x.dtype.element_ty), mask=m_d)


@triton.jit
def _ssm_step(p_x, p_z, p_dbl, p_dtw, p_dtb, p_alog, p_D, p_h, p_y, D_INNER, R, N, s_x, s_z, s_dbl, s_hb, s_y,
              HAS_D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr):
    i_b, i_blk = tl.program_id(0).to(tl.int64), tl.program_id(1)
    o_d = i_blk * BLOCK_D + tl.arange(0, BLOCK_D).to(tl.int64)
    o_r, o_n = tl.arange(0, BLOCK_R), tl.arange(0, BLOCK_N)
    m_d, m_r, m_n = o_d < D_INNER, o_r < R, o_n < N
    m_dn = m_d[:, None] & m_n[None, :]
    p_row = p_dbl + i_b * s_dbl
    b_low = tl.load(p_row + o_r, mask=m_r, other=0.0).to(tl.float32)  # (BLOCK_R,) Δ before dt_proj
    b_wdt = tl.load(p_dtw + o_d[:, None] * R + o_r[None, :], mask=m_d[:, None] & m_r[None, :], other=0.0)
    b_dt = tl.sum(b_wdt.to(tl.float32) * b_low[None, :], axis=1)  # (BLOCK_D,)
    b_dt += tl.load(p_dtb + o_d, mask=m_d, other=0.0).to(tl.float32)
    b_dt = tl.where(b_dt > 20.0, b_dt, tl.log(1.0 + tl.exp(b_dt)))  # softplus
    b_B = tl.load(p_row + R + o_n, mask=m_n, other=0.0).to(tl.float32)  # (BLOCK_N,)
    b_C = tl.load(p_row + R + N + o_n, mask=m_n, other=0.0).to(tl.float32)
    b_A = -tl.exp(tl.load(p_alog + o_d[:, None] * N + o_n[None, :], mask=m_dn, other=0.0).to(tl.float32))
    b_x = tl.load(p_x + i_b * s_x + o_d, mask=m_d, other=0.0).to(tl.float32)
    p_state = p_h + i_b * s_hb + o_d[:, None] * N + o_n[None, :]
    b_h = tl.load(p_state, mask=m_dn, other=0.0)  # (BLOCK_D, BLOCK_N) fp32
    b_h = tl.exp(b_dt[:, None] * b_A) * b_h + (b_dt * b_x)[:, None] * b_B[None, :]
    tl.store(p_state, b_h, mask=m_dn)
    b_y = tl.sum(b_h * b_C[None, :], axis=1)  # (BLOCK_D,)
    if HAS_D:
        b_y += tl.load(p_D + o_d, mask=m_d, other=0.0).to(tl.float32) * b_x
    b_z = tl.load(p_z + i_b * s_z + o_d, mask=m_d, other=0.0).to(tl.float32)
    tl.store(p_y + i_b * s_y + o_d, (b_y * b_z * tl.sigmoid(b_z)).to(p_y.dtype.element_ty), mask=m_d)


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x (b, d) -> RMSNorm(x) * weight in weight's dtype, as mambadna.model.RMSNorm computes it."""
    out = torch.empty(x.shape, dtype=weight.dtype, device=x.device)
    _rmsnorm[(x.shape[0],)](x, weight, out, x.shape[1], x.stride(0), out.stride(0), eps,
                            BLOCK=triton.next_power_of_2(x.shape[1]))
    return out


def conv_step(xz: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
              d_inner: int) -> torch.Tensor:
    """xz (b, 2 d_inner) (x first) -> silu(conv) (b, d_inner) in xz's dtype; `conv_state` advanced in place."""
    b, _, k = conv_state.shape
    x = torch.empty(b, d_inner, dtype=xz.dtype, device=xz.device)
    grid = (b, triton.cdiv(d_inner, BLOCK_D))
    _conv_step[grid](xz, conv_state, weight, bias if bias is not None else weight, x, d_inner,
                     xz.stride(0), conv_state.stride(0), conv_state.stride(1), x.stride(0),
                     K=k, HAS_BIAS=bias is not None, BLOCK_D=BLOCK_D, BLOCK_K=triton.next_power_of_2(k))
    return x


def ssm_step(x: torch.Tensor, xz: torch.Tensor, x_dbl: torch.Tensor, dt_weight: torch.Tensor, dt_bias: torch.Tensor,
             A_log: torch.Tensor, D: torch.Tensor | None, ssm_state: torch.Tensor) -> torch.Tensor:
    """One selective-scan step: -> gated y (b, d_inner) in x's dtype; `ssm_state` (b, d_inner, n) fp32 advanced."""
    b, d_inner = x.shape
    r, n = dt_weight.shape[1], A_log.shape[1]
    z = xz[:, d_inner:]  # (b, d_inner), a view: the kernel reads it with xz's row stride
    y = torch.empty_like(x)
    grid = (b, triton.cdiv(d_inner, BLOCK_D))
    _ssm_step[grid](x, z, x_dbl, dt_weight, dt_bias, A_log, D if D is not None else dt_bias, ssm_state, y,
                    d_inner, r, n, x.stride(0), xz.stride(0), x_dbl.stride(0), ssm_state.stride(0), y.stride(0),
                    HAS_D=D is not None, BLOCK_D=BLOCK_D, BLOCK_R=triton.next_power_of_2(r),
                    BLOCK_N=triton.next_power_of_2(n))
    return y
