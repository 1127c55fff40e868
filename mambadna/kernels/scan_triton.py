"""Selective scan in Triton: chunk-parallel forward and backward with chunk-boundary states only.

Same signature and semantics as ``scan_ref.selective_scan_ref`` (see that file for the definition):

    Δ = softplus(delta + delta_bias)       a_t = exp(Δ_t A)       h_t = a_t h_{t-1} + Δ_t B_t u_t
    y_t = C_t · h_t + D u_t                y = y * silu(z)

Why chunk-parallel: at batch 1 and d_inner 512 there are only b·d·n = 8192 independent recurrences, fewer than the
GPU's lanes, so the length must be split too. The sequence is cut into chunks of T positions and every chunk is a
program of its own, for a block of BLOCK_D channels:

  forward   F1 `_fwd_chunk_summary`  each chunk's end state from a zero start (no scan: Σ_t exp(A·R_t) Δ_t B_t u_t
                                     with R_t the Δ summed after t) and its ΣΔ
            F2 `_carry_scan`         the chunk-start states H_c, a short scan over chunks (P_c = exp(A·ΣΔ_c))
            F3 `_fwd_chunk_scan`     the scan inside each chunk seeded with H_c, writes y
  backward  B1 `_bwd_chunk_summary`  each chunk's adjoint summary Q_c = Σ_t exp(A·cumΔ_t) C_t dy'_t
            B2 `_carry_scan`         reversed: the adjoint entering each chunk's end
            B3 `_bwd_chunk_scan`     recomputes h inside the chunk, scans the adjoint in reverse, writes all grads

Only the inputs, ΣΔ per chunk and H (b, l/T + 1, n, d) fp32 are saved for the backward: never the (b, d, l, n)
expansion, so memory is O(b·d·l) plus O(b·d·n·l/T). F1, F3 and B1 take one exp per (b, d, l, n) element each, B3
two (a_t for the forward recurrence, a_{t+1} for the adjoint: Triton has no register shift along an axis, and
recovering a_{t+1} by division underflows). Measured on an H100, B3 dominates and is bound by its cross-lane work
(the channel reductions for dB/dC and the reverse scan), not by exps or bytes: experiments/BENCHMARKS.md.

Numerics: Δ·A ≤ 0, so every exp is of a non-positive number and none overflows; products of decays only shrink.
Sums of Δ are direct (cumulative) sums, never differences of two large sums, which would cancel and be amplified
by |A| in the exp. The one difference left, a_t h_{t-1} = h_t − Δ_t B_t u_t in B3, errs by fp32 rounding of |h_t|,
the size of the terms it feeds. States and accumulation are fp32 whatever the input dtype.

Names: ``i_`` ids, ``o_`` offsets, ``m_`` masks, ``p_`` pointers, ``b_`` blocks. Row/channel offsets are int64 so
that 2^20 positions × 1536 channels × batch never overflow int32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mambadna.kernels.buffers import alloc as _alloc

LOG2E = 1.4426950408889634



@triton.jit
def _linear_combine(a1, b1, a2, b2):
    # Composition of x -> a1·x + b1 followed by x -> a2·x + b2. Triton's reverse scan flips, scans and flips back,
    # so the same function composes the adjoint recurrence g_t = α_t g_{t+1} + β_t from the end.
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _load_delta(p_delta, p_bias, m, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Δ in fp32 (BLOCK_D, T), zero where masked so padded positions neither decay nor inject."""
    b_raw = tl.load(p_delta, mask=m, other=0.0).to(tl.float32)
    if HAS_BIAS:
        b_raw += tl.load(p_bias).to(tl.float32)[:, None]
    if SOFTPLUS:
        b_dt = tl.where(b_raw > 20.0, b_raw, tl.log(1.0 + tl.exp(b_raw)))
    else:
        b_dt = b_raw
    return tl.where(m, b_dt, 0.0)


@triton.jit
def _fwd_chunk_summary(
    p_u_base, p_delta_base, p_bias_base, p_A2, p_B_base, p_S, p_dsum,
    L, NC, N, DPG,
    s_ub, s_ud, s_bb, s_bg, s_bn,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, BLOCK_D: tl.constexpr, T: tl.constexpr,
):
    i_c, i_dblk, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    D_ = tl.num_programs(1) * BLOCK_D
    o_d = i_dblk * BLOCK_D + tl.arange(0, BLOCK_D).to(tl.int64)
    o_t = i_c * T + tl.arange(0, T)
    m_t = o_t < L
    m = m_t[None, :]
    p_row = i_b * s_ub + o_d[:, None] * s_ud + o_t[None, :]
    b_dt = _load_delta(p_delta_base + p_row, p_bias_base + o_d, m, HAS_BIAS, SOFTPLUS)
    b_du = b_dt * tl.load(p_u_base + p_row, mask=m, other=0.0).to(tl.float32)  # (BLOCK_D, T)
    # Δ summed over (t, chunk end], as a reverse cumsum of the next position's Δ rather than ΣΔ − cumΔ_t: the
    # difference cancels, and |A|·(its rounding error) reached 0.4% of the final state at Δ = 60, A = −64.
    m_next = ((o_t + 1 < L) & (tl.arange(0, T) < T - 1))[None, :]
    b_after = tl.cumsum(_load_delta(p_delta_base + p_row + 1, p_bias_base + o_d, m_next, HAS_BIAS, SOFTPLUS), axis=1,
                        reverse=True)
    b_tot = tl.sum(b_dt, axis=1)  # (BLOCK_D,)
    i_g = (i_dblk * BLOCK_D) // DPG
    p_B = p_B_base + i_b * s_bb + i_g * s_bg + o_t
    p_out = p_S + (i_b * (NC + 1) + i_c + 1) * N * D_ + o_d  # into H's slot c+1; states are (b, c, n, d)
    for i_n in range(N):
        b_A2 = tl.load(p_A2 + i_n * D_ + o_d)  # (BLOCK_D,)
        b_B = tl.load(p_B + i_n * s_bn, mask=m_t, other=0.0).to(tl.float32)  # (T,)
        b_w = tl.exp2(b_A2[:, None] * b_after)
        tl.store(p_out + i_n * D_, tl.sum(b_w * b_du * b_B[None, :], axis=1))
    tl.store(p_dsum + (i_b * NC + i_c) * D_ + o_d, b_tot)


@triton.jit
def _carry_scan(
    p_A2, p_dsum, p_buf, p_init,
    NC, D_, ND,
    HAS_INIT: tl.constexpr, REVERSE: tl.constexpr, BLOCK_R: tl.constexpr, K: tl.constexpr,
):
    """In place over buf (b, NC + 1, n, d): x_c = P_c x + s_c with P_c = exp2(A2·ΣΔ_c), for every (b, n, d) row.

    Forward: buf[c+1] holds chunk c's summary and becomes the state after chunk c; buf[0] = init. These are the
    chunk-start states H. Reverse: buf[c] holds chunk c's adjoint summary and becomes P_c buf[c+1] + Q_c, walking
    c down from NC-1 with buf[NC] = init: the adjoint entering each chunk's end is then buf[c+1].
    """
    i_r, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    o_r = i_r * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)  # row = n*d_inner + channel
    m_r = o_r < ND
    b_A2 = tl.load(p_A2 + o_r, mask=m_r, other=0.0)
    if HAS_INIT:
        b_x = tl.load(p_init + i_b * ND + o_r, mask=m_r, other=0.0)
    else:
        b_x = tl.zeros([BLOCK_R], dtype=tl.float32)
    p_o = p_buf + i_b * (NC + 1) * ND + o_r
    if REVERSE:
        tl.store(p_o + NC * ND, b_x, mask=m_r)
    else:
        tl.store(p_o, b_x, mask=m_r)
    o_k = tl.arange(0, K).to(tl.int64)
    # Only x is carried between iterations, so the next tiles' loads can be issued early (software pipelining):
    # at batch 1 this scan has few programs and was bound by load latency (3.5 ms at (1, 512, 2^20) unpipelined).
    for i_blk in tl.range(0, tl.cdiv(NC, K), num_stages=3):
        if REVERSE:
            o_c = NC - 1 - (i_blk * K + o_k)
            m_c = o_c >= 0
            o_slot = o_c
        else:
            o_c = i_blk * K + o_k
            m_c = o_c < NC
            o_slot = o_c + 1
        m = m_c[:, None] & m_r[None, :]
        b_ds = tl.load(p_dsum + (i_b * NC + o_c)[:, None] * D_ + (o_r % D_)[None, :], mask=m, other=0.0)
        b_s = tl.load(p_o + o_slot[:, None] * ND, mask=m, other=0.0)  # (K, BLOCK_R)
        b_p = tl.exp2(b_A2[None, :] * b_ds)  # masked chunks: ΣΔ = 0 so P = 1 and s = 0 pass x through
        b_pc, b_sc = tl.associative_scan((b_p, b_s), axis=0, combine_fn=_linear_combine)
        b_xs = b_pc * b_x[None, :] + b_sc
        tl.store(p_o + o_slot[:, None] * ND, b_xs, mask=m)
        b_x = tl.sum(tl.where(o_k[:, None] == K - 1, b_xs, 0.0), axis=0)


@triton.jit
def _fwd_chunk_scan(
    p_u_base, p_delta_base, p_bias_base, p_A2, p_B_base, p_C_base, p_D, p_z_base, p_H, p_y_base,
    L, NC, N, DPG,
    s_ub, s_ud, s_bb, s_bg, s_bn, s_cb, s_cg, s_cn,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    BLOCK_D: tl.constexpr, T: tl.constexpr, STAGES: tl.constexpr, UNROLL: tl.constexpr,
):
    i_c, i_dblk, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    D_ = tl.num_programs(1) * BLOCK_D
    o_d = i_dblk * BLOCK_D + tl.arange(0, BLOCK_D).to(tl.int64)
    o_t = i_c * T + tl.arange(0, T)
    m_t = o_t < L
    m = m_t[None, :]
    p_row = i_b * s_ub + o_d[:, None] * s_ud + o_t[None, :]
    b_dt = _load_delta(p_delta_base + p_row, p_bias_base + o_d, m, HAS_BIAS, SOFTPLUS)
    b_du = b_dt * tl.load(p_u_base + p_row, mask=m, other=0.0).to(tl.float32)  # (BLOCK_D, T)
    i_g = (i_dblk * BLOCK_D) // DPG
    p_B = p_B_base + i_b * s_bb + i_g * s_bg + o_t
    p_C = p_C_base + i_b * s_cb + i_g * s_cg + o_t
    p_h0 = p_H + (i_b * (NC + 1) + i_c) * N * D_ + o_d
    b_y = tl.zeros([BLOCK_D, T], dtype=tl.float32)
    for i_n in tl.range(0, N, num_stages=STAGES, loop_unroll_factor=UNROLL):
        b_A2 = tl.load(p_A2 + i_n * D_ + o_d)
        b_B = tl.load(p_B + i_n * s_bn, mask=m_t, other=0.0).to(tl.float32)
        b_C = tl.load(p_C + i_n * s_cn, mask=m_t, other=0.0).to(tl.float32)
        b_h0 = tl.load(p_h0 + i_n * D_)  # (BLOCK_D,) state before this chunk
        b_a = tl.exp2(b_dt * b_A2[:, None])
        b_ac, b_h = tl.associative_scan((b_a, b_du * b_B[None, :]), axis=1, combine_fn=_linear_combine)
        b_y += (b_h + b_ac * b_h0[:, None]) * b_C[None, :]
    b_u = tl.load(p_u_base + p_row, mask=m, other=0.0).to(tl.float32)  # reloaded: cheaper than a live tile
    if HAS_D:
        b_y += tl.load(p_D + o_d)[:, None] * b_u
    if HAS_Z:
        b_z = tl.load(p_z_base + p_row, mask=m, other=0.0).to(tl.float32)
        b_y *= b_z * tl.sigmoid(b_z)
    tl.store(p_y_base + p_row, b_y.to(p_y_base.dtype.element_ty), mask=m)


@triton.jit
def _load_dy_gated(p_dy, p_z, m, HAS_Z: tl.constexpr):
    """dy' = dy·silu(z): the gradient reaching the scan output before the gate (zero where masked)."""
    b_dy = tl.load(p_dy, mask=m, other=0.0).to(tl.float32)
    if HAS_Z:
        b_z = tl.load(p_z, mask=m, other=0.0).to(tl.float32)
        b_dy *= b_z * tl.sigmoid(b_z)
    return b_dy


@triton.jit
def _bwd_chunk_summary(
    p_delta_base, p_bias_base, p_A2, p_C_base, p_z_base, p_dy_base, p_Q,
    L, NC, N, DPG,
    s_ub, s_ud, s_cb, s_cg, s_cn,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_Z: tl.constexpr, BLOCK_D: tl.constexpr, T: tl.constexpr,
):
    i_c, i_dblk, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    D_ = tl.num_programs(1) * BLOCK_D
    o_d = i_dblk * BLOCK_D + tl.arange(0, BLOCK_D).to(tl.int64)
    o_t = i_c * T + tl.arange(0, T)
    m_t = o_t < L
    m = m_t[None, :]
    p_row = i_b * s_ub + o_d[:, None] * s_ud + o_t[None, :]
    b_dt = _load_delta(p_delta_base + p_row, p_bias_base + o_d, m, HAS_BIAS, SOFTPLUS)
    b_dyp = _load_dy_gated(p_dy_base + p_row, p_z_base + p_row, m, HAS_Z)
    b_cum = tl.cumsum(b_dt, axis=1)  # Δ summed over [chunk start, t]
    i_g = (i_dblk * BLOCK_D) // DPG
    p_C = p_C_base + i_b * s_cb + i_g * s_cg + o_t
    p_out = p_Q + (i_b * (NC + 1) + i_c) * N * D_ + o_d  # into G's slot c
    for i_n in range(N):
        b_A2 = tl.load(p_A2 + i_n * D_ + o_d)
        b_C = tl.load(p_C + i_n * s_cn, mask=m_t, other=0.0).to(tl.float32)
        tl.store(p_out + i_n * D_, tl.sum(tl.exp2(b_A2[:, None] * b_cum) * b_dyp * b_C[None, :], axis=1))


@triton.jit
def _bwd_chunk_scan(
    p_u_base, p_delta_base, p_bias_base, p_A2, p_B_base, p_C_base, p_D, p_z_base, p_H, p_G, p_dy_base,
    p_du_base, p_ddelta_base, p_dz_base, p_dB_base, p_dC_base, p_dA_part, p_dD_part, p_dbias_part,
    L, NC, N, DPG,
    s_ub, s_ud, s_bb, s_bg, s_bn, s_cb, s_cg, s_cn,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    BLOCK_D: tl.constexpr, T: tl.constexpr, STAGES: tl.constexpr, UNROLL: tl.constexpr,
):
    i_c, i_dblk, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    D_ = tl.num_programs(1) * BLOCK_D
    o_d = i_dblk * BLOCK_D + tl.arange(0, BLOCK_D).to(tl.int64)
    o_t = i_c * T + tl.arange(0, T)
    m_t = o_t < L
    m = m_t[None, :]
    # a_{t+1} belongs to the adjoint recurrence; the chunk's last position gets it through the carried adjoint.
    m_next = ((o_t + 1 < L) & (tl.arange(0, T) < T - 1))[None, :]
    p_row = i_b * s_ub + o_d[:, None] * s_ud + o_t[None, :]
    b_dt = _load_delta(p_delta_base + p_row, p_bias_base + o_d, m, HAS_BIAS, SOFTPLUS)
    b_dt_next = _load_delta(p_delta_base + p_row + 1, p_bias_base + o_d, m_next, HAS_BIAS, SOFTPLUS)
    b_du = b_dt * tl.load(p_u_base + p_row, mask=m, other=0.0).to(tl.float32)
    b_dyp = _load_dy_gated(p_dy_base + p_row, p_z_base + p_row, m, HAS_Z)
    i_g = (i_dblk * BLOCK_D) // DPG
    p_B = p_B_base + i_b * s_bb + i_g * s_bg + o_t
    p_C = p_C_base + i_b * s_cb + i_g * s_cg + o_t
    # dB, dC: one partial sum per channel block, (b, d / BLOCK_D, n, l), summed by the caller. Plain stores:
    # atomics here cost 12 of 63 ms at (1, 512, 2^20, 16) (experiments/results/ablate_bwd_v2.log).
    p_dB = p_dB_base + (i_b * tl.num_programs(1) + i_dblk) * N * L + o_t
    p_dC = p_dC_base + (i_b * tl.num_programs(1) + i_dblk) * N * L + o_t
    p_h0 = p_H + (i_b * (NC + 1) + i_c) * N * D_ + o_d
    p_gin = p_G + (i_b * (NC + 1) + i_c + 1) * N * D_ + o_d  # adjoint entering this chunk's end
    p_dA = p_dA_part + (i_b * NC + i_c) * N * D_ + o_d
    b_y = tl.zeros([BLOCK_D, T], dtype=tl.float32)  # pre-gate output, for dz
    b_gB = tl.zeros([BLOCK_D, T], dtype=tl.float32)  # Σ_n g·B
    b_gdec = tl.zeros([BLOCK_D, T], dtype=tl.float32)  # Σ_n A·g·a_t·h_{t-1}
    for i_n in tl.range(0, N, num_stages=STAGES, loop_unroll_factor=UNROLL):
        b_A2 = tl.load(p_A2 + i_n * D_ + o_d)
        b_B = tl.load(p_B + i_n * s_bn, mask=m_t, other=0.0).to(tl.float32)
        b_C = tl.load(p_C + i_n * s_cn, mask=m_t, other=0.0).to(tl.float32)
        b_h0 = tl.load(p_h0 + i_n * D_)
        b_gin = tl.load(p_gin + i_n * D_)
        b_bx = b_du * b_B[None, :]
        b_ac, b_h = tl.associative_scan((tl.exp2(b_dt * b_A2[:, None]), b_bx), axis=1, combine_fn=_linear_combine)
        b_h += b_ac * b_h0[:, None]
        b_y += b_h * b_C[None, :]
        tl.store(p_dC + i_n * L, tl.sum(b_dyp * b_h, axis=0), mask=m_t)
        b_hprev = b_h - b_bx  # a_t h_{t-1}
        b_alc, b_g = tl.associative_scan(
            (tl.exp2(b_dt_next * b_A2[:, None]), b_dyp * b_C[None, :]), axis=1, combine_fn=_linear_combine,
            reverse=True,
        )
        b_g += b_alc * b_gin[:, None]
        b_gB += b_g * b_B[None, :]
        b_gdh = b_g * b_hprev
        b_gdec += (b_A2 * 0.6931471805599453)[:, None] * b_gdh  # A = A2·ln 2
        tl.store(p_dA + i_n * D_, tl.sum(b_gdh * b_dt, axis=1))
        tl.store(p_dB + i_n * L, tl.sum(b_g * b_du, axis=0), mask=m_t)
    # u, z and dy are reloaded rather than kept live through the loop over n, to keep registers for the scans.
    b_u = tl.load(p_u_base + p_row, mask=m, other=0.0).to(tl.float32)
    b_ddt = b_u * b_gB + b_gdec
    b_dun = b_dt * b_gB
    if HAS_D:
        b_Dv = tl.load(p_D + o_d)
        b_y += b_Dv[:, None] * b_u
        b_dun += b_Dv[:, None] * b_dyp
        tl.store(p_dD_part + (i_b * NC + i_c) * D_ + o_d, tl.sum(b_dyp * b_u, axis=1))
    if HAS_Z:
        b_z = tl.load(p_z_base + p_row, mask=m, other=0.0).to(tl.float32)
        b_sig = tl.sigmoid(b_z)
        b_dy = tl.load(p_dy_base + p_row, mask=m, other=0.0).to(tl.float32)
        tl.store(p_dz_base + p_row, (b_dy * b_y * b_sig * (1.0 + b_z * (1.0 - b_sig))).to(p_dz_base.dtype.element_ty),
                 mask=m)
    if SOFTPLUS:
        b_raw = tl.load(p_delta_base + p_row, mask=m, other=0.0).to(tl.float32)
        if HAS_BIAS:
            b_raw += tl.load(p_bias_base + o_d).to(tl.float32)[:, None]
        b_ddt = b_ddt * tl.sigmoid(b_raw)
    b_ddt = tl.where(m, b_ddt, 0.0)
    if HAS_BIAS:
        tl.store(p_dbias_part + (i_b * NC + i_c) * D_ + o_d, tl.sum(b_ddt, axis=1))
    tl.store(p_du_base + p_row, b_dun.to(p_du_base.dtype.element_ty), mask=m)
    tl.store(p_ddelta_base + p_row, b_ddt.to(p_ddelta_base.dtype.element_ty), mask=m)


def _pick_blocks(
    d: int, dpg: int, chunk_size: int | None, block_d: int | None, num_warps: int | None = None,
    stages: int | None = None, unroll: int | None = None,
) -> tuple[int, int, int, int, int]:
    """Chunk length T, channels per program BLOCK_D (a power of two dividing d/g) and warps.

    Defaults from the launch-shape sweeps on an H100 (experiments/BENCHMARKS.md): 32 positions × 32 channels on
    two warps. More warps per program made the backward slower at every shape (its per-state reductions over
    channels then cross warps), and the backward's ~12 live tiles keep it near 255 registers anyway.
    """
    t = chunk_size or 32
    if t & (t - 1) or t < 16:
        raise ValueError(f"chunk_size must be a power of two >= 16, got {t}")
    want = block_d or 32
    bd = 1
    while bd * 2 <= want and dpg % (bd * 2) == 0:
        bd *= 2
    # The forward scan's loop over states gained 15% from two pipeline stages (8.4 vs 9.9 ms at
    # (1, 512, 2^20, 16)); the backward's did not, and unrolling helped neither (experiments/results/).
    return t, bd, num_warps or (2 if bd * t <= 1024 else 4), stages or 2, unroll if unroll and unroll > 1 else None


def _as_grouped(x: torch.Tensor) -> torch.Tensor:
    return (x if x.dim() == 4 else x.unsqueeze(1)).contiguous()  # (b, g, n, l), contiguous along l


def forward(u, delta, A, B, C, D, z, delta_bias, initial_state, softplus, launch):
    """Launch F1-F3. Returns y, the final state (b, d, n) and what the backward needs."""
    b, d, l = u.shape
    n = A.shape[1]
    u, delta = u.contiguous(), delta.contiguous()
    z = z.contiguous() if z is not None else None
    B4, C4 = _as_grouped(B), _as_grouped(C)
    g = max(B4.shape[1], C4.shape[1])
    B4, C4 = B4.expand(b, g, n, l), C4.expand(b, g, n, l)  # a shared one may meet a grouped one
    A2 = (A.float() * LOG2E).t().contiguous()  # (n, d): one state's channels are contiguous
    Df = D.float().contiguous() if D is not None else None
    bias = delta_bias.float().contiguous() if delta_bias is not None else None
    h0 = initial_state.float().transpose(1, 2).contiguous() if initial_state is not None else None  # (b, n, d)
    cfg = _pick_blocks(d, d // g, *launch)
    T, BD, warps, stages, unroll = cfg
    nc = triton.cdiv(l, T)
    dev = u.device
    dsum = _alloc((b, nc, d), torch.float32, dev)
    H = _alloc((b, nc + 1, n, d), torch.float32, dev)  # F1 writes chunk summaries here, F2 turns them into H
    y = _alloc((b, d, l), u.dtype, dev)
    grid = (nc, d // BD, b)
    dummy = u  # stands in for absent optional tensors; the constexpr flags keep it from being read
    _fwd_chunk_summary[grid](
        u, delta, bias if bias is not None else dummy, A2, B4, H, dsum,
        l, nc, n, d // g,
        u.stride(0), u.stride(1), B4.stride(0), B4.stride(1), B4.stride(2),
        HAS_BIAS=bias is not None, SOFTPLUS=softplus, BLOCK_D=BD, T=T, num_warps=warps,
    )
    _launch_carry(A2, dsum, H, h0, b, d, n, nc, reverse=False)
    _fwd_chunk_scan[grid](
        u, delta, bias if bias is not None else dummy, A2, B4, C4, Df if Df is not None else dummy,
        z if z is not None else dummy, H, y,
        l, nc, n, d // g,
        u.stride(0), u.stride(1), B4.stride(0), B4.stride(1), B4.stride(2),
        C4.stride(0), C4.stride(1), C4.stride(2),
        HAS_BIAS=bias is not None, SOFTPLUS=softplus, HAS_D=Df is not None, HAS_Z=z is not None,
        BLOCK_D=BD, T=T, STAGES=stages, UNROLL=unroll, num_warps=warps,
    )
    saved = (u, delta, A2, B4, C4, Df, z, bias, dsum, H)
    return y, H[:, nc].transpose(1, 2).contiguous(), saved, cfg


def backward(dy, dh_last, saved, softplus, cfg, B_shape, C_shape, has_h0):
    """Launch B1-B3. Returns du, ddelta, dA (d, n) fp32, dB, dC, dD, dz, ddelta_bias (fp32 where reduced), dh0."""
    u, delta, A2, B4, C4, Df, z, bias, dsum, H = saved
    T, BD, warps, stages, unroll = cfg
    b, d, l = u.shape
    g, n = B4.shape[1], B4.shape[2]
    nc = dsum.shape[1]
    dev = u.device
    dy = dy.contiguous()
    if dh_last is None:
        dh_last = torch.zeros(b, d, n, device=dev)
    dh_last = dh_last.float().transpose(1, 2).contiguous()
    dummy = u
    grid = (nc, d // BD, b)
    G = _alloc((b, nc + 1, n, d), torch.float32, dev)  # B1 writes adjoint summaries here, B2 the carried adjoint
    _bwd_chunk_summary[grid](
        delta, bias if bias is not None else dummy, A2, C4, z if z is not None else dummy, dy, G,
        l, nc, n, d // g,
        u.stride(0), u.stride(1), C4.stride(0), C4.stride(1), C4.stride(2),
        HAS_BIAS=bias is not None, SOFTPLUS=softplus, HAS_Z=z is not None, BLOCK_D=BD, T=T, num_warps=warps,
    )
    _launch_carry(A2, dsum, G, dh_last, b, d, n, nc, reverse=True)
    du = _alloc(u.shape, u.dtype, dev)
    ddelta = _alloc(delta.shape, delta.dtype, dev)
    dz = _alloc(z.shape, z.dtype, dev) if z is not None else None
    nblk = d // BD
    dB_part = _alloc((b, nblk, n, l), torch.float32, dev)
    dC_part = _alloc((b, nblk, n, l), torch.float32, dev)
    dA_part = _alloc((b, nc, n, d), torch.float32, dev)
    dD_part = _alloc((b, nc, d), torch.float32, dev) if Df is not None else None
    dbias_part = _alloc((b, nc, d), torch.float32, dev) if bias is not None else None
    _bwd_chunk_scan[grid](
        u, delta, bias if bias is not None else dummy, A2, B4, C4, Df if Df is not None else dummy,
        z if z is not None else dummy, H, G, dy,
        du, ddelta, dz if dz is not None else dummy, dB_part, dC_part, dA_part,
        dD_part if dD_part is not None else dummy, dbias_part if dbias_part is not None else dummy,
        l, nc, n, d // g,
        u.stride(0), u.stride(1), B4.stride(0), B4.stride(1), B4.stride(2),
        C4.stride(0), C4.stride(1), C4.stride(2),
        HAS_BIAS=bias is not None, SOFTPLUS=softplus, HAS_D=Df is not None, HAS_Z=z is not None,
        BLOCK_D=BD, T=T, STAGES=None, UNROLL=unroll, num_warps=warps,
    )
    # channel blocks never straddle groups (BLOCK_D divides d / g), so block i belongs to group i // (nblk / g)
    dB = _ungroup(dB_part.view(b, g, nblk // g, n, l).sum(2), B_shape)
    del dB_part
    dC = _ungroup(dC_part.view(b, g, nblk // g, n, l).sum(2), C_shape)
    dA = dA_part.sum((0, 1)).t()
    dD = dD_part.sum((0, 1)) if dD_part is not None else None
    dbias = dbias_part.sum((0, 1)) if dbias_part is not None else None
    dh0 = G[:, 0].transpose(1, 2).contiguous() if has_h0 else None
    return du, ddelta, dA, dB, dC, dD, dz, dbias, dh0


class _SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, softplus, launch):
        y, h_last, saved, cfg = forward(u, delta, A, B, C, D, z, delta_bias, initial_state, softplus, launch)
        ctx.save_for_backward(*saved, A, D, delta_bias)
        ctx.cfg = (softplus, cfg, B.shape, C.shape, B.dtype, C.dtype, initial_state is not None)
        return y, h_last

    @staticmethod
    def backward(ctx, dy, dh_last):
        *saved, A, D, delta_bias = ctx.saved_tensors
        softplus, cfg, B_shape, C_shape, B_dtype, C_dtype, has_h0 = ctx.cfg
        du, ddelta, dA, dB, dC, dD, dz, dbias, dh0 = backward(dy, dh_last, saved, softplus, cfg, B_shape, C_shape,
                                                              has_h0)
        return (du, ddelta, dA.to(A.dtype), dB.to(B_dtype), dC.to(C_dtype), dD.to(D.dtype) if D is not None else None,
                dz, dbias.to(delta_bias.dtype) if dbias is not None else None, dh0, None, None)


def _ungroup(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """(b, g, n, l) gradient back to the caller's B or C shape, summing groups a shared input was expanded to."""
    if len(shape) == 3:
        return grad.sum(1)
    return grad.sum(1, keepdim=True) if shape[1] == 1 and grad.shape[1] > 1 else grad


def _launch_carry(A2, dsum, buf, init, b, d, n, nc, reverse):
    # Few rows a program: at batch 1 there are only d·n = 8192 rows, and this scan is latency-bound.
    block_r, k = 32, 32
    _carry_scan[(triton.cdiv(d * n, block_r), b)](
        A2, dsum, buf, init if init is not None else buf,
        nc, d, d * n,
        HAS_INIT=init is not None, REVERSE=reverse, BLOCK_R=block_r, K=k, num_warps=2,
    )


def selective_scan_triton_v1(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    initial_state=None, return_final_state=False, *, chunk_size=None, block_d=None, num_warps=None, stages=None,
    unroll=None,
):
    """The chunk-parallel (v1) scan; arguments and result as ``scan_ref.selective_scan_ref``.

    ``chunk_size`` (power of two ≥ 16), ``block_d``, ``num_warps``, and the software-pipelining ``stages`` and
    ``unroll`` factor of the loop over states override the launch shape; tests use small chunks so that chunk
    boundaries fall inside short sequences, the benchmark sweeps them.
    """
    if u.shape[-1] == 0:
        raise ValueError("selective_scan_triton needs a sequence length of at least 1")
    y, h_last = _SelectiveScanTriton.apply(
        u, delta, A, B, C, D, z, delta_bias, initial_state, bool(delta_softplus),
        (chunk_size, block_d, num_warps, stages, unroll),
    )
    return (y, h_last) if return_final_state else y
