"""Backward kernels of the v2 selective scan (layout and plan: tiles.py, scan_v2.py).

The adjoint of the state, g_t = C_t dy'_t + a_{t+1} g_{t+1} (dy' = dy·silu(z)), runs backward in time, while the
states h_t run forward. `_bwd_scan` walks its chunk backward one checkpoint interval (M tiles) at a time: it reloads
the state saved at the interval's start, recomputes the interval's tile-start states forward into a small scratch
("stash", M states per program), then walks the tiles backward: each tile recomputes a and h from its start state
(in registers), runs the adjoint as an in-thread reverse scan seeded with p = a·g carried from the next tile, and
forms every gradient. So the backward takes (2M - 1)/M exp2 per element and never stores a (b, d, l, n) tensor.

With several chunks per sequence, `_bwd_summary` first computes each chunk's adjoint summary Q (p at the chunk start
from a zero adjoint at its end) and scan_v2_fwd._carry, reversed, the adjoint entering each chunk's end.

dB and dC sum over channels. REDUCE_ASM uses tiles.warp_reduce_scatter (about one shuffle per value), then one
cross-warp sum per tile. ATOMIC (the plan's bwd_atomic, the default) adds those into one (b, g, NP, l) sum, in an
order that varies from run to run; without it (and under torch.use_deterministic_algorithms) they are per-channel-
block partials (b, blocks, NP, l) that the launcher adds in a fixed order: deterministic, blocks / g times the
memory. Without REDUCE_ASM (the interpreter, or blocks narrower than a warp) `tl.sum` does the same sum.
With lanes (NL > 1, tiles.py) each lane walks its own states; the sums over states that du, dΔ and dz need are added
over a channel's lanes (tiles.lane_sum), and the butterfly sums dB/dC over the lanes holding the same state (it
skips the low log2(NL) lane bits; T·NL <= 32, else `tl.sum`).
"""

from __future__ import annotations

import triton
import triton.language as tl

from mambadna.kernels.scan_v2_fwd import delta_of, fwd_tile_loop
from mambadna.kernels.tiles import (LN2, chan_offsets, combine_fwd, exp2_on, get_row, lane_columns, lane_state,
                                    lane_state_mask, lane_state_offsets, lane_store_mask, lane_sum, load_a2, load_bc,
                                    put_row, reverse_adjoint, sigmoid, sigmoid_lanes, tile_ptrs, warp_reduce_scatter)

BWD_STRIDES = ["s_pb", "s_pc", "s_pn", "s_pd", "s_hb", "s_hn", "s_hd", "s_one"]


@triton.jit
def load_raw3(p_dt, p_dy, p_z, i_b, t0, L, o_t, c_t, c_y, c_z, s_tb, s_tl: tl.constexpr, s_yb, s_yl: tl.constexpr,
              s_zb, s_zl: tl.constexpr, lo, HAS_Z: tl.constexpr, T: tl.constexpr, BD: tl.constexpr):
    """The raw Δ, dy (and z) tiles at t0, masked outside [lo, L); BD: the tile's columns (channels × lanes)."""
    m = tl.broadcast_to((((t0 + o_t) < L) & ((t0 + o_t) >= lo))[:, None], (T, BD))
    r_dt = tl.load(tile_ptrs(p_dt, i_b * s_tb + t0 * s_tl, o_t, s_tl, c_t), mask=m, other=0.0)
    r_dy = tl.load(tile_ptrs(p_dy, i_b * s_yb + t0 * s_yl, o_t, s_yl, c_y), mask=m, other=0.0)
    r_z = tl.load(tile_ptrs(p_z, i_b * s_zb + t0 * s_zl, o_t, s_zl, c_z), mask=m, other=0.0) if HAS_Z else r_dy
    return r_dt, r_dy, r_z


@triton.jit
def dy_gated_of(r_dy, r_z, HAS_Z: tl.constexpr, BD: tl.constexpr, NL: tl.constexpr):
    """dy' = dy·silu(z), the gradient reaching the scan output before the gate, and dy, z, σ(z), from loaded
    tiles (zero where masked). With lanes, σ once per channel (tiles.sigmoid_lanes)."""
    b_dy = r_dy.to(tl.float32)
    if HAS_Z:
        b_z = r_z.to(tl.float32)
        b_sig = sigmoid(b_z) if NL == 1 else sigmoid_lanes(b_z, BD, NL)
        b_dyp = b_dy * b_z * b_sig
    else:
        b_z = b_dy
        b_sig = b_dy
        b_dyp = b_dy
    return b_dyp, b_dy, b_z, b_sig


@triton.jit(do_not_specialize=BWD_STRIDES)
def _bwd_summary(
    p_dt, p_bias, p_A2, p_BC, p_z, p_dy, p_Q,
    L, CL, NC, BPG,
    s_ub, s_ul: tl.constexpr, s_ud, s_tb, s_tl: tl.constexpr, s_td, s_zb, s_zl: tl.constexpr, s_zd,
    s_yb, s_yl: tl.constexpr, s_yd, s_bb, s_bg,
    s_pb, s_pc, s_pn, s_pd, s_hb, s_hn, s_hd, s_one,
    s_oub, s_oul: tl.constexpr, s_oud, s_otb, s_otl: tl.constexpr, s_otd, s_ozb, s_ozl: tl.constexpr, s_ozd,
    N: tl.constexpr, NP: tl.constexpr, T: tl.constexpr, BD: tl.constexpr,
    NFMA: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_Z: tl.constexpr,
    VT: tl.constexpr, VZ: tl.constexpr, VY: tl.constexpr, NL: tl.constexpr,
):
    """Q (b, NC, NP, d) = the adjoint p = a·g at each chunk's start, from a zero adjoint at the chunk's end."""
    i_db, i_c, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    D_ = tl.num_programs(0) * BD
    BDL: tl.constexpr = BD * NL  # tile columns: BD channels × NL lanes (tiles.lane_columns)
    SN: tl.constexpr = (N + NL - 1) // NL  # state steps
    if NL == 1:  # written out: lane_columns' inlining reorders the code ptxas gets (98 -> 96 registers)
        o_d = i_db * BD + tl.arange(0, BD).to(tl.int64)
        o_ln = 0
    else:
        o_dl, o_ln = lane_columns(BD, NL)
        o_d = i_db * BD + o_dl
    o_t = tl.arange(0, T)
    o_n = tl.arange(0, NP // NL)
    i_g = i_db // BPG  # channel blocks per B/C group: a block never straddles two
    b_bias = tl.load(p_bias + o_d * s_one) if HAS_BIAS else tl.zeros([BDL], dtype=tl.float32)
    c_t, c_z = chan_offsets(o_d, s_td, s_one, BD, VT, NL), chan_offsets(o_d, s_zd, s_one, BD, VZ, NL)
    c_y = chan_offsets(o_d, s_yd, s_one, BD, VY, NL)
    b_p = tl.zeros([NP // NL, BDL], dtype=tl.float32)
    t_c = i_c * CL
    n_tiles = tl.cdiv(tl.minimum(CL, L - t_c), T)
    p_bcb = p_BC + i_b * s_bb + i_g * s_bg  # staged B/C (b, g, tiles, 2, N, T)
    # the previous tile's inputs are loaded before the current one is computed (see scan_v2_fwd._fwd_scan)
    r_dt, r_dy, r_z = load_raw3(p_dt, p_dy, p_z, i_b, t_c + (n_tiles - 1) * T, L, o_t, c_t, c_y, c_z, s_tb, s_tl,
                                s_yb, s_yl, s_zb, s_zl, t_c, HAS_Z, T, BDL)
    for k in range(0, n_tiles):
        t0 = t_c + (n_tiles - 1 - k) * T
        m = tl.broadcast_to(((t0 + o_t) < L)[:, None], (T, BDL))
        n_dt, n_dy, n_z = load_raw3(p_dt, p_dy, p_z, i_b, t0 - T, L, o_t, c_t, c_y, c_z, s_tb, s_tl, s_yb, s_yl,
                                    s_zb, s_zl, t_c, HAS_Z, T, BDL)
        b_dt, _ = delta_of(r_dt, m, b_bias, HAS_BIAS, SOFTPLUS, BD, NL)
        b_dyp, _, _, _ = dy_gated_of(r_dy, r_z, HAS_Z, BD, NL)
        for i_s in tl.static_range(SN):
            i_n = lane_state(o_ln, i_s, NL)
            b_a2 = load_a2(p_A2, i_n, D_, o_d, s_one, N, NL)
            b_a = exp2_on(b_dt * b_a2[None, :], i_s >= SN - NFMA)
            b_c = b_dyp * load_bc(p_bcb + (t0 // T) * (2 * N * T), i_n, o_t, T, N, NL, True)
            b_c = tl.where(o_t[:, None] == T - 1, b_c + get_row(b_p, o_n, i_s)[None, :], b_c)
            b_g = reverse_adjoint(b_a, b_c)
            b_p = put_row(b_p, o_n, i_s, get_row(b_a * b_g, o_t, 0))
        r_dt, r_dy, r_z = n_dt, n_dy, n_z
    tl.store(p_Q + ((i_b * NC + i_c) * NP) * D_ + lane_state_offsets(o_n, o_ln, o_d, D_ * s_one, s_one, BD, NL),
             b_p)


@triton.jit(do_not_specialize=BWD_STRIDES)
def _bwd_summary_head(
    p_dt, p_bias, p_A2, p_BC, p_z, p_dy, p_Q,
    L, CL, NC, BPG,
    s_ub, s_ul: tl.constexpr, s_ud, s_tb, s_tl: tl.constexpr, s_td, s_zb, s_zl: tl.constexpr, s_zd,
    s_yb, s_yl: tl.constexpr, s_yd, s_bb, s_bg,
    s_pb, s_pc, s_pn, s_pd, s_hb, s_hn, s_hd, s_one,
    s_oub, s_oul: tl.constexpr, s_oud, s_otb, s_otl: tl.constexpr, s_otd, s_ozb, s_ozl: tl.constexpr, s_ozd,
    N: tl.constexpr, NP: tl.constexpr, T: tl.constexpr, BD: tl.constexpr,
    NFMA: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_Z: tl.constexpr,
    VT: tl.constexpr, VZ: tl.constexpr, VY: tl.constexpr, STOP: tl.constexpr, NL: tl.constexpr,
):
    """`_bwd_summary`'s Q walked from the chunk's start and stopped early (the mirror of
    scan_v2_fwd._fwd_summary_tail): each tile's own adjoint at its start, from zero after it, enters Q weighted by
    the decay of the tiles before it in the chunk, exp2(A2·R); once A2·R <= -STOP for the slowest state of every
    channel, every later position's weight is below 2^-STOP, what the full walk rounds those terms to."""
    i_db, i_c, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    D_ = tl.num_programs(0) * BD
    BDL: tl.constexpr = BD * NL  # tile columns: BD channels × NL lanes (tiles.lane_columns)
    SN: tl.constexpr = (N + NL - 1) // NL  # state steps
    if NL == 1:  # written out: lane_columns' inlining reorders the code ptxas gets (98 -> 96 registers)
        o_d = i_db * BD + tl.arange(0, BD).to(tl.int64)
        o_ln = 0
    else:
        o_dl, o_ln = lane_columns(BD, NL)
        o_d = i_db * BD + o_dl
    o_t = tl.arange(0, T)
    o_n = tl.arange(0, NP // NL)
    i_g = i_db // BPG
    b_bias = tl.load(p_bias + o_d * s_one) if HAS_BIAS else tl.zeros([BDL], dtype=tl.float32)
    c_t, c_z = chan_offsets(o_d, s_td, s_one, BD, VT, NL), chan_offsets(o_d, s_zd, s_one, BD, VZ, NL)
    c_y = chan_offsets(o_d, s_yd, s_one, BD, VY, NL)
    # A2 < 0: the largest is the slowest decay (with lanes, every lane takes its channel's maximum over all states)
    b_a2max = tl.full([BDL], float("-inf"), dtype=tl.float32)
    for i_m in tl.static_range(N):
        b_a2max = tl.maximum(b_a2max, tl.load(p_A2 + i_m * D_ + o_d * s_one))
    b_q = tl.zeros([NP // NL, BDL], dtype=tl.float32)
    b_R = tl.zeros([BDL], dtype=tl.float32)
    t_c = i_c * CL
    t_end = tl.minimum(t_c + CL, L)
    n_tiles = tl.cdiv(t_end - t_c, T)
    p_bcb = p_BC + i_b * s_bb + i_g * s_bg
    r_dt, r_dy, r_z = load_raw3(p_dt, p_dy, p_z, i_b, t_c, t_end, o_t, c_t, c_y, c_z, s_tb, s_tl, s_yb, s_yl,
                                s_zb, s_zl, t_c, HAS_Z, T, BDL)
    i_tile = 0
    go = n_tiles > 0
    while go:
        t0 = t_c + i_tile * T
        m = tl.broadcast_to(((t0 + o_t) < L)[:, None], (T, BDL))
        n_dt, n_dy, n_z = load_raw3(p_dt, p_dy, p_z, i_b, t0 + T, t_end, o_t, c_t, c_y, c_z, s_tb, s_tl, s_yb,
                                    s_yl, s_zb, s_zl, t_c, HAS_Z, T, BDL)
        b_dt, _ = delta_of(r_dt, m, b_bias, HAS_BIAS, SOFTPLUS, BD, NL)
        b_dyp, _, _, _ = dy_gated_of(r_dy, r_z, HAS_Z, BD, NL)
        for i_s in tl.static_range(SN):
            i_n = lane_state(o_ln, i_s, NL)
            b_a2 = load_a2(p_A2, i_n, D_, o_d, s_one, N, NL)
            b_a = exp2_on(b_dt * b_a2[None, :], i_s >= SN - NFMA)
            b_c = b_dyp * load_bc(p_bcb + (t0 // T) * (2 * N * T), i_n, o_t, T, N, NL, True)
            b_g = reverse_adjoint(b_a, b_c)
            b_w = tl.exp2(b_a2 * b_R)  # decay of the chunk's tiles before this one
            b_q = put_row(b_q, o_n, i_s, tl.fma(b_w, get_row(b_a * b_g, o_t, 0), get_row(b_q, o_n, i_s)))
        b_R += tl.sum(b_dt, axis=0)
        i_tile += 1
        go = (i_tile < n_tiles) & (tl.max(b_a2max * b_R, axis=0) > -STOP)
        r_dt, r_dy, r_z = n_dt, n_dy, n_z
    tl.store(p_Q + ((i_b * NC + i_c) * NP) * D_ + lane_state_offsets(o_n, o_ln, o_d, D_ * s_one, s_one, BD, NL),
             b_q)


@triton.jit(do_not_specialize=BWD_STRIDES)
def _bwd_scan(
    p_u, p_dt, p_bias, p_A2, p_BC, p_D, p_z, p_dy, p_ck, p_pin, p_scr,
    p_du, p_ddt, p_dz, p_dB, p_dC, p_dA, p_dD, p_dbias, p_dh0,
    L, CL, NC, NCK, BPG,
    s_ub, s_ul: tl.constexpr, s_ud, s_tb, s_tl: tl.constexpr, s_td, s_zb, s_zl: tl.constexpr, s_zd,
    s_yb, s_yl: tl.constexpr, s_yd, s_bb, s_bg,
    s_pb, s_pc, s_pn, s_pd, s_hb, s_hn, s_hd, s_one,
    s_oub, s_oul: tl.constexpr, s_oud, s_otb, s_otl: tl.constexpr, s_otd, s_ozb, s_ozl: tl.constexpr, s_ozd,
    N: tl.constexpr, NP: tl.constexpr, T: tl.constexpr, BD: tl.constexpr, M: tl.constexpr,
    NFMA: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_PIN: tl.constexpr, HAS_H0: tl.constexpr, REDUCE_ASM: tl.constexpr, CPT: tl.constexpr,
    VU: tl.constexpr, VT: tl.constexpr, VZ: tl.constexpr, VY: tl.constexpr, VOU: tl.constexpr, VOT: tl.constexpr,
    VOZ: tl.constexpr, NL: tl.constexpr, UNROLL: tl.constexpr, STAGES: tl.constexpr, ATOMIC: tl.constexpr,
):
    i_db, i_c, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    NBLK = tl.num_programs(0)
    D_ = NBLK * BD
    BDL: tl.constexpr = BD * NL  # tile columns: BD channels × NL lanes (tiles.lane_columns)
    o_dl, o_ln = lane_columns(BD, NL)
    o_d = i_db * BD + o_dl
    o_t = tl.arange(0, T)
    o_n = tl.arange(0, NP // NL)
    m_sn = lane_state_mask(o_n, o_ln, N, NL, BDL)
    i_g = i_db // BPG  # channel blocks per B/C group: a block never straddles two
    b_bias = tl.load(p_bias + o_d * s_one) if HAS_BIAS else tl.zeros([BDL], dtype=tl.float32)
    b_Dv = tl.load(p_D + o_d * s_one) if HAS_D else tl.zeros([BDL], dtype=tl.float32)
    c_u, c_t = chan_offsets(o_d, s_ud, s_one, BD, VU, NL), chan_offsets(o_d, s_td, s_one, BD, VT, NL)
    c_z, c_y = chan_offsets(o_d, s_zd, s_one, BD, VZ, NL), chan_offsets(o_d, s_yd, s_one, BD, VY, NL)
    c_ou, c_ot = chan_offsets(o_d, s_oud, s_one, BD, VOU, NL), chan_offsets(o_d, s_otd, s_one, BD, VOT, NL)
    c_oz = chan_offsets(o_d, s_ozd, s_one, BD, VOZ, NL)
    # This program's scratch, (M + 4) slots of (NP, BD), each thread touching only its own channel's column
    # except in the cross-warp sum of dB/dC: slots 0..M-1 the tile-start states of the current checkpoint
    # interval, M the carried adjoint p = a·g, M+1 the dA sums, M+2 / M+3 the per-warp dC / dB rows of a tile.
    # With lanes a slot is the same (NP, BD) block, column (c, k) owning states k, k + NL, ... of channel c.
    NS: tl.constexpr = NP * BD
    p_sc = p_scr + ((i_b * NC + i_c) * NBLK + i_db) * ((M + 4) * NS)
    off_sc = lane_state_offsets(o_n, o_ln, o_dl, BD * s_one, s_one, BD, NL)
    p_p, p_dAs, p_rC, p_rB = p_sc + M * NS, p_sc + (M + 1) * NS, p_sc + (M + 2) * NS, p_sc + (M + 3) * NS
    if HAS_PIN:  # the adjoint entering this chunk's end
        b_p = tl.load(p_pin + i_b * s_pb + i_c * s_pc + lane_state_offsets(o_n, o_ln, o_d, s_pn, s_pd, BD, NL),
                      mask=m_sn, other=0.0).to(tl.float32)
    else:
        b_p = tl.zeros([NP // NL, BDL], dtype=tl.float32)
    tl.store(p_p + off_sc, b_p)
    tl.store(p_dAs + off_sc, tl.zeros([NP // NL, BDL], dtype=tl.float32))
    # dD and dΔ's bias: every lane of a channel sums the same values and stores the same result
    b_dD = tl.zeros([BDL], dtype=tl.float32)
    b_dbias = tl.zeros([BDL], dtype=tl.float32)
    off_own = lane_state_offsets(o_n, o_ln, o_d, D_ * s_one, s_one, BD, NL)
    t_c = i_c * CL
    n_tiles = tl.cdiv(tl.minimum(CL, L - t_c), T)
    p_bcb = p_BC + i_b * s_bb + i_g * s_bg  # staged B/C (b, g, tiles, 2, N, T)
    # dB/dC rows: this block's own partial, or (ATOMIC) its group's sum, which every block of the group adds to
    if ATOMIC:
        i_row = i_b * (NBLK // BPG) + i_g
    else:
        i_row = i_b * NBLK + i_db
    p_dBb = p_dB + (i_row * NP) * L
    p_dCb = p_dC + (i_row * NP) * L
    for k in range(0, tl.cdiv(n_tiles, M)):
        j0 = (tl.cdiv(n_tiles, M) - 1 - k) * M  # first tile of the interval, counted from the chunk start
        nt = tl.minimum(M, n_tiles - j0)
        tl.store(p_sc + off_sc, tl.load(p_ck + ((i_b * NCK + (t_c + j0 * T) // (M * T)) * NP) * D_ + off_own))
        # forward over the interval: the start state of every tile (next tile's inputs loaded first)
        t_first = t_c + j0 * T
        m = tl.broadcast_to(((t_first + o_t) < L)[:, None], (T, BDL))
        r_dt = tl.load(tile_ptrs(p_dt, i_b * s_tb + t_first * s_tl, o_t, s_tl, c_t), mask=m, other=0.0)
        r_u = tl.load(tile_ptrs(p_u, i_b * s_ub + t_first * s_ul, o_t, s_ul, c_u), mask=m, other=0.0)
        for j in range(0, nt - 1):
            t0 = t_c + (j0 + j) * T
            m = tl.broadcast_to(((t0 + o_t) < L)[:, None], (T, BDL))
            m_next = tl.broadcast_to(((t0 + T + o_t) < L)[:, None], (T, BDL))
            n_dt = tl.load(tile_ptrs(p_dt, i_b * s_tb + (t0 + T) * s_tl, o_t, s_tl, c_t), mask=m_next, other=0.0)
            n_u = tl.load(tile_ptrs(p_u, i_b * s_ub + (t0 + T) * s_ul, o_t, s_ul, c_u), mask=m_next, other=0.0)
            b_dt, _ = delta_of(r_dt, m, b_bias, HAS_BIAS, SOFTPLUS, BD, NL)
            fwd_tile_loop(p_sc + j * NS, p_sc + (j + 1) * NS, b_dt, b_dt * r_u.to(tl.float32), b_dt, p_A2,
                          p_bcb + (t0 // T) * (2 * N * T), o_t, o_d, o_dl, D_, s_one, o_ln, N, NFMA, T, BD, False,
                          NL)
            r_dt, r_u = n_dt, n_u
        # backward over the interval's tiles, each loading the previous tile's inputs before computing its own
        t_last = t_c + (j0 + nt - 1) * T
        r_dt, r_dy, r_z = load_raw3(p_dt, p_dy, p_z, i_b, t_last, L, o_t, c_t, c_y, c_z, s_tb, s_tl, s_yb, s_yl,
                                    s_zb, s_zl, t_c, HAS_Z, T, BDL)
        r_u = tl.load(tile_ptrs(p_u, i_b * s_ub + t_last * s_ul, o_t, s_ul, c_u),
                      mask=tl.broadcast_to(((t_last + o_t) < L)[:, None], (T, BDL)), other=0.0)
        for jj in range(0, nt):
            j = nt - 1 - jj
            t0 = t_c + (j0 + j) * T
            m_t = (t0 + o_t) < L
            m = tl.broadcast_to(m_t[:, None], (T, BDL))
            n_dt, n_dy, n_z = load_raw3(p_dt, p_dy, p_z, i_b, t0 - T, L, o_t, c_t, c_y, c_z, s_tb, s_tl, s_yb, s_yl,
                                        s_zb, s_zl, t_c + j0 * T, HAS_Z, T, BDL)
            n_u = tl.load(tile_ptrs(p_u, i_b * s_ub + (t0 - T) * s_ul, o_t, s_ul, c_u),
                          mask=tl.broadcast_to(((t0 - T + o_t) >= t_c + j0 * T)[:, None], (T, BDL)), other=0.0)
            # Everything the gradients need after the loop over states is computed now and kept as values (u,
            # σ(raw Δ), dy·silu'(z)): keeping their int64 offsets instead costs twice the registers.
            b_dt, b_raw = delta_of(r_dt, m, b_bias, HAS_BIAS, SOFTPLUS, BD, NL)
            if NL == 1:
                b_sp = sigmoid(b_raw) if SOFTPLUS else b_raw  # dΔ/d(raw Δ)
            else:
                b_sp = sigmoid_lanes(b_raw, BD, NL) if SOFTPLUS else b_raw
            b_u = r_u.to(tl.float32)
            b_dyp, b_dy, b_z, b_sig = dy_gated_of(r_dy, r_z, HAS_Z, BD, NL)
            b_q = b_dy * b_sig * (1.0 + b_z * (1.0 - b_sig))  # dz = q · (output before the gate)
            b_y, b_gB, b_gA = bwd_states(b_dt, b_dt * b_u, b_dyp, b_Dv[None, :] * b_u, p_A2,
                                         p_bcb + (t0 // T) * (2 * N * T), p_sc + j * NS, p_p, p_dAs, p_rC, p_rB,
                                         p_dCb + t0, p_dBb + t0, m_t, L, o_t, o_d, o_dl, D_, s_one, o_ln, N, NFMA, T,
                                         BD, REDUCE_ASM, CPT, NL, UNROLL, STAGES, ATOMIC)
            if REDUCE_ASM:
                # Lane l of every warp holds position t0 + l % T of each state's warp sum: add the warps. One
                # (state, position) per thread, so the sum is W loads and adds, with no cross-lane step. With
                # lanes, state s·NL + k of position t sits on lane t·NL + k of state step s's row.
                tl.debug_barrier()
                o_k = tl.arange(0, NP * T)
                k_n, k_t = o_k // T, o_k % T
                if NL > 1:
                    o_r = (k_n // NL) * BDL + k_t * NL + k_n % NL
                b_sC = tl.zeros([NP * T], dtype=tl.float32)
                b_sB = tl.zeros([NP * T], dtype=tl.float32)
                for w in tl.static_range(BDL // CPT // 32):
                    if NL == 1:
                        b_sC += tl.load(p_rC + k_n * BD + w * 32 + k_t)
                        b_sB += tl.load(p_rB + k_n * BD + w * 32 + k_t)
                    else:
                        b_sC += tl.load(p_rC + o_r + w * 32)
                        b_sB += tl.load(p_rB + o_r + w * 32)
                m_k = (k_n < N) & (t0 + k_t < L)
                put_sum(p_dCb + k_n.to(tl.int64) * L + t0 + k_t, b_sC, m_k, ATOMIC)
                put_sum(p_dBb + k_n.to(tl.int64) * L + t0 + k_t, b_sB, m_k, ATOMIC)
                tl.debug_barrier()  # the rows are rewritten by the next tile
            b_dun = b_dt * b_gB
            if HAS_D:
                b_dun += b_Dv[None, :] * b_dyp
                b_dD += tl.sum(b_dyp * b_u, axis=0)
            m_st = lane_store_mask(m, o_ln, NL)
            if HAS_Z:
                tl.store(tile_ptrs(p_dz, i_b * s_ozb + t0 * s_ozl, o_t, s_ozl, c_oz),
                         (b_q * b_y).to(p_dz.dtype.element_ty), mask=m_st)
            b_ddt = tl.where(m, (b_u * b_gB + b_gA) * b_sp, 0.0) if SOFTPLUS else tl.where(m, b_u * b_gB + b_gA, 0.0)
            b_dbias += tl.sum(b_ddt, axis=0)
            tl.store(tile_ptrs(p_du, i_b * s_oub + t0 * s_oul, o_t, s_oul, c_ou),
                     b_dun.to(p_du.dtype.element_ty), mask=m_st)
            tl.store(tile_ptrs(p_ddt, i_b * s_otb + t0 * s_otl, o_t, s_otl, c_ot),
                     b_ddt.to(p_ddt.dtype.element_ty), mask=m_st)
            r_dt, r_u, r_dy, r_z = n_dt, n_u, n_dy, n_z
    tl.store(p_dA + ((i_b * NC + i_c) * NP) * D_ + off_own, tl.load(p_dAs + off_sc))
    if HAS_D:
        tl.store(p_dD + (i_b * NC + i_c) * D_ + o_d * s_one, b_dD)
    if HAS_BIAS:
        tl.store(p_dbias + (i_b * NC + i_c) * D_ + o_d * s_one, b_dbias)
    if HAS_H0:
        if i_c == 0:  # p at the sequence start is a_0·g_0 = the gradient of the initial state
            tl.store(p_dh0 + i_b * s_hb + lane_state_offsets(o_n, o_ln, o_d, s_hn, s_hd, BD, NL),
                     tl.load(p_p + off_sc), mask=m_sn)


@triton.jit
def put_sum(ptr, value, mask, ATOMIC: tl.constexpr):
    """A row of dB or dC sums: stored as this channel block's partial, or (ATOMIC) added into its group's sum."""
    if ATOMIC:
        tl.atomic_add(ptr, value, mask=mask, sem="relaxed")
    else:
        tl.store(ptr, value, mask=mask)


@triton.jit
def _bwd_states(b_dt, b_du, b_dyp, b_y, b_gB, b_gA, p_A2, p_bc, p_h0, p_p, p_dAs, p_rC, p_rB, p_dC, p_dB, m_t, L,
                o_t, o_dl, D_, o_d, s_one, o_ln, n0, n1, N: tl.constexpr, T: tl.constexpr, BD: tl.constexpr,
                REDUCE_ASM: tl.constexpr, CPT: tl.constexpr, FMA: tl.constexpr, NL: tl.constexpr,
                UNROLL: tl.constexpr, STAGES: tl.constexpr, ATOMIC: tl.constexpr):
    # STAGES > 1: Triton's software pipeliner issues the next states' loads (A, B, C rows, the scratch rows)
    # before this state's arithmetic; the rows a state stores are never read by a later state of the same tile
    for i_s in tl.range(n0, n1, loop_unroll_factor=UNROLL, num_stages=STAGES):
        i_n = lane_state(o_ln, i_s, NL)
        b_a2 = load_a2(p_A2, i_n, D_, o_d, s_one, N, NL)
        b_a = exp2_on(b_dt * b_a2[None, :], FMA)
        b_B = load_bc(p_bc, i_n, o_t, T, N, NL, False)  # [T, 1], or [T, BD·NL] with lanes
        b_C = load_bc(p_bc, i_n, o_t, T, N, NL, True)
        o_s = i_n * BD + o_dl * s_one  # this state's row of a scratch slot
        b_x = b_du * b_B
        b_xf = tl.where(o_t[:, None] == 0, tl.fma(b_a, tl.load(p_h0 + o_s)[None, :], b_x), b_x)
        _, b_hs = tl.associative_scan((b_a, b_xf), axis=0, combine_fn=combine_fwd)
        b_y = tl.fma(b_hs, b_C, b_y)
        b_c = b_dyp * b_C
        b_c = tl.where(o_t[:, None] == T - 1, b_c + tl.load(p_p + o_s)[None, :], b_c)
        b_g = reverse_adjoint(b_a, b_c)
        tl.store(p_p + o_s, get_row(b_a * b_g, o_t, 0))
        b_gB = tl.fma(b_g, b_B, b_gB)
        b_r = b_g * (b_hs - b_x)  # g_t·a_t·h_{t-1} as g_t·(h_t − Δ_t u_t B_t): no division
        b_gA = tl.fma(b_r, (b_a2 * LN2)[None, :], b_gA)
        tl.store(p_dAs + o_s, tl.load(p_dAs + o_s) + tl.sum(b_r * b_dt, axis=0))
        if REDUCE_ASM:
            # the lane-distributed warp sums of this state step (of NL states with lanes)
            o_w = i_s * (BD * NL) + tl.arange(0, BD * NL // CPT) * s_one
            tl.store(p_rC + o_w, warp_reduce_scatter(b_dyp * b_hs, BD * NL, CPT, NL))
            tl.store(p_rB + o_w, warp_reduce_scatter(b_g * b_du, BD * NL, CPT, NL))
        elif NL == 1:
            put_sum(p_dC + i_n * L + o_t, tl.sum(b_dyp * b_hs, axis=1), m_t, ATOMIC)
            put_sum(p_dB + i_n * L + o_t, tl.sum(b_g * b_du, axis=1), m_t, ATOMIC)
        else:  # the sum over the block's channels, per lane: states i_s·NL + k of every position
            o_r = (i_s * NL + tl.arange(0, NL))[None, :] * L + o_t[:, None]
            put_sum(p_dC + o_r, tl.sum(tl.reshape(b_dyp * b_hs, (T, BD, NL)), axis=1), m_t[:, None], ATOMIC)
            put_sum(p_dB + o_r, tl.sum(tl.reshape(b_g * b_du, (T, BD, NL)), axis=1), m_t[:, None], ATOMIC)
    return b_y, b_gB, b_gA


@triton.jit
def bwd_states(b_dt, b_du, b_dyp, b_y, p_A2, p_bc, p_h0, p_p, p_dAs, p_rC, p_rB, p_dC, p_dB, m_t, L,
               o_t, o_d, o_dl, D_, s_one, o_ln, N: tl.constexpr, NFMA: tl.constexpr, T: tl.constexpr,
               BD: tl.constexpr, REDUCE_ASM: tl.constexpr, CPT: tl.constexpr, NL: tl.constexpr,
               UNROLL: tl.constexpr, STAGES: tl.constexpr, ATOMIC: tl.constexpr):
    """One tile of the backward, state by state (a loop, with the per-state carries in the scratch slots): a and
    h from the tile's start state p_h0, the adjoint g from the carried p, and every per-state gradient term.
    Returns the tile's output before the gate (b_y comes in as D·u; for dz), Σ_n g·B and Σ_n A·g·a·h_{t-1}
    (with lanes: each lane sums its own states, then tiles.lane_sum adds the lanes)."""
    SN: tl.constexpr = (N + NL - 1) // NL
    b_gB = tl.zeros(b_dt.shape, dtype=tl.float32)
    b_gA = tl.zeros(b_dt.shape, dtype=tl.float32)
    b_y0 = b_y
    if NL > 1:
        b_y = tl.zeros(b_dt.shape, dtype=tl.float32)  # D·u joins after the lanes' sum
    b_y, b_gB, b_gA = _bwd_states(b_dt, b_du, b_dyp, b_y, b_gB, b_gA, p_A2, p_bc, p_h0, p_p, p_dAs, p_rC, p_rB,
                                  p_dC, p_dB, m_t, L, o_t, o_dl, D_, o_d, s_one, o_ln, 0, SN - NFMA, N, T, BD,
                                  REDUCE_ASM, CPT, False, NL, UNROLL, STAGES, ATOMIC)
    if NFMA > 0:
        b_y, b_gB, b_gA = _bwd_states(b_dt, b_du, b_dyp, b_y, b_gB, b_gA, p_A2, p_bc, p_h0, p_p, p_dAs, p_rC,
                                      p_rB, p_dC, p_dB, m_t, L, o_t, o_dl, D_, o_d, s_one, o_ln, SN - NFMA, SN, N,
                                      T, BD, REDUCE_ASM, CPT, True, NL, UNROLL, STAGES, ATOMIC)
    if NL > 1:
        b_y = lane_sum(b_y, BD, NL) + b_y0
        b_gB = lane_sum(b_gB, BD, NL)
        b_gA = lane_sum(b_gA, BD, NL)
    return b_y, b_gB, b_gA
