"""Causal depthwise conv1d with fused bias and SiLU, forward and backward in Triton (mamba_ssm's `causal_conv1d`).

    x (b, d, l), any strides    weight (d, K)    bias (d,) or None    initial (b, d, K-1) or None
    y[:, c, t] = act(bias[c] + sum_k weight[c, k] * xp[:, c, t + k]),  xp = cat(initial or zeros, x)   (b, d, l)

`initial` is the K-1 inputs before position 0: the carried conv state of chunked and TBPTT runs. The model hands
x as a (b, d, l) view of in_proj's (b, l, d) x half (channel stride 1; a fused (b, l, 2d) projection's half works
the same); the kernels read it in place and write y and dx channels-last ((b, d, l) views of (b, l, d) storage),
the layout x_proj and the scan read.

Tiling: programs over (position blocks, channel blocks, batch rows), each a (BLOCK_L, BLOCK_D) tile with channels
fastest, so the window of BLOCK_L + K - 1 rows is read as K shifted tiles, each coalesced on channels-last input
(the shifted tiles overlap and hit cache). The backward recomputes the pre-activation instead of saving it, passes
it through a small per-program scratch tile to shift it (`_causal_conv_bwd`), and reduces dweight and dbias from
per-program partial sums in PyTorch, in a fixed order (deterministic, no atomics). Only the first positions read
`initial`: the forward branches on it, the backward runs them as a launch of their own, so the rest of the work
does not hold the registers of those loads. `causal_conv1d_ref` is the PyTorch definition the tests hold the
kernels to.

Names: ``i_`` ids, ``o_`` offsets, ``m_`` masks, ``p_`` pointers, ``s_`` strides, ``b_`` blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from mambadna.kernels.buffers import alloc  # NaN-poisoned when tests ask (kernels/buffers.py)

ACTIVATIONS = (None, "silu")
# Launch defaults (each also a `causal_conv1d` keyword). Tiles are channels-last, a row's 8 bf16 channels one
# 128-bit load. Picked from the sm_90 build's register counts (forward 78, backward 185; no spills), not from GPU
# timings yet.
BLOCK_L, BLOCK_D, FWD_WARPS = 16, 128, 4  # forward tile (positions, channels)
BWD_BLOCK_L, BWD_BLOCK_D, BWD_WARPS = 16, 128, 4  # backward tile: a step writes dx for BLOCK_L - (K-1) positions
MAX_PROGRAMS = 2048  # backward programs beyond which each loops over several steps: bounds its scratch tiles
# The backward's dweight sums per row in registers (K <= 4), over rows once a program, instead of a cross-warp sum
# per tap per step: one same-run measurement (NVIDIA H100, 2026-12-07 16:28 UTC, experiments/bench_conv.py in
# experiments/results/gpu_scan_h100_2026-12-07h/) found fwd+bwd 0.808 -> 0.681 ms at (1, 512, 2^16) and
# 2.932 -> 1.498 at 2^18 (bf16, channels-last x, k 4), the same largest difference from PyTorch's conv (3.6e-3).
DW_ROWS = True


def causal_conv1d_ref(x, weight, bias=None, initial=None, activation=None):
    """The definition, in PyTorch (the model's own conv): F.conv1d over cat(initial, x), then the activation."""
    b, d, _ = x.shape
    k = weight.shape[1]
    history = torch.cat([x.new_zeros(b, d, k - 1) if initial is None else initial.to(x.dtype), x], dim=-1)
    y = F.conv1d(history, weight[:, None, :].to(x.dtype), None if bias is None else bias.to(x.dtype), groups=d)
    return F.silu(y) if activation == "silu" else y  # (b, d, l)


@triton.jit
def _window(p_x, p_init, o_p, o_d, m_d, L, s_xd, s_xl, s_id, s_il, K: tl.constexpr, HAS_INIT: tl.constexpr):
    """xp at positions o_p (BLOCK_L,) of x's row, fp32 (BLOCK_L, BLOCK_D): x for 0 <= p < L, `initial` for
    -(K-1) <= p < 0 with HAS_INIT, else zeros. p_x and p_init already point at this batch row."""
    m_x = ((o_p >= 0) & (o_p < L))[:, None] & m_d[None, :]
    b_x = tl.load(p_x + o_p[:, None] * s_xl + o_d[None, :] * s_xd, mask=m_x, other=0.0).to(tl.float32)
    if HAS_INIT:
        m_i = ((o_p < 0) & (o_p >= 1 - K))[:, None] & m_d[None, :]
        p_i = p_init + (o_p + K - 1)[:, None] * s_il + o_d[None, :] * s_id
        b_x += tl.load(p_i, mask=m_i, other=0.0).to(tl.float32)
    return b_x


@triton.jit
def _pre(p_x, p_init, p_w, p_bias, o_t, o_d, m_d, L, s_xd, s_xl, s_id, s_il, s_wd, s_wk, K: tl.constexpr,
         HAS_INIT: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
    """The pre-activation at positions o_t: bias + sum_k w[k] * xp[t + k - (K-1)], fp32 (BLOCK_L, BLOCK_D)."""
    b_acc = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)
    if HAS_BIAS:
        b_acc += tl.load(p_bias + o_d, mask=m_d, other=0.0).to(tl.float32)[None, :]
    for k in tl.static_range(K):
        b_w = tl.load(p_w + o_d * s_wd + k * s_wk, mask=m_d, other=0.0).to(tl.float32)
        b_acc += b_w[None, :] * _window(p_x, p_init, o_t + (k - (K - 1)), o_d, m_d, L, s_xd, s_xl, s_id, s_il, K,
                                        HAS_INIT)
    return b_acc


@triton.jit
def _causal_conv_fwd(p_x, p_init, p_w, p_bias, p_y, L, D, s_xb, s_xd, s_xl, s_ib, s_id, s_il, s_wd, s_wk,
                     s_yb, s_yd, s_yl, K: tl.constexpr, HAS_INIT: tl.constexpr, HAS_BIAS: tl.constexpr,
                     SILU: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
    i_l, i_d, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D).to(tl.int64)
    o_t = i_l * BLOCK_L + tl.arange(0, BLOCK_L).to(tl.int64)
    m_d = o_d < D
    p_x += i_b * s_xb
    p_init += i_b * s_ib
    # Only the first block reaches before position 0: the others take the path without `initial`'s loads, whose
    # registers they would otherwise hold too.
    if HAS_INIT and i_l * BLOCK_L < K - 1:
        b_pre = _pre(p_x, p_init, p_w, p_bias, o_t, o_d, m_d, L, s_xd, s_xl, s_id, s_il, s_wd, s_wk, K, True,
                     HAS_BIAS, BLOCK_L, BLOCK_D)
    else:
        b_pre = _pre(p_x, p_init, p_w, p_bias, o_t, o_d, m_d, L, s_xd, s_xl, s_id, s_il, s_wd, s_wk, K, False,
                     HAS_BIAS, BLOCK_L, BLOCK_D)
    if SILU:
        b_pre = b_pre * tl.sigmoid(b_pre)
    tl.store(p_y + i_b * s_yb + o_t[:, None] * s_yl + o_d[None, :] * s_yd, b_pre.to(p_y.dtype.element_ty),
             mask=(o_t < L)[:, None] & m_d[None, :])


@triton.jit
def _causal_conv_bwd(p_x, p_init, p_w, p_bias, p_dy, p_dx, p_dinit, p_dw, p_db, p_scr, L, D, START, STEPS,
                     s_xb, s_xd, s_xl, s_ib, s_id, s_il, s_wd, s_wk, s_dyb, s_dyd, s_dyl, s_dxb, s_dxd, s_dxl,
                     s_dib, s_did, s_dil, K: tl.constexpr, HAS_INIT: tl.constexpr, HAS_BIAS: tl.constexpr,
                     SILU: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr,
                     DW_ROWS: tl.constexpr):
    """dx[s] = sum_m w[K-1-m] dpre[s + m] needs dpre K-1 positions ahead, and a register tile cannot be shifted: a
    step computes dpre at positions s = s0 + (0..BLOCK_L-1), parks it in this program's scratch tile (it stays in
    cache) and reads it back shifted by m = 0..K-1 rows, for the dx of its first OWN = BLOCK_L - (K-1) positions;
    steps advance by OWN. dweight[K-1-m] += xp[s] dpre[s + m] reads the same shifted rows, so each (s, s + m) pair
    is counted once, by the step that owns s; dweight and dbias are summed per program (partials). A program runs
    STEPS steps from START + i_l * STEPS * OWN; negative positions are `initial`'s (dinitial's), and only a launch
    whose steps read them has HAS_INIT. DW_ROWS (K <= 4): dweight's products are added per (row, channel) in
    registers and summed over rows once, after the last step, instead of one sum over the tile's rows per tap and
    step (each a cross-warp reduction through shared memory and a barrier)."""
    OWN: tl.constexpr = BLOCK_L - (K - 1)
    i_l, i_d, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D).to(tl.int64)
    o_r, o_k = tl.arange(0, BLOCK_L), tl.arange(0, BLOCK_K)
    m_d, m_own = o_d < D, o_r < OWN
    p_x += i_b * s_xb
    p_init += i_b * s_ib
    i_prog = (i_b * tl.num_programs(1) + i_d) * tl.num_programs(0) + i_l
    p_s = p_scr + (i_prog * BLOCK_L + o_r[:, None]) * BLOCK_D + tl.arange(0, BLOCK_D)[None, :]  # (BLOCK_L, BLOCK_D)
    b_dw = tl.zeros((BLOCK_K, BLOCK_D), dtype=tl.float32)  # row k: this program's share of dweight[:, k]
    b_r0 = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)  # DW_ROWS: dweight[:, K-1-m]'s products, rows unsummed
    b_r1 = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)
    b_r2 = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)
    b_r3 = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)
    b_db = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for step in range(STEPS):
        o_s = START + (i_l * STEPS + step) * OWN + o_r.to(tl.int64)
        m_s = (o_s >= 0) & (o_s < L)
        p_dys = p_dy + i_b * s_dyb + o_s[:, None] * s_dyl + o_d[None, :] * s_dyd
        b_dp = tl.load(p_dys, mask=m_s[:, None] & m_d[None, :], other=0.0).to(tl.float32)  # 0: no output there
        if SILU:
            b_pre = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)
            if HAS_BIAS:
                b_pre += tl.load(p_bias + o_d, mask=m_d, other=0.0).to(tl.float32)[None, :]
            for k in tl.static_range(K):  # as `_pre`, keeping the last window: xp at the step's own positions
                b_x = _window(p_x, p_init, o_s + (k - (K - 1)), o_d, m_d, L, s_xd, s_xl, s_id, s_il, K, HAS_INIT)
                b_pre += tl.load(p_w + o_d * s_wd + k * s_wk, mask=m_d, other=0.0).to(tl.float32)[None, :] * b_x
            b_sig = tl.sigmoid(b_pre)
            b_dp = b_dp * b_sig * (1.0 + b_pre * (1.0 - b_sig))  # silu'(p) = s(p) (1 + p (1 - s(p)))
        else:
            b_x = _window(p_x, p_init, o_s, o_d, m_d, L, s_xd, s_xl, s_id, s_il, K, HAS_INIT)
        tl.store(p_s, b_dp)
        b_db += tl.sum(tl.where(m_own[:, None], b_dp, 0.0), axis=0)  # the next step owns the rest
        tl.debug_barrier()  # the whole tile is in the scratch before any thread reads other threads' rows
        b_dx = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)
        for m in tl.static_range(K):
            b_dpm = tl.load(p_s + m * BLOCK_D, mask=m_own[:, None], other=0.0)  # dpre[s + m]
            b_w = tl.load(p_w + o_d * s_wd + (K - 1 - m) * s_wk, mask=m_d, other=0.0).to(tl.float32)
            b_dx += b_w[None, :] * b_dpm
            if DW_ROWS:
                if m == 0:
                    b_r0 += b_x * b_dpm
                elif m == 1:
                    b_r1 += b_x * b_dpm
                elif m == 2:
                    b_r2 += b_x * b_dpm
                else:
                    b_r3 += b_x * b_dpm
            else:
                b_dw += tl.where((o_k == K - 1 - m)[:, None], tl.sum(b_x * b_dpm, axis=0)[None, :], 0.0)
        tl.debug_barrier()  # every thread has read the scratch before the next step overwrites it
        m_out = m_own[:, None] & m_d[None, :]
        tl.store(p_dx + i_b * s_dxb + o_s[:, None] * s_dxl + o_d[None, :] * s_dxd, b_dx.to(p_dx.dtype.element_ty),
                 mask=m_out & m_s[:, None])
        if HAS_INIT:
            tl.store(p_dinit + i_b * s_dib + (o_s + K - 1)[:, None] * s_dil + o_d[None, :] * s_did,
                     b_dx.to(p_dinit.dtype.element_ty), mask=m_out & (o_s < 0)[:, None])
    if DW_ROWS:  # row K-1-m of b_dw is tap m's sum
        for m in tl.static_range(K):
            b_rm = b_r0 if m == 0 else b_r1 if m == 1 else b_r2 if m == 2 else b_r3
            b_dw += tl.where((o_k == K - 1 - m)[:, None], tl.sum(b_rm, axis=0)[None, :], 0.0)
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


def _blocks(d: int, launch: dict, backward: bool = False):
    block_l, block_d = (BWD_BLOCK_L, BWD_BLOCK_D) if backward else (BLOCK_L, BLOCK_D)
    return launch.get("block_l", block_l), launch.get("block_d", min(block_d, triton.next_power_of_2(d)))


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
            HAS_BIAS=bias is not None, SILU=silu, BLOCK_L=bl, BLOCK_D=bd, num_warps=launch.get("fwd_warps", FWD_WARPS))
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
        bl, bd = _blocks(d, launch, backward=True)
        own = bl - (k - 1)  # positions a step writes
        if own < k - 1:
            raise ValueError(f"block_l {bl} is too short for width {k}: the backward's steps advance block_l - (K-1)")
        n_d = triton.cdiv(d, bd)
        # With `initial`, a first launch of one program per row and channel block runs the steps that read it (from
        # position -(K-1), for dinitial); the main launch runs the rest without its registers.
        head = 0 if init is None else min(triton.cdiv(2 * (k - 1), own), triton.cdiv(l + k - 1, own))
        start = 0 if init is None else 1 - k + head * own
        rest = triton.cdiv(l - start, own) if l > start else 0
        # enough programs to fill the GPU; past that each loops over `steps` steps, so that the scratch tiles and
        # the partial sums of dweight stay small
        steps = max(1, rest * n_d * b // launch.get("max_programs", MAX_PROGRAMS))
        n_l = triton.cdiv(rest, steps)
        dx = alloc((b, l, d), x.dtype, x.device).transpose(1, 2)  # (b, d, l) channels-last
        dinit = None if initial is None else alloc(tuple(initial.shape), initial.dtype, x.device)
        if initial is not None and init is None:
            dinit.zero_()
        rows = b * n_l + (b if head else 0)
        dw_part, db_part = alloc((rows, k, d), torch.float32, x.device), alloc((rows, d), torch.float32, x.device)
        scratch = torch.empty(rows * n_d * bl * bd, dtype=torch.float32, device=x.device)
        args = (weight, weight if bias is None else bias, dy, dx)
        strides = (*weight.stride(), *dy.stride(), *dx.stride())
        consts = dict(K=k, HAS_BIAS=bias is not None, SILU=ctx.silu, BLOCK_L=bl, BLOCK_D=bd,
                      BLOCK_K=triton.next_power_of_2(k), DW_ROWS=bool(launch.get("dw_rows", DW_ROWS)) and k <= 4,
                      num_warps=launch.get("bwd_warps", BWD_WARPS))
        if n_l:
            _causal_conv_bwd[(n_l, n_d, b)](x, x, *args, dx, dw_part, db_part, scratch, l, d, start, steps,
                                            *x.stride(), 0, 0, 0, *strides, 0, 0, 0, HAS_INIT=False, **consts)
        if head:
            main = b * n_l
            _causal_conv_bwd[(1, n_d, b)](
                x, init, *args, dinit, dw_part[main:], db_part[main:], scratch[main * n_d * bl * bd:], l, d, 1 - k,
                head, *x.stride(), *init.stride(), *strides, *dinit.stride(), HAS_INIT=True, **consts)
        dw = dw_part.sum(0).t().contiguous().to(weight.dtype)  # (d, K), summed in a fixed order
        db = None if bias is None else db_part.sum(0).to(bias.dtype)
        return dx, dw, db, dinit, None, None


def causal_conv1d(x, weight, bias=None, initial=None, activation=None, **launch):
    """act(conv(cat(initial, x)) + bias) as `causal_conv1d_ref`: y (b, d, l) in x's dtype, channels-last storage,
    computed in fp32 whatever the input dtypes. `launch` (tests and sweeps): block_l, block_d (powers of two),
    fwd_warps, bwd_warps, max_programs (the backward's grid size past which its programs loop) and dw_rows
    (`DW_ROWS`)."""
    _check(x, weight, bias, initial, activation)
    return _CausalConv1d.apply(x, weight, bias, initial, activation == "silu", launch)
