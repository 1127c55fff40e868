"""Selective scan v2 in Triton: state in registers, sequential in time, channels across threads.

Same semantics as ``scan_ref.selective_scan_ref``. Each thread owns one channel and all its n states and walks a
chunk of positions in tiles of T (kernels in scan_v2_fwd.py / scan_v2_bwd.py, layout in tiles.py):

  forward   [chunks > 1]  F1 `_fwd_scan(SUMMARY)`  each chunk's end state from zero, and its decay product
                          (or `_fwd_summary_tail` with stop_summaries: the same from the chunk's end, stopped once
                          the decay makes earlier terms vanish in fp32; B1 likewise `_bwd_summary_head`)
                          F2 `_carry`             the state entering every chunk
                          F3 `_fwd_scan`          the scan from that state: y, the state every M·T positions
                                                  (checkpoints), the final state
  backward  [chunks > 1]  B1 `_bwd_summary`       each chunk's adjoint from a zero adjoint at its end
                          B2 `_carry` (reversed)  the adjoint entering every chunk's end
                          B3 `_bwd_scan`          per checkpoint interval, recompute the tile-start states, then the
                                                  reverse scan and every gradient

Chunks exist only to give the GPU enough programs: b·d/BD programs of BD channels each are enough at large batch
(one chunk: one pass of exps in the forward), batch 1 needs the sequence cut. The opt-in `lanes` launch (plan keyword;
1, the default, is the layout above) puts each channel on `lanes` threads, n / lanes states each (tiles.py): b·d·lanes
threads, so fewer sequences need cutting, for a sum over the lanes per position and an exchange of Δ's softplus.
By default the forward alone runs that way on FWD_LANES lanes (`fwd_lanes`), with the backward's chunks and buffers
(a forward thread then holds fewer states, so fewer registers and more resident warps; measured, see FWD_LANES).

Inputs are read in whatever strides they come: u, Δ, z (and dy) as (b, d, l) views of (b, l, d) storage are read
without a copy, and the outputs (y, du, dΔ, dz) take the layout of the input they belong to. B and C are the
exception: they are staged once per call as one fp32 (b, g, tiles, 2, n, T) buffer (`_stage_bc`; 2n/d of u's
elements, 6% at d 512): a tile's B and C rows are then 16-byte broadcast loads at fixed offsets, with no bf16
conversion in the inner loop, where reading them in place from (b, l, n) storage costs a scalar load per (position,
state). Saved for the backward: the inputs, the staged B/C and fp32 states every M·T positions (4·n/(M·T) bytes per
(b, d, l) element: 2 bytes at n 16, T 8, M 4).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton

from mambadna.kernels.buffers import alloc, alloc_like
from mambadna.kernels.choice import V2_MAX_STATES as MAX_STATES
from mambadna.kernels.scan_v2_bwd import _bwd_scan, _bwd_summary, _bwd_summary_head
from mambadna.kernels.scan_v2_fwd import _carry, _fwd_scan, _fwd_summary_tail
from mambadna.kernels.tiles import LOG2E_F

# Warps per SM that one chunk per sequence must reach before it is left uncut, and that chunking aims for; see
# `plan`. The kernels' registers allow about 8 resident warps per SM. Chunking aims at 32 and the chunk summaries
# stop early (STOP_SUMMARIES) since one same-run measurement (NVIDIA H200, 2026-12-06, experiments/results/gpu_scan/):
# fwd+bwd against the earlier 16 without early stops, 50.0 -> 46.9 ms at (1, 512, 2^20), 62.3 -> 46.1 at
# (8, 512, 2^17), 5.49 -> 4.66 at (8, 1536, 4096), (b, d, l) inputs; mamba_ssm 71.6, 50.8, 4.36 in the same run.
FULL_WARPS_PER_SM, WARPS_PER_SM = 8, 32
STOP_SUMMARIES = True
# With stop_summaries, a chunk's summary stops once every further position's weight is below 2^-SUMMARY_STOP: under
# fp32's smallest denormal (2^-149), so those terms are what the full walk rounds them to
# (scan_v2_fwd._fwd_summary_tail, scan_v2_bwd._bwd_summary_head).
SUMMARY_STOP = 160.0
# The forward on 4 threads a channel, the backward on one (plan's fwd_lanes): one same-run measurement (NVIDIA H100,
# 2026-12-07 09:11 UTC, experiments/results/gpu_scan_h100_2026-12-07d/) found it faster than the forward on one
# thread at every benchmarked shape and layout, fwd+bwd 50.1 -> 46.7 ms at (1, 512, 2^20), 49.3 -> 45.9 at
# (8, 512, 2^17), 5.02 -> 4.79 at (8, 1536, 4096), 11.40 -> 10.76 at (32, 2048, 2048) ((b, d, l) inputs; 2 lanes
# between the two), and exact in the GPU check.
FWD_LANES = 4
# ... except where u's channels are contiguous ((b, d, l) views of (b, l, d) storage: what the Triton conv gives the
# model), where 4 lanes read u with 4x-redundant scalar loads covering 8 channels a warp and one lane reads 32: the
# same-run measurement of 2026-12-07 16:28 UTC (NVIDIA H100, experiments/results/gpu_scan_h100_2026-12-07h/) found
# fwd_lanes 1 faster on the model's views at every benchmarked shape, fwd+bwd 49.4 -> 45.3 ms at (1, 512, 2^20),
# 49.3 -> 45.1 at (8, 512, 2^17), 5.33 -> 4.47 at (8, 1536, 4096), 11.1 -> 9.76 at (32, 2048, 2048), and slower on
# (b, d, l) inputs (45.2 -> 48.3 at 2^20), exact in the GPU check.
FWD_LANES_CHANNELS_LAST = 1
# Tiles per checkpoint interval: 4 since one same-run measurement (NVIDIA H100, 2026-12-07 11:50 UTC,
# experiments/results/gpu_scan_h100_2026-12-07f/) found it faster than 8 at every benchmarked shape and layout,
# fwd+bwd 46.3 -> 44.5 ms at (1, 512, 2^20), 45.9 -> 44.3 at (8, 512, 2^17), 4.79 -> 4.57 at (8, 1536, 4096), 10.69
# -> 10.44 at (32, 2048, 2048) ((b, d, l) inputs; 6.6-7.4% on the model's views), exact in the GPU check, for 0.5 GiB
# more peak memory at 2^20 (9.9 against 9.4; checkpoints of 2 bytes an element instead of 1).
CKPT_TILES = 4
# The backward's loop over states is software-pipelined in 3 stages (plan's bwd_stages): faster than none at every
# benchmarked shape and layout in two same-run measurements (NVIDIA H100, 2026-12-07 19:47 and 21:43 UTC,
# experiments/results/gpu_scan_h100_2026-12-07i/ and -j/): fwd+bwd 45.2 -> 40.9 ms at (1, 512, 2^20), 44.7 -> 40.3 at
# (8, 512, 2^17), 4.57 -> 4.23 at (8, 1536, 4096), 10.4 -> 8.8 at (32, 2048, 2048) ((b, d, l) inputs at 21:43; 4-7%
# on the model's views), the same peak memory, and every GPU check case (31) with the same worst error as 1 stage.
# 2 stages were slower everywhere.
BWD_STAGES = 3
# dB/dC added atomically into one sum a group (plan's bwd_atomic) since one same-run measurement (NVIDIA H100,
# 2026-12-08 00:01 UTC, experiments/results/gpu_scan_h100_2026-12-08a/): against per-block partials, fwd+bwd 40.8 ->
# 40.7 ms at (1, 512, 2^20), 40.3 -> 40.0 at (8, 512, 2^17), 4.21 -> 4.18 at (8, 1536, 4096), 8.80 -> 8.76 at
# (32, 2048, 2048) ((b, d, l) inputs; 0.7-3.3% on the model's views), peak memory 9.91 -> 9.54 GiB at 2^20, and every
# GPU check case (31) with the partials' worst error to 5e-6 of its value. Under
# torch.use_deterministic_algorithms the partials run instead (the adds' order varies from run to run).
BWD_ATOMIC = True


def vec_rows(x: torch.Tensor | None, T: int) -> bool:
    """Whether the kernels may read x's rows as 16-byte vectors (tiles.chan_offsets): positions contiguous, a tile
    row exactly 16 bytes, every row 16-byte aligned (Triton then specializes the strides as multiples of 16)."""
    if x is None or x.stride(2) != 1 or x.element_size() * T != 16 or x.data_ptr() % 16:
        return False
    return x.stride(1) % 16 == 0 and (x.stride(0) % 16 == 0 or x.shape[0] == 1)


def _strides(x: torch.Tensor | None) -> tuple[int, int, int]:
    """(batch, position, channel) strides of a (b, d, l) tensor; zeros stand in for an absent one."""
    return (0, 0, 0) if x is None else (x.stride(0), x.stride(2), x.stride(1))


def supported(u, A, B, C, block_d: int | None = None) -> bool:
    """Whether v2 handles these inputs: at most MAX_STATES states, and a channel block that fits in a group."""
    n, d = A.shape[1], u.shape[1]
    g = max(B.shape[1] if B.dim() == 4 else 1, C.shape[1] if C.dim() == 4 else 1)
    return n <= MAX_STATES and _block_d(d // g, block_d) > 0


def _block_d(dpg: int, want: int | None) -> int:
    """Channels per program: a power of two dividing the channels of a group, 32·warps on the GPU."""
    want = want or 128
    bd = 1
    while bd * 2 <= want and dpg % (bd * 2) == 0:
        bd *= 2
    return bd


def _warps(columns: int) -> int:
    """Warps of a program of `columns` threads (channels × lanes), one column a thread, at most 4."""
    return max(1, min(4, columns // 32))


class Plan(NamedTuple):
    T: int  # positions per tile (in registers)
    BD: int  # channels per program
    M: int  # tiles per checkpoint interval
    CL: int  # positions per chunk, a multiple of M·T
    NC: int  # chunks
    unroll: bool  # whether the forward unrolls its loop over states
    fwd_warps: int
    bwd_warps: int  # BD·lanes / (32·bwd_warps) columns (channels, lanes) per thread in the backward
    fma_exps: int  # states (of each lane) whose exp2 runs on the FMA pipe (tiles.exp2_fma) instead of the MUFU
    stop_summaries: bool = False  # chunk summaries (F1, B1) walked from the end each depends on, stopped early
    lanes: int = 1  # threads per channel, each with n / lanes of its states (tiles.lane_columns)
    fwd: "Plan | None" = None  # the forward's own launch (fwd_lanes): same chunks, its channels on more threads
    bwd_unroll: int = 1  # the backward's loop over states unrolled this many times (scan_v2_bwd._bwd_states)
    bwd_maxnreg: int = 0  # registers a thread of the backward scan may take (0: ptxas's choice, 251 at the default)
    bwd_stages: int = 1  # software-pipelining stages of the backward's loop over states (1: none)
    bwd_atomic: bool = False  # dB/dC added atomically into one sum a group, not per-block partials (scan_v2_bwd)


def plan(b: int, d: int, l: int, dpg: int, device, *, tile=None, block_d=None, ckpt_tiles=None, chunk=None,
         unroll=None, fwd_warps=None, bwd_warps=None, sm_warps=None, fma_exps=None, full_warps=None,
         stop_summaries=None, lanes=None, fwd_lanes=None, bwd_unroll=None, bwd_maxnreg=None, bwd_stages=None,
         bwd_atomic=None, channels_last=False) -> Plan:
    """The launch shape; each keyword overrides one default (the benchmark sweeps them, tests shrink them).

    A sequence is cut into chunks only when b · d/BD programs fill fewer than `full_warps` (FULL_WARPS_PER_SM)
    warps per SM, and then into enough for `sm_warps` (WARPS_PER_SM): chunks cost a summary pass (one more exp per
    element) in each direction, but at batch 1 they are the only parallelism along the sequence
    (experiments/BENCHMARKS.md). T 8 and BD 128 on 4 warps are those whose compiled kernels spill no registers
    (tests/kernels/test_scan_v2_layout.py); M is CKPT_TILES (measured): checkpoints every 32 positions cost 2 bytes
    per (b, d, l) element at n 16, and the backward recomputes 3 tile-start states an interval, not 7.

    `lanes` (1, the default, 2, 4 or 8) splits each channel's states over that many threads (tiles.py): a
    program then holds 128 / lanes channels by default, still 128 threads, so b·d·lanes threads count towards the
    warps above and fewer sequences are cut. `lanes` defaults to 1 (both directions on one thread a channel).

    `fwd_lanes` puts the forward alone on that many lanes (`Plan.fwd`), with the backward's chunks: its
    checkpoints, chunk decays and final state are the same (b, ·, NP, d) buffers in the same layout, so the backward
    (lanes 1) reads them unchanged. The forward's threads then carry n / fwd_lanes states each and fewer registers.
    Its default is FWD_LANES, or FWD_LANES_CHANNELS_LAST where u's channels are contiguous (`channels_last`, set by
    the caller from u's strides), both measured; fwd_lanes=1 runs the forward on one thread a channel.

    `bwd_unroll` unrolls the backward's loop over states (1: not unrolled): two states' independent exps, scans and
    sums in flight per thread hide latency that the few resident warps do not, for more registers.

    `bwd_maxnreg` caps the backward scan's registers a thread: at the default 251 only 2 programs (8 warps) fit an
    SM, and Nsight Compute found its warps stalled on L1 loads 61% of the time with no other warp to issue
    (experiments/BENCHMARKS.md, 12-07 14:52); 168 fits 3 programs for 184 bytes of spills (compiled for sm_90),
    and was slower at every shape (12-07 16:28).

    `bwd_stages` (2 or 3) software-pipelines the backward's loop over states: the next states' A, B, C and scratch
    rows are loaded while this state computes, hiding the L1 latency those stalls wait on, for the registers that
    hold them in flight. Its default is BWD_STAGES.

    `bwd_atomic` adds every channel block's dB/dC rows atomically into one fp32 (b, g, NP, l) sum instead of
    writing (b, d/BD, NP, l) partials that are added afterwards: d/(g·BD) times less of that memory (4× at d 512),
    but the adds' order, and so the last bits of dB/dC, vary from run to run. Its default is BWD_ATOMIC, unless
    torch.use_deterministic_algorithms is on.
    """
    NL = lanes or 1
    T = tile or 8
    for k, v in (("lanes", NL), ("fwd_lanes", fwd_lanes or 1)):
        if v not in (1, 2, 4, 8):
            raise ValueError(f"{k} must be 1, 2, 4 or 8 (threads per channel); got {v}")
        if T % v:  # a channel's per-position work is split T / lanes positions a lane (tiles.softplus_lanes)
            raise ValueError(f"{k} ({v}) must divide the tile ({T} positions)")
    if NL > 1 and (fwd_lanes or 1) > 1:
        raise ValueError("lanes and fwd_lanes: give one (lanes already splits the forward)")
    BD = _block_d(dpg, block_d or 128 // NL)
    M = ckpt_tiles or CKPT_TILES
    fw = fwd_warps or _warps(BD * NL)
    bw = bwd_warps or _warps(BD * NL)
    step = M * T
    n_steps = triton.cdiv(l, step)
    if chunk is None:
        sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
        progs = b * (d // BD)
        if progs * fw >= sms * (full_warps or FULL_WARPS_PER_SM):
            nc = 1
        else:
            nc = min(n_steps, triton.cdiv(max(1, sms * (sm_warps or WARPS_PER_SM) // fw), progs))
        CL = triton.cdiv(n_steps, nc) * step
    else:
        CL = triton.cdiv(chunk, step) * step
    p = Plan(T, BD, M, CL, triton.cdiv(l, CL), True if unroll is None else bool(unroll), fw, bw, fma_exps or 0,
             STOP_SUMMARIES if stop_summaries is None else bool(stop_summaries), NL, bwd_unroll=bwd_unroll or 1,
             bwd_maxnreg=bwd_maxnreg or 0, bwd_stages=bwd_stages or BWD_STAGES,
             bwd_atomic=(BWD_ATOMIC and not torch.are_deterministic_algorithms_enabled()) if bwd_atomic is None
             else bool(bwd_atomic))
    lanes_default = FWD_LANES_CHANNELS_LAST if channels_last else FWD_LANES
    FL = fwd_lanes or (lanes_default if NL == 1 and T % lanes_default == 0 else 1)
    if FL > 1:  # the same threads a program as the backward's: BD / FL channels
        fbd = _block_d(dpg, max(1, BD // FL))
        p = p._replace(fwd=p._replace(BD=fbd, lanes=FL, fwd_warps=fwd_warps or _warps(fbd * FL)))
    return p


def _stage_bc(B: torch.Tensor, C: torch.Tensor, b: int, g: int, n: int, l: int, T: int) -> torch.Tensor:
    """B and C as one fp32 (b, g, tiles, 2, n, T) buffer, zero past l: a tile's B and C are one 2·n·T block,
    so the kernels read each state's row of a tile as 16-byte vectors at fixed offsets. From (b, n, l) or
    (b, g', n, l) with any strides; n/d of u's size."""
    nt = triton.cdiv(l, T)
    out = torch.zeros((b, g, nt * T, 2, n), dtype=torch.float32, device=B.device)
    for k, M in enumerate((B, C)):
        src = M if M.dim() == 4 else M.unsqueeze(1)
        out[:, :, :l, k].copy_(src.expand(b, g, n, l).transpose(2, 3))
    return out.view(b, g, nt, T, 2, n).permute(0, 1, 2, 4, 5, 3).contiguous()


def _block_sum(part: torch.Tensor, b: int, g: int, n: int, l: int) -> torch.Tensor:
    """(b, g, n, l) dB or dC from the backward's (b, rows, NP, l) buffer: a view where it holds one row a group
    (bwd_atomic), else the channel blocks' partials added in a fixed order. Blocks never straddle groups (BD divides
    d / g), so block i belongs to group i // (rows / g)."""
    rows = part.shape[1]
    return part[:, :, :n] if rows == g else part[:, :, :n].reshape(b, g, rows // g, n, l).sum(2)


def _ungroup(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """(b, g, n, l) gradient back to the caller's B or C shape, summing groups a shared input was expanded to."""
    if len(shape) == 3:
        return grad[:, 0] if grad.shape[1] == 1 else grad.sum(1)
    return grad.sum(1, keepdim=True) if shape[1] == 1 and grad.shape[1] > 1 else grad


def _common(u, delta, z, BC):
    """The input strides every kernel takes: u, Δ, z as (batch, position, channel), then the staged B/C."""
    return (*_strides(u), *_strides(delta), *_strides(z if z is not None else u), BC.stride(0), BC.stride(1))


def forward(u, delta, A, B, C, D, z, delta_bias, initial_state, softplus, cfg):
    """Launch F1-F3. Returns y, h_last (b, d, n) and what the backward needs."""
    b, d, l = u.shape
    n = A.shape[1]
    NP = _state_rows(n, cfg)
    if cfg.fwd is not None and _state_rows(n, cfg.fwd) == NP:  # fewer states than lanes: NP would differ
        cfg = cfg.fwd
    g = max(B.shape[1] if B.dim() == 4 else 1, C.shape[1] if C.dim() == 4 else 1)
    T, BD, M, CL, nc, unroll = cfg.T, cfg.BD, cfg.M, cfg.CL, cfg.NC, cfg.unroll
    nblk, dev = d // BD, u.device
    bpg = (d // g) // BD
    BC = _stage_bc(B, C, b, g, n, l, T)
    A2 = (A.float() * LOG2E_F).t().contiguous()  # (n, d)
    Df = D.float().contiguous() if D is not None else None
    bias = delta_bias.float().contiguous() if delta_bias is not None else None
    nck = triton.cdiv(l, M * T)
    ck = alloc((b, nck, NP, d), torch.float32, dev)
    hlast = alloc((b, NP, d), torch.float32, dev)
    y = alloc_like(u)
    dummy = A2
    flags = dict(N=n, NP=NP, T=T, BD=BD, M=M, NFMA=cfg.fma_exps, UNROLL_N=unroll, HAS_BIAS=bias is not None,
                 SOFTPLUS=softplus, HAS_D=Df is not None, HAS_Z=z is not None, NL=cfg.lanes,
                 num_warps=cfg.fwd_warps, num_stages=1)
    st = (*_common(u, delta, z, BC), *_strides(y))
    scr = torch.empty(0 if unroll else b * nc * d * NP, dtype=torch.float32, device=dev)
    grid = (nblk, nc, b)
    P = None
    if nc > 1:
        vec = dict(VU=vec_rows(u, T), VT=vec_rows(delta, T), VZ=False, VY=False)
        S = alloc((b, nc, NP, d), torch.float32, dev)
        P = alloc((b, nc, NP, d), torch.float32, dev)
        if cfg.stop_summaries:
            _fwd_summary_tail[grid](u, delta, bias if bias is not None else dummy, A2, BC, S, P, l, CL, nc, bpg,
                                    *_strides(u), *_strides(delta), BC.stride(0), BC.stride(1), 1, N=n, NP=NP, T=T,
                                    BD=BD, NFMA=cfg.fma_exps, STOP=SUMMARY_STOP, HAS_BIAS=bias is not None,
                                    SOFTPLUS=softplus, VU=vec["VU"], VT=vec["VT"], NL=cfg.lanes,
                                    num_warps=cfg.fwd_warps, num_stages=1)
        else:
            _fwd_scan[grid](u, delta, bias if bias is not None else dummy, A2, BC, dummy, dummy, dummy, dummy,
                            dummy, S, P, dummy, scr if not unroll else dummy, l, CL, nc, nck, bpg, *st, 0, 0, 0, 0, 1,
                            SUMMARY=True, HAS_H0=False, **vec, **flags)
        H = alloc((b, nc, NP, d), torch.float32, dev)
        _launch_carry(P, S, initial_state, H, b, nc, NP, d, n, reverse=False)
        h0, hst = H, (H.stride(0), H.stride(1), H.stride(2), H.stride(3))
    else:
        h0 = initial_state
        hst = (0, 0, 0, 0) if h0 is None else (h0.stride(0), 0, h0.stride(2), h0.stride(1))
    flags.update(VU=vec_rows(u, T), VT=vec_rows(delta, T), VZ=vec_rows(z, T), VY=vec_rows(y, T))
    _fwd_scan[grid](u, delta, bias if bias is not None else dummy, A2, BC, Df if Df is not None else dummy,
                    z if z is not None else dummy, h0 if h0 is not None else dummy, y, ck, dummy, dummy, hlast,
                    scr if not unroll else dummy, l, CL, nc, nck, bpg, *st, *hst, 1, SUMMARY=False,
                    HAS_H0=h0 is not None, **flags)
    saved = (BC, A2, Df, bias, ck, P)
    return y, hlast[:, :n].transpose(1, 2), saved


def _state_rows(n: int, cfg: Plan) -> int:
    """Rows of the kernels' state blocks and buffers: n to a power of two, and at least one per lane (then each
    lane holds NP / lanes of them; rows past n are padding that stays 0)."""
    return max(triton.next_power_of_2(n), cfg.lanes)


def _launch_carry(P, S, init, out, b, nc, NP, d, n, reverse):
    block = 256
    ist = (0, 0, 0) if init is None else (init.stride(0), init.stride(2), init.stride(1))
    _carry[(triton.cdiv(NP * d, block), b)](P, S, init if init is not None else P, out, nc, NP * d, *ist, d, n,
                                           HAS_INIT=init is not None, REVERSE=reverse, BLOCK=block, num_warps=4)


def backward(dy, dh_last, u, delta, A, B_shape, C_shape, z, softplus, has_h0, cfg, saved):
    """Launch B1-B3. Returns the gradients of u, delta, A, B, C, D, z, delta_bias, initial_state."""
    BC, A2, Df, bias, ck, P = saved
    b, d, l = u.shape
    g, n = BC.shape[1], BC.shape[4]
    NP = _state_rows(n, cfg)
    T, BD, M, CL, nc = cfg.T, cfg.BD, cfg.M, cfg.CL, cfg.NC
    nblk, dev = d // BD, u.device
    bpg = (d // g) // BD
    nck = ck.shape[1]
    dummy = A2
    warps = cfg.bwd_warps
    # the butterfly needs whole warps of columns (emulated in the interpreter), and with lanes a tile's T rows
    # spread over the lanes of one state: T·lanes <= 32; otherwise dB/dC are tl.sums
    asm = (BD * cfg.lanes) % (32 * warps) == 0 and T * cfg.lanes <= 32
    flags = dict(N=n, NP=NP, T=T, BD=BD, NFMA=cfg.fma_exps, HAS_BIAS=bias is not None, SOFTPLUS=softplus,
                 HAS_Z=z is not None, NL=cfg.lanes, num_warps=warps, num_stages=1)
    st = (*_common(u, delta, z, BC)[:9], *_strides(dy), BC.stride(0), BC.stride(1))
    grid = (nblk, nc, b)
    if nc > 1:
        Q = alloc((b, nc, NP, d), torch.float32, dev)
        kern, stop = (_bwd_summary_head, dict(STOP=SUMMARY_STOP)) if cfg.stop_summaries else (_bwd_summary, {})
        kern[grid](delta, bias if bias is not None else dummy, A2, BC, z if z is not None else dummy, dy, Q,
                   l, CL, nc, bpg, *st, 0, 0, 0, 0, 0, 0, 0, 1, *([0] * 9), VT=vec_rows(delta, T),
                   VZ=vec_rows(z, T), VY=vec_rows(dy, T), **stop, **flags)
        Pin = alloc((b, nc, NP, d), torch.float32, dev)
        _launch_carry(P, Q, dh_last, Pin, b, nc, NP, d, n, reverse=True)
        pin, pst = Pin, (Pin.stride(0), Pin.stride(1), Pin.stride(2), Pin.stride(3))
    else:
        pin = dh_last
        pst = (0, 0, 0, 0) if pin is None else (pin.stride(0), 0, pin.stride(2), pin.stride(1))
    scr = torch.empty(b * nc * d * (M + 4) * NP, dtype=torch.float32, device=dev)  # see _bwd_scan
    du, ddelta = alloc_like(u), alloc_like(delta)
    dz = alloc_like(z) if z is not None else None
    # the group's sum, which every block adds into (so it starts at zero), or each channel block's partial
    rows, sums = (g, torch.zeros) if cfg.bwd_atomic else (nblk, alloc)
    dB_part = sums((b, rows, NP, l), dtype=torch.float32, device=dev)
    dC_part = sums((b, rows, NP, l), dtype=torch.float32, device=dev)
    dA_part = alloc((b, nc, NP, d), torch.float32, dev)
    dD_part = alloc((b, nc, d), torch.float32, dev) if Df is not None else None
    dbias_part = alloc((b, nc, d), torch.float32, dev) if bias is not None else None
    dh0 = alloc((b, d, n), torch.float32, dev) if has_h0 else None
    hst = (0, 0, 0) if dh0 is None else (dh0.stride(0), dh0.stride(2), dh0.stride(1))
    _bwd_scan[grid](
        u, delta, bias if bias is not None else dummy, A2, BC, Df if Df is not None else dummy,
        z if z is not None else dummy, dy, ck, pin if pin is not None else dummy, scr,
        du, ddelta, dz if dz is not None else dummy, dB_part, dC_part, dA_part,
        dD_part if dD_part is not None else dummy, dbias_part if dbias_part is not None else dummy,
        dh0 if dh0 is not None else dummy, l, CL, nc, nck, bpg, *st, *pst, *hst, 1,
        *_strides(du), *_strides(ddelta), *_strides(dz if dz is not None else du),
        M=M, HAS_D=Df is not None, HAS_PIN=pin is not None, HAS_H0=has_h0, REDUCE_ASM=asm, UNROLL=cfg.bwd_unroll,
        STAGES=cfg.bwd_stages, ATOMIC=cfg.bwd_atomic,
        CPT=max(1, BD * cfg.lanes // (32 * warps)), VU=vec_rows(u, T), VT=vec_rows(delta, T), VZ=vec_rows(z, T),
        VY=vec_rows(dy, T), VOU=vec_rows(du, T), VOT=vec_rows(ddelta, T), VOZ=vec_rows(dz, T), **flags,
        **({"maxnreg": cfg.bwd_maxnreg} if cfg.bwd_maxnreg else {}),
    )
    del scr  # before the sums below, which would otherwise add their copies to the kernel's peak
    dB, dC = (_ungroup(_block_sum(part, b, g, n, l), shape) for part, shape in ((dB_part, B_shape), (dC_part, C_shape)))
    del dB_part, dC_part
    dA = dA_part[:, :, :n].sum((0, 1)).t()
    dD = dD_part.sum((0, 1)) if dD_part is not None else None
    dbias = dbias_part.sum((0, 1)) if dbias_part is not None else None
    return du, ddelta, dA, dB, dC, dD, dz, dbias, dh0


class _SelectiveScanV2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, softplus, launch):
        b, d, l = u.shape
        g = max(B.shape[1] if B.dim() == 4 else 1, C.shape[1] if C.dim() == 4 else 1)
        # u's channels contiguous (a (b, d, l) view of (b, l, d) storage) picks the forward's lanes (plan)
        cfg = plan(b, d, l, d // g, u.device, **{"channels_last": u.stride(1) == 1 and d > 1, **launch})
        y, h_last, saved = forward(u, delta, A, B, C, D, z, delta_bias, initial_state, softplus, cfg)
        ctx.save_for_backward(u, delta, A, D, z, delta_bias, *saved[:5], *([saved[5]] if saved[5] is not None else []))
        ctx.meta = (softplus, cfg, B.shape, C.shape, B.dtype, C.dtype,
                    initial_state.dtype if initial_state is not None else None)
        ctx.set_materialize_grads(False)  # an unused final state then costs no zero tensor and no load
        return y, h_last

    @staticmethod
    def backward(ctx, dy, dh_last):
        u, delta, A, D, z, delta_bias, BC, A2, Df, bias, ck, *rest = ctx.saved_tensors
        softplus, cfg, B_shape, C_shape, B_dtype, C_dtype, h0_dtype = ctx.meta
        saved = (BC, A2, Df, bias, ck, rest[0] if rest else None)
        if dy is None:
            dy = torch.zeros_like(u)
        du, ddelta, dA, dB, dC, dD, dz, dbias, dh0 = backward(
            dy, dh_last, u, delta, A, B_shape, C_shape, z, softplus, h0_dtype is not None, cfg, saved)
        return (du, ddelta, dA.to(A.dtype), dB.to(B_dtype), dC.to(C_dtype),
                dD.to(D.dtype) if dD is not None else None, dz,
                dbias.to(delta_bias.dtype) if dbias is not None else None,
                dh0.to(h0_dtype) if dh0 is not None else None, None, None)


def selective_scan_triton_v2(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    initial_state=None, return_final_state=False, **launch,
):
    """The v2 scan; arguments and result as ``scan_ref.selective_scan_ref``. Keywords of `plan` (tile, block_d,
    ckpt_tiles, chunk, unroll, fwd_warps, bwd_warps, lanes, ...) override the launch shape: tests put chunk boundaries
    inside short sequences, the benchmark sweeps them."""
    if u.shape[-1] == 0:
        raise ValueError("selective_scan_triton_v2 needs a sequence length of at least 1")
    if A.shape[1] > MAX_STATES:
        raise ValueError(f"selective scan v2 keeps at most {MAX_STATES} states per channel in registers; got "
                         f"{A.shape[1]}: use v1")
    y, h_last = _SelectiveScanV2.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, bool(delta_softplus),
                                      launch)
    return (y, h_last) if return_final_state else y
