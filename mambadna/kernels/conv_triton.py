"""Causal depthwise conv1d with fused bias and SiLU, forward and backward in Triton (mamba_ssm's `causal_conv1d`).

    x (b, d, l), any strides    weight (d, K)    bias (d,) or None    initial (b, d, K-1) or None
    y[:, c, t] = act(bias[c] + sum_k weight[c, k] * xp[:, c, t + k]),  xp = cat(initial or zeros, x)   (b, d, l)

`initial` is the K-1 inputs before position 0: the carried conv state of chunked and TBPTT runs. The model hands
x as a (b, d, l) view of in_proj's (b, l, 2d) output (channel stride 1, position stride 2d); the kernels read it in
place and write y, and dx, channels-last ((b, d, l) views of (b, l, d) storage), the layout x_proj and the scan read.

Tiling: one program per (channel block, position block, batch row), a (BLOCK_L, BLOCK_D) tile with channels
fastest, so each of the K shifted loads of the window is coalesced on channels-last input; the shifted loads
overlap and hit cache. The backward recomputes the pre-activation instead of saving it, and reduces dweight and
dbias from per-program partial sums in PyTorch, in a fixed order (deterministic, no atomics).
`causal_conv1d_ref` is the plain PyTorch definition the tests hold the kernels to.

Names: ``i_`` ids, ``o_`` offsets, ``m_`` masks, ``p_`` pointers, ``s_`` strides, ``b_`` blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from mambadna.kernels.buffers import alloc  # NaN-poisoned when tests ask (kernels/buffers.py)

ACTIVATIONS = (None, "silu")
BLOCK_L = 32  # positions a tile
BLOCK_D = 128  # channels a tile: 256 B of bf16 a row, two cache lines
MAX_PROGRAMS = 8192  # the backward loops over position blocks beyond this many programs (fewer partial sums)


def causal_conv1d_ref(x, weight, bias=None, initial=None, activation=None):
    """The definition, in PyTorch (the model's own conv): F.conv1d over cat(initial, x), then the activation."""
    b, d, _ = x.shape
    k = weight.shape[1]
    history = torch.cat([x.new_zeros(b, d, k - 1) if initial is None else initial.to(x.dtype), x], dim=-1)
    y = F.conv1d(history, weight[:, None, :].to(x.dtype), None if bias is None else bias.to(x.dtype), groups=d)
    return F.silu(y) if activation == "silu" else y  # (b, d, l)


@triton.jit
def _window(p_x, p_init, o_p, o_d, m_d, L, s_xd, s_xl, s_id, s_il, K: tl.constexpr, HAS_INIT: tl.constexpr):
    """xp at positions o_p (BLOCK_L,) of x's row, fp32 (BLOCK_L, BLOCK_D): x for 0 <= p < L, `initial` (or zeros)
    for -(K-1) <= p < 0, zeros past L. p_x and p_init already point at this batch row."""
    m_x = ((o_p >= 0) & (o_p < L))[:, None] & m_d[None, :]
    b_x = tl.load(p_x + o_p[:, None] * s_xl + o_d[None, :] * s_xd, mask=m_x, other=0.0).to(tl.float32)
    if HAS_INIT:
        m_i = ((o_p < 0) & (o_p >= 1 - K))[:, None] & m_d[None, :]
        p_i = p_init + (o_p + K - 1)[:, None] * s_il + o_d[None, :] * s_id
        b_x += tl.load(p_i, mask=m_i, other=0.0).to(tl.float32)
    return b_x


@triton.jit
def _pre(p_x, p_init, p_w, p_bias, o_t, o_d, m_d, L, s_xd, s_xl, s_id, s_il, s_wd, s_wk,
         K: tl.constexpr, HAS_INIT: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_L: tl.constexpr,
         BLOCK_D: tl.constexpr):
    """The pre-activation at positions o_t: bias + sum_k w[k] * xp[t + k - (K-1)], fp32 (BLOCK_L, BLOCK_D)."""
    b_acc = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)
    if HAS_BIAS:
        b_acc += tl.load(p_bias + o_d, mask=m_d, other=0.0).to(tl.float32)[None, :]
    for k in tl.static_range(K):
        b_w = tl.load(p_w + o_d * s_wd + k * s_wk, mask=m_d, other=0.0).to(tl.float32)
        b_acc += b_w[None, :] * _window(p_x, p_init, o_t + (k - (K - 1)), o_d, m_d, L, s_xd, s_xl, s_id, s_il,
                                        K, HAS_INIT)
    return b_acc


@triton.jit
def _causal_conv_fwd(p_x, p_init, p_w, p_bias, p_y, L, D, s_xb, s_xd, s_xl, s_ib, s_id, s_il, s_wd, s_wk,
                     s_yb, s_yd, s_yl, K: tl.constexpr, HAS_INIT: tl.constexpr, HAS_BIAS: tl.constexpr,
                     SILU: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
    i_l, i_d, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D).to(tl.int64)
    o_t = i_l * BLOCK_L + tl.arange(0, BLOCK_L).to(tl.int64)
    m_d = o_d < D
    b_pre = _pre(p_x + i_b * s_xb, p_init + i_b * s_ib, p_w, p_bias, o_t, o_d, m_d, L, s_xd, s_xl, s_id, s_il,
                 s_wd, s_wk, K, HAS_INIT, HAS_BIAS, BLOCK_L, BLOCK_D)
    if SILU:
        b_pre = b_pre * tl.sigmoid(b_pre)
    tl.store(p_y + i_b * s_yb + o_t[:, None] * s_yl + o_d[None, :] * s_yd, b_pre.to(p_y.dtype.element_ty),
             mask=(o_t < L)[:, None] & m_d[None, :])


@triton.jit
def _causal_conv_bwd(p_x, p_init, p_w, p_bias, p_dy, p_dx, p_dinit, p_dw, p_db, L, D, START, STEPS,
                     s_xb, s_xd, s_xl, s_ib, s_id, s_il, s_wd, s_wk, s_dyb, s_dyd, s_dyl, s_dxb, s_dxd, s_dxl,
                     s_dib, s_did, s_dil, K: tl.constexpr, HAS_INIT: tl.constexpr, HAS_BIAS: tl.constexpr,
                     SILU: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr):
    """dx[s] = sum_m w[K-1-m] * dpre[s + m] is gathered (each program writes only its own positions), so every
    program recomputes dpre at its positions shifted by 0..K-1. With `initial` the positions start at START = -(K-1)
    and those below 0 are dinitial. The shift-0 dpre are this program's own positions: dweight and dbias partials."""
    i_l, i_d, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D).to(tl.int64)
    o_k = tl.arange(0, BLOCK_K)
    m_d = o_d < D
    p_x += i_b * s_xb
    p_init += i_b * s_ib
    b_dw = tl.zeros((BLOCK_K, BLOCK_D), dtype=tl.float32)  # row k: this program's share of dweight[:, k]
    b_db = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for step in range(STEPS):
        o_s = START + (i_l * STEPS + step) * BLOCK_L + tl.arange(0, BLOCK_L).to(tl.int64)
        b_dx = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)
        for m in tl.static_range(K):
            o_t = o_s + m
            m_t = ((o_t >= 0) & (o_t < L))[:, None] & m_d[None, :]
            p_dyt = p_dy + i_b * s_dyb + o_t[:, None] * s_dyl + o_d[None, :] * s_dyd
            b_dp = tl.load(p_dyt, mask=m_t, other=0.0).to(tl.float32)  # zero outside [0, L): no output there
            if SILU:
                b_pre = _pre(p_x, p_init, p_w, p_bias, o_t, o_d, m_d, L, s_xd, s_xl, s_id, s_il, s_wd, s_wk,
                             K, HAS_INIT, HAS_BIAS, BLOCK_L, BLOCK_D)
                b_sig = tl.sigmoid(b_pre)
                b_dp = b_dp * b_sig * (1.0 + b_pre * (1.0 - b_sig))  # silu'(p) = s(p) (1 + p (1 - s(p)))
            b_w = tl.load(p_w + o_d * s_wd + (K - 1 - m) * s_wk, mask=m_d, other=0.0).to(tl.float32)
            b_dx += b_w[None, :] * b_dp
            if m == 0:
                b_db += tl.sum(b_dp, axis=0)
                for k in tl.static_range(K):
                    b_xk = _window(p_x, p_init, o_t + (k - (K - 1)), o_d, m_d, L, s_xd, s_xl, s_id, s_il, K, HAS_INIT)
                    b_dw += tl.where((o_k == k)[:, None], tl.sum(b_dp * b_xk, axis=0)[None, :], 0.0)
        m_s = (o_s >= 0) & (o_s < L)
        tl.store(p_dx + i_b * s_dxb + o_s[:, None] * s_dxl + o_d[None, :] * s_dxd, b_dx.to(p_dx.dtype.element_ty),
                 mask=m_s[:, None] & m_d[None, :])
        if HAS_INIT:
            tl.store(p_dinit + i_b * s_dib + (o_s + K - 1)[:, None] * s_dil + o_d[None, :] * s_did,
                     b_dx.to(p_dinit.dtype.element_ty), mask=(o_s < 0)[:, None] & m_d[None, :])
    i_row = i_b * tl.num_programs(0) + i_l  # partials are (b * position programs, K, D) and (.., D), fp32
    tl.store(p_dw + (i_row * K + o_k[:, None]) * D + o_d[None, :], b_dw, mask=(o_k < K)[:, None] & m_d[None, :])
    tl.store(p_db + i_row * D + o_d, b_db, mask=m_d)


def _check(x, weight, bias, initial, activation) -> None:
    if x.dim() != 3:
        raise ValueError(f"x must be (b, d, l), got shape {tuple(x.shape)}")
    b, d, l = x.shape
    if l < 1:
        raise ValueError(f"x must have length l >= 1, got shape {tuple(x.shape)}")
    if weight.dim() != 2 or weight.shape[0] != d:
        raise ValueError(f"weight must be (d, K) with d = {d}, got shape {tuple(weight.shape)}")
    k = weight.shape[1]
    if bias is not None and tuple(bias.shape) != (d,):
        raise ValueError(f"bias must be ({d},), got shape {tuple(bias.shape)}")
    if initial is not None and tuple(initial.shape) != (b, d, k - 1):
        raise ValueError(f"initial must be (b, d, K-1) = ({b}, {d}, {k - 1}), got shape {tuple(initial.shape)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    for name, t in (("weight", weight), ("bias", bias), ("initial", initial)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")


def _strides(t, n=3):
    return t.stride() if t is not None else (0,) * n


def _blocks(d: int, launch: dict):
    return launch.get("block_l", BLOCK_L), launch.get("block_d", min(BLOCK_D, triton.next_power_of_2(d)))


class _CausalConv1d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, initial, silu, launch):
        b, d, l = x.shape
        k = weight.shape[1]
        init = initial if initial is not None and k > 1 else None  # K = 1 reads nothing before position 0
        bl, bd = _blocks(d, launch)
        y = alloc((b, l, d), x.dtype, x.device).transpose(1, 2)  # (b, d, l) channels-last
        # positions on grid axis 0: axes 1 and 2 stop at 65535 and l reaches 2^23
        _causal_conv_fwd[(triton.cdiv(l, bl), triton.cdiv(d, bd), b)](
            x, x if init is None else init, weight, weight if bias is None else bias, y, l, d, *x.stride(),
            *_strides(init), *weight.stride(), *y.stride(), K=k, HAS_INIT=init is not None,
            HAS_BIAS=bias is not None, SILU=silu, BLOCK_L=bl, BLOCK_D=bd, num_warps=launch.get("fwd_warps", 4))
        ctx.save_for_backward(x, weight, bias, initial)
        ctx.silu, ctx.launch = silu, launch
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias, initial = ctx.saved_tensors
        launch = ctx.launch
        b, d, l = x.shape
        k = weight.shape[1]
        init = initial if initial is not None and k > 1 else None
        bl, bd = _blocks(d, launch)
        start = 0 if init is None else 1 - k  # with initial, dinitial's K-1 positions come first
        n_blocks, n_d = triton.cdiv(l - start, bl), triton.cdiv(d, bd)
        # enough programs to fill the GPU; past that each loops over `steps` position blocks, so the partial sums
        # of dweight stay small
        steps = max(1, n_blocks * n_d * b // launch.get("max_programs", MAX_PROGRAMS))
        n_l = triton.cdiv(n_blocks, steps)
        dx = alloc((b, l, d), x.dtype, x.device).transpose(1, 2)  # (b, d, l) channels-last
        dinit = None if initial is None else alloc(tuple(initial.shape), initial.dtype, x.device)
        if initial is not None and init is None:
            dinit.zero_()
        dw_part = alloc((b * n_l, k, d), torch.float32, x.device)
        db_part = alloc((b * n_l, d), torch.float32, x.device)
        _causal_conv_bwd[(n_l, n_d, b)](
            x, x if init is None else init, weight, weight if bias is None else bias, dy, dx,
            dx if init is None else dinit, dw_part, db_part, l, d, start, steps, *x.stride(), *_strides(init),
            *weight.stride(), *dy.stride(), *dx.stride(), *_strides(None if init is None else dinit),
            K=k, HAS_INIT=init is not None, HAS_BIAS=bias is not None, SILU=ctx.silu, BLOCK_L=bl, BLOCK_D=bd,
            BLOCK_K=triton.next_power_of_2(k), num_warps=launch.get("bwd_warps", 8))
        dw = dw_part.sum(0).t().contiguous().to(weight.dtype)  # (d, K), summed in a fixed order
        db = None if bias is None else db_part.sum(0).to(bias.dtype)
        return dx, dw, db, dinit, None, None


def causal_conv1d(x, weight, bias=None, initial=None, activation=None, **launch):
    """act(conv(cat(initial, x)) + bias) as `causal_conv1d_ref`: y (b, d, l) in x's dtype, channels-last storage,
    computed in fp32 whatever the input dtypes. `launch` (tests and sweeps): block_l, block_d (powers of two),
    fwd_warps, bwd_warps, and max_programs (the backward's grid size past which its programs loop)."""
    _check(x, weight, bias, initial, activation)
    return _CausalConv1d.apply(x, weight, bias, initial, activation == "silu", launch)
