"""Triton building blocks of the v2 selective scan (scan_v2_fwd.py, scan_v2_bwd.py): register layout, in-thread
column access, exp2 on either pipe, the two scan combines and the channel reduction.

Layout. Every tile is [T positions, BD channels] and every state block [NP states, BD channels], with one channel per
thread (lanes and warps along the channel axis) and the whole position / state axis inside the thread. Then scans
over positions and sums over states are in-thread register code, and only the backward's sums over channels (dB,
dC) cross lanes. Triton picks layouts from the loads' address analysis, so the kernels steer it (`chan_offsets`):
either a tensor's rows are 16-byte vectors the analysis can see (T positions of a 2-byte dtype, contiguous and
aligned), which gives sizePerThread [T, 1], or its channel stride is hidden behind a runtime value and the channel
axis marked contiguous (`tl.max_contiguous`; alignment stays unknown, so the hint changes the thread order only,
never the width of an access), which gives sizePerThread [1, 1] with the T rows as register repetitions. Both are
the same register/lane/warp map: `blocked<threadsPerWarp [1, 32], warpsPerCTA [1, W]>` with channel c on lane
c % 32, on Triton 3.6 and 3.9 for sm_90 (tests/kernels/test_scan_v2_layout.py checks the compiled kernels).

Per-row access of an in-thread axis (`get_row`, `put_row`) is a select with a compile-time predicate per register:
after lowering it costs one add (get) or nothing (put), not a pass over the block.

Lanes (the opt-in `lanes` launch, NL > 1; NL = 1 compiles exactly as above). A channel's states are split over NL
adjacent threads: tiles are [T, BD·NL] with column c·NL + k for lane k of channel c (`lane_columns`), and a state
block [NP / NL, BD·NL] whose row s of lane k is state s·NL + k (`lane_state`, `lane_state_offsets`). Each thread
then steps through NP / NL states instead of NP (fewer registers, NL times the threads per channel); the inputs are
read by all NL lanes of a channel (same addresses); per-channel elementwise work (Δ's softplus, the gate's sigmoid)
is split over the lanes, T / NL positions each, and shared back (`softplus_lanes`), so the MUFU does it once per
channel; every sum over states (y; the backward's Σ g·B and Σ A·g·a·h) is added across the lanes with log2(NL)
shuffles a register (`lane_sum`). Only lane 0 of a channel stores a tile (`lane_store_mask`). Same register/lane/warp
map as above, the column axis on lanes and warps.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

LOG2E_F = 1.4426950408889634  # used by the launchers (A2 = A·log2 e)
LOG2E = tl.constexpr(LOG2E_F)
LN2 = tl.constexpr(0.6931471805599453)
# Inline PTX (fast lg2, shuffles) only on the GPU: Triton's interpreter runs no assembly.
GPU_ASM = tl.constexpr(os.environ.get("TRITON_INTERPRET", "") != "1")

# 2^f on [-1/2, 1/2] as 1 + f·(c1 + f·(c2 + ...)): minimax for relative error, 1.9e-7 in fp32 evaluation, the
# accuracy of the MUFU's ex2.approx (2^-22.3).
_P1, _P2 = tl.constexpr(0.69314697734086), tl.constexpr(0.2402224206379101)
_P3, _P4 = tl.constexpr(0.05550734094083015), tl.constexpr(0.009671513623811925)
_P5 = tl.constexpr(0.0013264623727193454)


@triton.jit
def chan_offsets(o_d, s_d, s_one, BD: tl.constexpr, VEC: tl.constexpr, NL: tl.constexpr):
    """int64 offsets of a program's channels in a tensor with channel stride s_d (computed once per kernel: a tile's
    addresses are then one add of a row offset each).

    VEC (the launcher's `vec_rows`: positions contiguous, rows 16-byte aligned, T·itemsize = 16): the address
    analysis sees each thread's T positions as one 16-byte vector, and the coalescing pass gives exactly the tile
    layout of the module docstring with sizePerThread [T, 1]: one vector load per row. Otherwise (channels-last
    views, unaligned rows) s_d is hidden behind s_one - 1 (a runtime 0) and the channel axis marked contiguous,
    so threads go along channels and each position is one scalar load, coalesced across the warp when s_d = 1.
    """
    if VEC:
        return o_d * s_d
    elif NL > 1:  # a channel repeats over its NL lanes: not contiguous, so no hint (a false one breaks the loads)
        return o_d * (s_d + s_one - 1)
    else:
        return tl.max_contiguous(o_d * (s_d + s_one - 1), BD)


@triton.jit
def tile_ptrs(p, base, o_t, s_l, col):
    """Pointers of the [T, BD] tile at element offset base (int64: batch and first position) of a tensor with
    position stride s_l, col = chan_offsets(...). The in-tile row offsets are int32 (T·s_l < 2^31)."""
    return (p + base + col)[None, :] + (o_t * s_l)[:, None]


@triton.jit
def state_offsets(o_n, o_d, s_n, s_d, BD: tl.constexpr):
    """int64 element offsets of an [NP, BD] block of states (n, channel) under the same layout rule as tiles."""
    return tl.max_contiguous(o_n[:, None].to(tl.int64) * s_n + o_d[None, :] * s_d, [1, BD])


@triton.jit
def lane_columns(BD: tl.constexpr, NL: tl.constexpr):
    """A program's tile columns as (channel within the block (int64), lane): BD channels × NL lanes, the NL lanes
    of a channel adjacent (column c·NL + k). With NL = 1 the lane is the constant 0."""
    if NL == 1:
        return tl.arange(0, BD).to(tl.int64), 0
    else:
        o_j = tl.arange(0, BD * NL)
        return (o_j // NL).to(tl.int64), o_j % NL


@triton.jit
def lane_state(o_ln, s, NL: tl.constexpr):
    """The state a column works on in its s-th state step: states interleave over a channel's lanes
    (n = s·NL + lane), so the NL lanes take NL consecutive states, whose staged B/C rows are adjacent."""
    if NL == 1:
        return s
    else:
        return s * NL + o_ln


@triton.jit
def load_a2(p_A2, n, D_, o_d, s_one, N: tl.constexpr, NL: tl.constexpr):
    """A·log2(e) of state n (lane_state) for every column, from (n, d). With lanes, states past N (padding when
    NL does not divide N) read 0: no decay, and with their B and C 0 (load_bc) they stay 0 and add nothing."""
    if NL == 1:
        return tl.load(p_A2 + n * D_ + o_d * s_one)
    else:
        return tl.load(p_A2 + n * D_ + o_d * s_one, mask=n < N, other=0.0)


@triton.jit
def load_bc(p_bc, n, o_t, T: tl.constexpr, N: tl.constexpr, NL: tl.constexpr, IS_C: tl.constexpr):
    """State n's row of a tile's staged B (or C) block (2, N, T): [T, 1], the same row for every thread, or with
    lanes [T, BD·NL], each column its own state's row (0 past N)."""
    if NL == 1:
        if IS_C:
            return tl.load(p_bc + (N + n) * T + o_t)[:, None]
        else:
            return tl.load(p_bc + n * T + o_t)[:, None]
    else:
        m = (n < N)[None, :]
        if IS_C:
            return tl.load(p_bc + (N + n)[None, :] * T + o_t[:, None], mask=m, other=0.0)
        else:
            return tl.load(p_bc + n[None, :] * T + o_t[:, None], mask=m, other=0.0)


@triton.jit
def lane_sum(x, BD: tl.constexpr, NL: tl.constexpr):
    """A [T, BD·NL] tile of per-lane partial sums over states, summed over each channel's lanes and given back to
    every lane (log2 NL butterfly shuffles a register on the GPU, the lanes being adjacent)."""
    if NL == 1:
        return x
    else:
        T: tl.constexpr = x.shape[0]
        s = tl.sum(tl.reshape(x, (T, BD, NL)), axis=2)
        return tl.reshape(tl.broadcast_to(s[:, :, None], (T, BD, NL)), (T, BD * NL))


@triton.jit
def lane_compact(x, BD: tl.constexpr, NL: tl.constexpr):
    """[T, BD·NL] -> [T / NL, BD·NL]: lane k of a channel keeps rows k, k + NL, ... (in-thread selects)."""
    T: tl.constexpr = x.shape[0]
    o_k = tl.arange(0, NL)
    x4 = tl.reshape(x, (T // NL, NL, BD, NL))
    x3 = tl.sum(tl.where(o_k[None, :, None, None] == o_k[None, None, None, :], x4, 0.0), axis=1)
    return tl.reshape(x3, (T // NL, BD * NL))


@triton.jit
def lane_gather(x, BD: tl.constexpr, NL: tl.constexpr):
    """lane_compact's inverse: every lane of a channel gets all T rows back, row r·NL + k from lane k (compiled for
    sm_90: a few shuffles at NL 2, a warp-local pass through shared memory at 4)."""
    R: tl.constexpr = x.shape[0]
    g = tl.permute(tl.reshape(x, (R, BD, NL)), (0, 2, 1))
    return tl.reshape(tl.broadcast_to(g[:, :, :, None], (R, NL, BD, NL)), (R * NL, BD * NL))


@triton.jit
def softplus_lanes(x, BD: tl.constexpr, NL: tl.constexpr):
    """softplus of a [T, BD·NL] tile whose lanes of a channel hold the same values: each lane computes T / NL rows
    (lane_compact) and lane_gather shares them, so the MUFU does it once per channel, not NL times."""
    return lane_gather(softplus(lane_compact(x, BD, NL)), BD, NL)


@triton.jit
def sigmoid_lanes(x, BD: tl.constexpr, NL: tl.constexpr):
    """sigmoid as softplus_lanes."""
    return lane_gather(sigmoid(lane_compact(x, BD, NL)), BD, NL)


@triton.jit
def lane_store_mask(m, o_ln, NL: tl.constexpr):
    """A [T, BD·NL] tile's store mask with only lane 0 of each channel writing (every lane holds the same sums)."""
    if NL == 1:
        return m
    else:
        return m & (o_ln == 0)[None, :]


@triton.jit
def lane_state_offsets(o_s, o_ln, o_d, s_n, s_d, BD: tl.constexpr, NL: tl.constexpr):
    """state_offsets for a [NP / NL, BD·NL] block: row s of column (c, k) is state s·NL + k of channel c."""
    if NL == 1:
        return state_offsets(o_s, o_d, s_n, s_d, BD)
    else:
        return (o_s[:, None] * NL + o_ln[None, :]).to(tl.int64) * s_n + o_d[None, :] * s_d


@triton.jit
def lane_state_mask(o_s, o_ln, N, NL: tl.constexpr, BDL: tl.constexpr):
    """Which elements of a [NP / NL, BD·NL] state block are real states (n < N)."""
    if NL == 1:
        return tl.broadcast_to((o_s < N)[:, None], (o_s.shape[0], BDL))
    else:
        return (o_s[:, None] * NL + o_ln[None, :]) < N


@triton.jit
def get_row(x, o_r, r: tl.constexpr):
    """Row r of an [R, BD] block as a [BD] vector (R is in-thread, so the predicate is known per register)."""
    return tl.sum(tl.where(o_r[:, None] == r, x, 0.0), axis=0)


@triton.jit
def put_row(x, o_r, r: tl.constexpr, v):
    """x with row r replaced by the [BD] vector v."""
    return tl.where(o_r[:, None] == r, v[None, :], x)


@triton.jit
def exp2_fma(x):
    """2^x on the FMA pipe (Cody-Waite split + degree-5 polynomial + exponent add), for x in [-125, 125].

    The MUFU does 16 exp2 a clock per SM against 128 FMAs; computing some of the exps here balances the two pipes.
    Rounding x to an integer by adding 1.5·2^23 leaves that integer in the low mantissa bits, and shifting the bits
    left by 23 moves it into the exponent field (the rest wraps out of 32 bits).
    """
    x = tl.minimum(tl.maximum(x, -125.0), 125.0)
    j = x + 12582912.0
    f = x - (j - 12582912.0)  # in [-1/2, 1/2]
    p = 1.0 + f * (_P1 + f * (_P2 + f * (_P3 + f * (_P4 + f * _P5))))
    bits = p.to(tl.int32, bitcast=True) + (j.to(tl.int32, bitcast=True) << 23)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def exp2_on(x, FMA: tl.constexpr):
    if FMA:
        return exp2_fma(x)
    else:
        return tl.exp2(x)


@triton.jit
def log2_fast(x):
    """log2 on the MUFU (lg2.approx, absolute error ~2^-22 near 1); Triton's tl.log / tl.log2 are a ~22-instruction
    software routine, which made softplus the largest per-position cost of the forward."""
    if GPU_ASM:
        return tl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return tl.log2(x)


@triton.jit
def softplus(x):
    # log(1 + e^x) with the large-x shortcut, as v1 and mamba_ssm; exp2/lg2 map to one MUFU op each (tl.exp adds a
    # denormal fix-up). Its absolute error, ~1e-7, is that of rounding 1 + e^x to fp32 in the first place.
    return tl.where(x > 20.0, x, LN2 * log2_fast(1.0 + tl.exp2(x * LOG2E)))


@triton.jit
def sigmoid(x):
    # 1 / (1 + e^-x): exp2 (one MUFU op) and Triton's approximate division (rcp + fix-up)
    return 1.0 / (1.0 + tl.exp2(-x * LOG2E))


@triton.jit
def combine_fwd(a1, b1, a2, b2):
    # x -> a1·x + b1 (earlier) followed by x -> a2·x + b2 (later). With the start state folded into the first
    # element, only the second component is used and the product chain is dead code after lowering.
    return a1 * a2, tl.fma(a2, b1, b2)


@triton.jit
def combine_rev(f1, p1, g1, f2, p2, g2):
    """Adjoint g_t = c_t + a_{t+1} g_{t+1} without a shifted a: a segment is (f = its first a, p = product of its
    other a's, g = its adjoint from a zero right boundary); (f1, p1, g1) is the segment later in time."""
    return f2, p2 * f1 * p1, tl.fma(p2 * f1, g1, g2)


@triton.jit
def reverse_adjoint(b_a, b_c):
    """g_t = c_t + a_{t+1} g_{t+1} along the (in-thread) axis 0 of [T, BD] tiles, from g = c at the last row.

    A forward scan of the flipped tile: `tl.flip` of an in-thread axis is register renaming, where Triton's
    `reverse=True` scan shuffles every element across lanes (235 shuffles a 16 x 128 tile on Triton 3.6, 47 on
    3.9, against none here). In the flipped order the earlier scan element is the later position, as combine_rev
    expects; the product component is dead code after lowering.
    """
    b_ones = tl.full(b_a.shape, 1.0, dtype=tl.float32)
    _, _, b_g = tl.associative_scan((tl.flip(b_a, 0), b_ones, tl.flip(b_c, 0)), axis=0, combine_fn=combine_rev)
    return tl.flip(b_g, 0)


@triton.jit
def _shfl_xor(x, M: tl.constexpr):
    if M == 1:
        r = tl.inline_asm_elementwise("shfl.sync.bfly.b32 $0, $1, 1, 0x1f, 0xffffffff;", "=f,f", [x],
                                      dtype=tl.float32, is_pure=True, pack=1)
    elif M == 2:
        r = tl.inline_asm_elementwise("shfl.sync.bfly.b32 $0, $1, 2, 0x1f, 0xffffffff;", "=f,f", [x],
                                      dtype=tl.float32, is_pure=True, pack=1)
    elif M == 4:
        r = tl.inline_asm_elementwise("shfl.sync.bfly.b32 $0, $1, 4, 0x1f, 0xffffffff;", "=f,f", [x],
                                      dtype=tl.float32, is_pure=True, pack=1)
    elif M == 8:
        r = tl.inline_asm_elementwise("shfl.sync.bfly.b32 $0, $1, 8, 0x1f, 0xffffffff;", "=f,f", [x],
                                      dtype=tl.float32, is_pure=True, pack=1)
    else:
        r = tl.inline_asm_elementwise("shfl.sync.bfly.b32 $0, $1, 16, 0x1f, 0xffffffff;", "=f,f", [x],
                                      dtype=tl.float32, is_pure=True, pack=1)
    return r


@triton.jit
def warp_reduce_scatter(v, BD: tl.constexpr, CPT: tl.constexpr, NL: tl.constexpr):
    """Sum a [T, BD] tile over the channels of each warp; returns [BD // CPT] where lane L of a warp holds row L % T
    (T a power of two <= 32). CPT = columns per thread (BD / (32·warps)). With lanes (NL threads a channel, adjacent)
    the sum runs over the columns of equal lane L % NL only (the same state of every channel): the butterfly skips
    the low log2(NL) lane bits, and lane L holds row (L // NL) % T (needs T·NL <= 32).

    The CPT channels of a thread (c, c + BD/CPT, ...) are added in registers first. Then a butterfly halves the
    rows at every step: in round r a lane keeps the rows whose index bit matches its lane bit r and sends the
    others to lane L ^ 2^r, so T rows cost T - 1 + (5 - log2 T) shuffles, about one per row, where a `tl.sum` over
    the lane axis shuffles every row five times. Assumes channel c is lane c % 32 (the layout in the module
    docstring). Triton's interpreter runs no PTX: there the same result is built from `tl.sum`s, so the indexing
    around this function is tested in CI too.
    """
    BL: tl.constexpr = BD // CPT
    T: tl.constexpr = v.shape[0]
    if CPT > 1:
        v = tl.sum(tl.reshape(v, (T, CPT, BL)), axis=1)
    if not GPU_ASM:
        s = tl.sum(tl.reshape(v, (T, BL // 32, 32 // NL, NL)), axis=2)  # [T, warps, lanes]
        s = tl.reshape(tl.broadcast_to(s[:, :, None, :], (T, BL // 32, 32 // NL, NL)), (T, BL))
        o_j = tl.arange(0, BL)
        return tl.sum(tl.where(tl.arange(0, T)[:, None] == (((o_j % 32) // NL) % T)[None, :], s, 0.0), axis=0)
    o_lane = tl.arange(0, BL) % 32
    for r in tl.static_range(5):
        if (1 << r) < NL:  # lanes of one channel: different states, not summed
            pass
        elif v.shape[0] > 1:
            lo, hi = tl.split(tl.permute(tl.reshape(v, (v.shape[0] // 2, 2, BL)), (0, 2, 1)))
            bit = ((o_lane >> r) & 1)[None, :] == 1
            v = tl.where(bit, hi, lo) + _shfl_xor(tl.where(bit, lo, hi), 1 << r)
        else:
            v = v + _shfl_xor(v, 1 << r)
    return tl.reshape(v, (BL,))
