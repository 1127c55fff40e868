"""Forward kernels of the v2 selective scan: state in registers, sequential in time (see scan_v2.py for the plan).

A program owns BD channels (one per thread) of one batch row and one chunk of positions, and walks the chunk in
tiles of T positions: per state n (unrolled), a = exp2(Δ·A2_n) over the tile, the recurrence h = a·h + Δ·u·B_n as an
in-thread scan with the carried state folded into the first position, y += C_n·h. Nothing crosses lanes. Per
(position, channel, state) that is one exp2 and four FMA-pipe operations, so the kernel is bound by the MUFU's exp2
rate; `NFMA` of the N states take their exp2 on the FMA pipe instead (tiles.exp2_fma) to share that load. With
lanes (NL > 1, tiles.py) a thread owns N / NL of a channel's states, NFMA counts per lane, y is added over the
channel's lanes before the gate, and Δ's softplus and the gate's sigmoid are computed once per channel, split over
its lanes and shared (tiles.softplus_lanes).

`_fwd_scan` with SUMMARY=True runs a chunk from a zero state and writes only its end state S and its decay product
P = Π a (for the carry between chunks, `_carry`); with SUMMARY=False it starts from the given state and writes y,
the states at every checkpoint (every M tiles, for the backward) and the final state.
"""

from __future__ import annotations

import triton
import triton.language as tl

from mambadna.kernels.tiles import (chan_offsets, combine_fwd, exp2_on, get_row, lane_columns, lane_state,
                                    lane_state_mask, lane_state_offsets, lane_store_mask, lane_sum, load_a2, load_bc,
                                    put_row, sigmoid, sigmoid_lanes, softplus, softplus_lanes, tile_ptrs)

# Never specialized (see tiles.py): the strides of the user's state tensors and s_one (= 1), which hides the channel
# axis of our own buffers. Tile strides are specialized (tiles.chan_offsets hides them where it must), position
# strides are constexpr (a tile's row offsets become immediates), and the staged B/C are tile blocks (2, N, T): every
# per-state load of a tile is a 16-byte vector at a fixed offset from one pointer.
FWD_STRIDES = ["s_hb", "s_hc", "s_hn", "s_hd", "s_one"]


@triton.jit
def delta_of(b_ld, m, b_bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, BD: tl.constexpr, NL: tl.constexpr):
    """The Δ tile in fp32 from a loaded one, zero where masked (a masked position then neither decays nor feeds the
    state); and the raw value (delta + bias) that softplus took. With lanes, softplus once per channel
    (tiles.softplus_lanes)."""
    b_raw = b_ld.to(tl.float32)
    if HAS_BIAS:
        b_raw += b_bias[None, :]
    if NL == 1:
        b_dt = softplus(b_raw) if SOFTPLUS else b_raw
    else:
        b_dt = softplus_lanes(b_raw, BD, NL) if SOFTPLUS else b_raw
    return tl.where(m, b_dt, 0.0), b_raw


@triton.jit
def fwd_tile(b_h, b_dt, b_du, b_y, p_A2, p_bc, o_n, o_t, o_d, D_, s_one, o_ln,
             N: tl.constexpr, NFMA: tl.constexpr, T: tl.constexpr, BD: tl.constexpr, WITH_Y: tl.constexpr,
             NL: tl.constexpr):
    """Advance the states b_h [NP / NL, BD·NL] over one tile, the states unrolled; with WITH_Y add C·h to b_y
    [T, BD·NL] (with lanes: each lane's part, for tiles.lane_sum). p_bc: the tile's block of the staged B/C,
    (2, N, T) fp32; p_A2: A·log2(e) as (n, d). NFMA counts state steps (states per lane)."""
    SN: tl.constexpr = (N + NL - 1) // NL  # state steps: each lane's states
    for i_s in tl.static_range(SN):
        i_n = lane_state(o_ln, i_s, NL)
        b_a2 = load_a2(p_A2, i_n, D_, o_d, s_one, N, NL)  # [BD·NL]; reloaded per state: fewer live registers
        b_a = exp2_on(b_dt * b_a2[None, :], i_s >= SN - NFMA)
        b_x = b_du * load_bc(p_bc, i_n, o_t, T, N, NL, False)  # without lanes the same row for every thread
        b_x = tl.where(o_t[:, None] == 0, tl.fma(b_a, get_row(b_h, o_n, i_s)[None, :], b_x), b_x)
        _, b_hs = tl.associative_scan((b_a, b_x), axis=0, combine_fn=combine_fwd)
        if WITH_Y:
            b_y = tl.fma(b_hs, load_bc(p_bc, i_n, o_t, T, N, NL, True), b_y)
        b_h = put_row(b_h, o_n, i_s, get_row(b_hs, o_t, T - 1))
    return b_h, b_y


@triton.jit
def _fwd_states(p_hin, p_hout, b_dt, b_du, b_y, p_A2, p_bc, o_t, o_d, o_dl, D_, s_one, o_ln, n0, n1,
                N: tl.constexpr, T: tl.constexpr, BD: tl.constexpr, WITH_Y: tl.constexpr, FMA: tl.constexpr,
                NL: tl.constexpr):
    for i_s in tl.range(n0, n1, loop_unroll_factor=1):
        i_n = lane_state(o_ln, i_s, NL)
        b_a2 = load_a2(p_A2, i_n, D_, o_d, s_one, N, NL)
        b_a = exp2_on(b_dt * b_a2[None, :], FMA)
        b_x = b_du * load_bc(p_bc, i_n, o_t, T, N, NL, False)
        b_x = tl.where(o_t[:, None] == 0, tl.fma(b_a, tl.load(p_hin + i_n * BD + o_dl * s_one)[None, :], b_x), b_x)
        _, b_hs = tl.associative_scan((b_a, b_x), axis=0, combine_fn=combine_fwd)
        if WITH_Y:
            b_y = tl.fma(b_hs, load_bc(p_bc, i_n, o_t, T, N, NL, True), b_y)
        tl.store(p_hout + i_n * BD + o_dl * s_one, get_row(b_hs, o_t, T - 1))
    return b_y


@triton.jit
def fwd_tile_loop(p_hin, p_hout, b_dt, b_du, b_y, p_A2, p_bc, o_t, o_d, o_dl, D_, s_one, o_ln,
                  N: tl.constexpr, NFMA: tl.constexpr, T: tl.constexpr, BD: tl.constexpr, WITH_Y: tl.constexpr,
                  NL: tl.constexpr):
    """fwd_tile with a loop over the states instead of unrolling them: the states come from and go to a
    per-program scratch (NP, BD) (p_hin, p_hout; the same one is fine: each thread reads its own row before
    writing it). Far fewer live registers, for two L1-resident accesses per state and tile. With lanes the scratch
    is the same (NP, BD) block, column (c, k) owning states k, k + NL, ... of channel c."""
    SN: tl.constexpr = (N + NL - 1) // NL
    b_y = _fwd_states(p_hin, p_hout, b_dt, b_du, b_y, p_A2, p_bc, o_t, o_d, o_dl, D_, s_one, o_ln, 0, SN - NFMA,
                      N, T, BD, WITH_Y, False, NL)
    if NFMA > 0:
        b_y = _fwd_states(p_hin, p_hout, b_dt, b_du, b_y, p_A2, p_bc, o_t, o_d, o_dl, D_, s_one, o_ln, SN - NFMA,
                          SN, N, T, BD, WITH_Y, True, NL)
    return b_y


@triton.jit(do_not_specialize=FWD_STRIDES)
def _fwd_scan(
    p_u, p_dt, p_bias, p_A2, p_BC, p_D, p_z, p_h0, p_y, p_ck, p_S, p_P, p_hlast, p_scr,
    L, CL, NC, NCK, BPG,
    s_ub, s_ul: tl.constexpr, s_ud, s_tb, s_tl: tl.constexpr, s_td, s_zb, s_zl: tl.constexpr, s_zd, s_bb, s_bg,
    s_yb, s_yl: tl.constexpr, s_yd, s_hb, s_hc, s_hn, s_hd, s_one,
    N: tl.constexpr, NP: tl.constexpr, T: tl.constexpr, BD: tl.constexpr, M: tl.constexpr,
    NFMA: tl.constexpr, UNROLL_N: tl.constexpr, SUMMARY: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_H0: tl.constexpr,
    VU: tl.constexpr, VT: tl.constexpr, VZ: tl.constexpr, VY: tl.constexpr, NL: tl.constexpr,
):
    # grid (channel blocks, chunks, batch): neighbouring programs share the chunk's B and C in L2
    i_db, i_c, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    D_ = tl.num_programs(0) * BD
    BDL: tl.constexpr = BD * NL  # tile columns: BD channels × NL lanes (tiles.lane_columns)
    o_dl, o_ln = lane_columns(BD, NL)
    o_d = i_db * BD + o_dl
    o_t = tl.arange(0, T)
    o_n = tl.arange(0, NP // NL)  # a column's state rows: states o_n·NL + lane
    m_sn = lane_state_mask(o_n, o_ln, N, NL, BDL)
    i_g = i_db // BPG  # channel blocks per B/C group: a block never straddles two
    b_bias = tl.load(p_bias + o_d * s_one) if HAS_BIAS else tl.zeros([BDL], dtype=tl.float32)
    b_Dv = tl.load(p_D + o_d * s_one) if HAS_D else tl.zeros([BDL], dtype=tl.float32)
    c_u, c_t = chan_offsets(o_d, s_ud, s_one, BD, VU, NL), chan_offsets(o_d, s_td, s_one, BD, VT, NL)
    c_z, c_y = chan_offsets(o_d, s_zd, s_one, BD, VZ, NL), chan_offsets(o_d, s_yd, s_one, BD, VY, NL)
    if HAS_H0:
        b_h = tl.load(p_h0 + i_b * s_hb + i_c * s_hc + lane_state_offsets(o_n, o_ln, o_d, s_hn, s_hd, BD, NL),
                      mask=m_sn, other=0.0).to(tl.float32)
    else:
        b_h = tl.zeros([NP // NL, BDL], dtype=tl.float32)
    # checkpoints and summaries are our own (b, ·, NP, d) fp32 buffers; s_one = 1 keeps their channel axis
    # behind a runtime stride like every other channel-indexed address
    off_own = lane_state_offsets(o_n, o_ln, o_d, D_ * s_one, s_one, BD, NL)
    # with UNROLL_N=False the states live in this program's scratch (NP, BD) between tiles
    p_sc = p_scr + ((i_b * NC + i_c) * tl.num_programs(0) + i_db) * (NP * BD)
    off_sc = lane_state_offsets(o_n, o_ln, o_dl, BD * s_one, s_one, BD, NL)
    if not UNROLL_N:
        tl.store(p_sc + off_sc, b_h)
    b_P = tl.full([NP // NL, BDL], 1.0, dtype=tl.float32)
    t_c = i_c * CL
    n_tiles = tl.cdiv(tl.minimum(CL, L - t_c), T)
    p_bcb = p_BC + i_b * s_bb + i_g * s_bg  # staged B/C (b, g, tiles, 2, N, T)
    # Each iteration loads the next tile's inputs before computing its own (software pipelining by hand): the
    # loads' latency then hides behind a tile of compute. Past the chunk end they read the next chunk, unused.
    WITH_Z: tl.constexpr = HAS_Z and not SUMMARY
    m = tl.broadcast_to(((t_c + o_t) < L)[:, None], (T, BDL))
    r_dt = tl.load(tile_ptrs(p_dt, i_b * s_tb + t_c * s_tl, o_t, s_tl, c_t), mask=m, other=0.0)
    r_u = tl.load(tile_ptrs(p_u, i_b * s_ub + t_c * s_ul, o_t, s_ul, c_u), mask=m, other=0.0)
    if WITH_Z:
        r_z = tl.load(tile_ptrs(p_z, i_b * s_zb + t_c * s_zl, o_t, s_zl, c_z), mask=m, other=0.0)
    else:
        r_z = r_u
    for i_tile in range(0, n_tiles):
        t0 = t_c + i_tile * T
        if not SUMMARY:
            if i_tile % M == 0:  # the state entering this checkpoint interval, for the backward's recompute
                if not UNROLL_N:
                    tl.debug_barrier()
                    b_h = tl.load(p_sc + off_sc)
                tl.store(p_ck + ((i_b * NCK + t0 // (M * T)) * NP) * D_ + off_own, b_h)
        m = tl.broadcast_to(((t0 + o_t) < L)[:, None], (T, BDL))
        m_next = tl.broadcast_to(((t0 + T + o_t) < L)[:, None], (T, BDL))
        n_dt = tl.load(tile_ptrs(p_dt, i_b * s_tb + (t0 + T) * s_tl, o_t, s_tl, c_t), mask=m_next, other=0.0)
        n_u = tl.load(tile_ptrs(p_u, i_b * s_ub + (t0 + T) * s_ul, o_t, s_ul, c_u), mask=m_next, other=0.0)
        if WITH_Z:
            n_z = tl.load(tile_ptrs(p_z, i_b * s_zb + (t0 + T) * s_zl, o_t, s_zl, c_z), mask=m_next, other=0.0)
        else:
            n_z = n_u
        b_dt, _ = delta_of(r_dt, m, b_bias, HAS_BIAS, SOFTPLUS, BD, NL)
        b_u = r_u.to(tl.float32)
        b_du = b_dt * b_u
        if NL == 1:
            b_y = b_Dv[None, :] * b_u
        else:  # D·u joins after the lanes' sum
            b_y = tl.zeros([T, BDL], dtype=tl.float32)
        p_bct = p_bcb + (t0 // T) * (2 * N * T)
        if UNROLL_N:
            b_h, b_y = fwd_tile(b_h, b_dt, b_du, b_y, p_A2, p_bct, o_n, o_t, o_d, D_, s_one, o_ln, N, NFMA, T, BD,
                                not SUMMARY, NL)
        else:
            b_y = fwd_tile_loop(p_sc, p_sc, b_dt, b_du, b_y, p_A2, p_bct, o_t, o_d, o_dl, D_, s_one, o_ln, N, NFMA,
                                T, BD, not SUMMARY, NL)
        if SUMMARY:
            b_tot = tl.sum(b_dt, axis=0)  # ΣΔ over the tile: the tile's decay is exp2(A2·ΣΔ), exact to rounding
            for i_s in tl.static_range((N + NL - 1) // NL):
                b_a2 = load_a2(p_A2, lane_state(o_ln, i_s, NL), D_, o_d, s_one, N, NL)
                b_P = put_row(b_P, o_n, i_s, get_row(b_P, o_n, i_s) * tl.exp2(b_a2 * b_tot))
        else:
            if NL > 1:
                b_y = lane_sum(b_y, BD, NL) + b_Dv[None, :] * b_u
            if HAS_Z:
                b_z = r_z.to(tl.float32)
                b_y *= b_z * (sigmoid(b_z) if NL == 1 else sigmoid_lanes(b_z, BD, NL))
            tl.store(tile_ptrs(p_y, i_b * s_yb + t0 * s_yl, o_t, s_yl, c_y), b_y.to(p_y.dtype.element_ty),
                     mask=lane_store_mask(m, o_ln, NL))
        r_dt, r_u, r_z = n_dt, n_u, n_z
    if not UNROLL_N:
        tl.debug_barrier()
        b_h = tl.load(p_sc + off_sc)
    if SUMMARY:
        tl.store(p_S + ((i_b * NC + i_c) * NP) * D_ + off_own, b_h)
        tl.store(p_P + ((i_b * NC + i_c) * NP) * D_ + off_own, b_P)
    else:
        if i_c == NC - 1:
            tl.store(p_hlast + i_b * NP * D_ + off_own, b_h)


@triton.jit(do_not_specialize=FWD_STRIDES)
def _fwd_summary_tail(
    p_u, p_dt, p_bias, p_A2, p_BC, p_S, p_P,
    L, CL, NC, BPG,
    s_ub, s_ul: tl.constexpr, s_ud, s_tb, s_tl: tl.constexpr, s_td, s_bb, s_bg, s_one,
    N: tl.constexpr, NP: tl.constexpr, T: tl.constexpr, BD: tl.constexpr, NFMA: tl.constexpr, STOP: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, VU: tl.constexpr, VT: tl.constexpr, NL: tl.constexpr,
):
    """The chunk summary of `_fwd_scan(SUMMARY)` (end state S from a zero start, decay product P), walked from the
    chunk's end and stopped early. Each tile's own end state from zero (fwd_tile) enters S weighted by the decay of
    the tiles after it, exp2(A2·R) with R their summed Δ; once exp2(A2·R) <= 2^-STOP for every state of every
    channel of the program (A2·R <= -STOP for the slowest-decaying state), every earlier position's weight is
    smaller still: with STOP >= 150 they are below fp32's smallest denormal, what the full walk rounds them to, and
    P is 0 either way. So the result is the full summary to rounding, and the work is only the tail the state
    remembers: how long depends on the data (Δ and A), never more than the whole chunk plus one exp2 per (tile,
    state) and a max over the program's channels per tile."""
    i_db, i_c, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    D_ = tl.num_programs(0) * BD
    BDL: tl.constexpr = BD * NL
    o_dl, o_ln = lane_columns(BD, NL)
    o_d = i_db * BD + o_dl
    o_t = tl.arange(0, T)
    o_n = tl.arange(0, NP // NL)
    i_g = i_db // BPG
    b_bias = tl.load(p_bias + o_d * s_one) if HAS_BIAS else tl.zeros([BDL], dtype=tl.float32)
    c_u, c_t = chan_offsets(o_d, s_ud, s_one, BD, VU, NL), chan_offsets(o_d, s_td, s_one, BD, VT, NL)
    # A2 < 0: the largest is the slowest decay (with lanes, every lane takes its channel's maximum over all states)
    b_a2max = tl.full([BDL], float("-inf"), dtype=tl.float32)
    for i_n in tl.static_range(N):
        b_a2max = tl.maximum(b_a2max, tl.load(p_A2 + i_n * D_ + o_d * s_one))
    t_c = i_c * CL
    n_tiles = tl.cdiv(tl.minimum(CL, L - t_c), T)
    p_bcb = p_BC + i_b * s_bb + i_g * s_bg
    b_S = tl.zeros([NP // NL, BDL], dtype=tl.float32)
    b_R = tl.zeros([BDL], dtype=tl.float32)
    b_zero = tl.zeros([NP // NL, BDL], dtype=tl.float32)
    i_tile = n_tiles - 1
    t0 = t_c + i_tile * T
    m = tl.broadcast_to(((t0 + o_t) < L)[:, None], (T, BDL))
    r_dt = tl.load(tile_ptrs(p_dt, i_b * s_tb + t0 * s_tl, o_t, s_tl, c_t), mask=m, other=0.0)
    r_u = tl.load(tile_ptrs(p_u, i_b * s_ub + t0 * s_ul, o_t, s_ul, c_u), mask=m, other=0.0)
    go = n_tiles > 0
    while go:
        t0 = t_c + i_tile * T
        m = tl.broadcast_to(((t0 + o_t) < L)[:, None], (T, BDL))
        m_prev = tl.broadcast_to(((t0 - T + o_t) >= t_c)[:, None], (T, BDL))  # the tile before, if any: prefetch
        n_dt = tl.load(tile_ptrs(p_dt, i_b * s_tb + (t0 - T) * s_tl, o_t, s_tl, c_t), mask=m_prev, other=0.0)
        n_u = tl.load(tile_ptrs(p_u, i_b * s_ub + (t0 - T) * s_ul, o_t, s_ul, c_u), mask=m_prev, other=0.0)
        # softplus on every lane here: shared over the lanes, it made ptxas (Triton 3.9) spill a register at lanes 4
        b_dt, _ = delta_of(r_dt, m, b_bias, HAS_BIAS, SOFTPLUS, BD, 1)
        b_du = b_dt * r_u.to(tl.float32)
        b_h, _ = fwd_tile(b_zero, b_dt, b_du, b_du, p_A2, p_bcb + (t0 // T) * (2 * N * T), o_n, o_t, o_d, D_,
                          s_one, o_ln, N, NFMA, T, BD, False, NL)
        for i_s in tl.static_range((N + NL - 1) // NL):
            b_a2 = load_a2(p_A2, lane_state(o_ln, i_s, NL), D_, o_d, s_one, N, NL)
            b_w = tl.exp2(b_a2 * b_R)  # decay of the tiles after this one
            b_S = put_row(b_S, o_n, i_s, tl.fma(b_w, get_row(b_h, o_n, i_s), get_row(b_S, o_n, i_s)))
        b_R += tl.sum(b_dt, axis=0)
        i_tile -= 1
        go = (i_tile >= 0) & (tl.max(b_a2max * b_R, axis=0) > -STOP)
        r_dt, r_u = n_dt, n_u
    b_P = tl.full([NP // NL, BDL], 1.0, dtype=tl.float32)
    for i_s in tl.static_range((N + NL - 1) // NL):
        b_P = put_row(b_P, o_n, i_s, tl.exp2(load_a2(p_A2, lane_state(o_ln, i_s, NL), D_, o_d, s_one, N, NL) * b_R))
    off_own = lane_state_offsets(o_n, o_ln, o_d, D_ * s_one, s_one, BD, NL)
    tl.store(p_S + ((i_b * NC + i_c) * NP) * D_ + off_own, b_S)
    tl.store(p_P + ((i_b * NC + i_c) * NP) * D_ + off_own, b_P)


@triton.jit
def _carry(p_P, p_S, p_init, p_out, NC, R, s_ib, s_in, s_id, D_, N,
           HAS_INIT: tl.constexpr, REVERSE: tl.constexpr, BLOCK: tl.constexpr):
    """Across chunks, for every (n, channel) row of a batch: x ← P_c·x + S_c in chunk order (forward: out[c] is
    the state entering chunk c, init the initial state) or in reverse (out[c] is the adjoint entering chunk c's end,
    init the gradient of the final state). P, S, out are (b, NC, NP, d) fp32; init (b, d, n) with any strides."""
    i_r, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    o_r = i_r * BLOCK + tl.arange(0, BLOCK).to(tl.int64)  # row = n·d + channel
    m_r = o_r < R
    if HAS_INIT:
        b_x = tl.load(p_init + i_b * s_ib + (o_r // D_) * s_in + (o_r % D_) * s_id, mask=m_r & (o_r // D_ < N),
                      other=0.0)
        b_x = b_x.to(tl.float32)
    else:
        b_x = tl.zeros([BLOCK], dtype=tl.float32)
    for k in tl.range(0, NC, num_stages=3):  # loads do not depend on x: pipelined
        i_c = NC - 1 - k if REVERSE else k
        o = (i_b * NC + i_c) * R + o_r
        b_p = tl.load(p_P + o, mask=m_r, other=1.0)
        b_s = tl.load(p_S + o, mask=m_r, other=0.0)
        tl.store(p_out + o, b_x, mask=m_r)
        b_x = b_p * b_x + b_s
