"""The Triton selective scan v2 (state in registers, scan_v2.py) against the sequential definition in float64.

In Triton's interpreter on a CPU-only machine (root conftest.py). Launch shapes are shrunk (tiles of 8, 2 tiles a
checkpoint interval, chunks of 16) so that tile, checkpoint and chunk boundaries all fall inside short sequences of
lengths that are not powers of two; outputs are NaN-poisoned, so an unwritten element fails. The layouts and the
inline-PTX butterfly only exist on the GPU: tests/kernels/test_scan_v2_layout.py checks the compiled kernels, and
experiments/check_scan_gpu.py runs these checks on a GPU up to 2^20 positions.
"""

from __future__ import annotations

import pytest
import torch
from scan_cases import TOLERANCE, as_float64, assert_scan_close, make_inputs, rel_err, run_scan

triton = pytest.importorskip("triton")

from mambadna.kernels import buffers, scan_v2  # noqa: E402
from mambadna.kernels.scan_ref import selective_scan_ref  # noqa: E402
from mambadna.kernels.scan_v2 import selective_scan_triton_v2  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
RANGES = dict(delta_shift=-1.0, delta_scale=0.5, a_spread=0.5, bias_scale=0.3, device=DEVICE)
SMALL = dict(tile=8, ckpt_tiles=2, chunk=16)  # tiles, checkpoint intervals and chunks inside every sequence


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    monkeypatch.setattr(buffers, "POISON_OUTPUTS", True)


def compare(b, d, l, n, groups=None, dtype=torch.float32, seed=0, optional=True, layout="bdl", **launch):
    x = make_inputs(b, d, l, n, groups, dtype, seed, optional=optional, layout=layout, **RANGES)
    got = run_scan(selective_scan_triton_v2, x, **launch)
    assert_scan_close(got, run_scan(selective_scan_ref, as_float64(x)), "vs_float64", key_dtype=dtype)
    for k, v in x.items():
        if v is not None:
            assert got[f"d{k}"].dtype == v.dtype
    return got


@pytest.mark.parametrize("l, n", [(63, 4), (37, 3), (1, 1)])
@pytest.mark.parametrize("fwd_lanes", [None, 1])
def test_fp32_with_chunks_and_checkpoints(l, n, fwd_lanes):
    """The default launch (the forward on FWD_LANES lanes where there are as many states) and the forward on one."""
    compare(2, 4, l, n, block_d=4, fwd_lanes=fwd_lanes, **SMALL)


def test_bf16_channels_last_views():
    """u, Δ, z as views of (b, l, d) storage and B, C of (b, l, n): read in place (no copy), outputs in that layout."""
    got = compare(1, 4, 37, 4, dtype=torch.bfloat16, layout="bld", block_d=4, **SMALL)
    assert got["du"].stride(1) == 1  # gradients come back in the layout of their input


def test_bf16_vector_rows():
    """(b, d, l) bf16 with 16-byte aligned rows: the kernels take the vector-load path (scan_v2.vec_rows)."""
    x = make_inputs(1, 4, 64, 4, dtype=torch.bfloat16, **RANGES)
    assert scan_v2.vec_rows(x["u"], 8)
    compare(1, 4, 64, 4, dtype=torch.bfloat16, block_d=4, **SMALL)


def test_grouped_bc_and_loop_over_states():
    compare(1, 8, 50, 4, groups=2, block_d=4, unroll=False, **SMALL)


def test_without_optional_inputs_or_softplus():
    x = make_inputs(1, 4, 40, 3, optional=False, **RANGES)
    x["delta"] = x["delta"].abs()  # without softplus, Δ must already be >= 0
    got = run_scan(selective_scan_triton_v2, x, softplus=False, block_d=4, **SMALL)
    assert_scan_close(got, run_scan(selective_scan_ref, as_float64(x), softplus=False), "vs_float64",
                      key_dtype=torch.float32)


def test_exps_on_the_fma_pipe_keep_fp32_accuracy():
    """tiles.exp2_fma (polynomial, 1.9e-7 relative) for half the states stays within the fp32 tolerance."""
    compare(1, 4, 45, 4, block_d=4, fma_exps=2, **SMALL)


def _tiles_the_tail_walk_skips(x, chunk, tile):
    """Tiles that _fwd_summary_tail's stopping rule leaves unread, over all chunks of x (one program of all channels):
    walking each chunk's tiles from its end, it stops once A2·R <= -SUMMARY_STOP for the slowest state of every channel,
    R the Δ summed over the tiles read."""
    dt = torch.nn.functional.softplus(x["delta"].double() + x["delta_bias"].double()[:, None])  # (b, d, l)
    a2max = (x["A"].double() * 1.4426950408889634).max(1).values
    b, _, l = dt.shape
    skipped = 0
    for c0 in range(0, l, chunk):
        end = min(l, c0 + chunk)
        for i in range(b):
            R = torch.zeros_like(a2max)
            for k in range(-(-(end - c0) // tile) - 1, 0, -1):
                R += dt[i, :, c0 + k * tile: min(end, c0 + (k + 1) * tile)].sum(-1)
                if (a2max * R).max() <= -scan_v2.SUMMARY_STOP:
                    skipped += k
                    break
    return skipped


@pytest.mark.parametrize("a_scale, skips", [(1.0, False), (32.0, True)])
def test_stopped_summaries_equal_the_full_ones(a_scale, skips):
    """stop_summaries: the forward's chunk summaries walked from each chunk's end (scan_v2_fwd._fwd_summary_tail),
    the backward's from each chunk's start (scan_v2_bwd._bwd_summary_head), each stopped once the decay makes every
    further term vanish in fp32. With A ~ -1 a 48-position chunk never gets there (whole chunks are walked); with
    A ~ -32 it does within two tiles, so most of each chunk is skipped (checked below for the forward's rule; the
    backward's is its mirror). Either way output, final state and gradients match the definition and the full
    summaries."""
    x = make_inputs(2, 4, 80, 4, None, torch.float32, 1, **dict(RANGES, a_scale=a_scale))
    assert (_tiles_the_tail_walk_skips(x, 48, 8) > 0) == skips
    launch = dict(block_d=4, tile=8, ckpt_tiles=1, chunk=48)
    got = run_scan(selective_scan_triton_v2, x, stop_summaries=True, **launch)
    assert_scan_close(got, run_scan(selective_scan_ref, as_float64(x)), "vs_float64", key_dtype=torch.float32)
    full = run_scan(selective_scan_triton_v2, x, stop_summaries=False, **launch)
    assert max(rel_err(got[k], full[k]) for k in got) < 1e-6
    assert_scan_close(full, run_scan(selective_scan_ref, as_float64(x)), "vs_float64", key_dtype=torch.float32)
    assert scan_v2.plan(2, 4, 80, 4, torch.device("cpu"), block_d=4).stop_summaries  # the default since 12-06


@pytest.mark.parametrize("ckpt_tiles, chunk, l", [(3, 48, 101), (6, 96, 200)])
def test_checkpoint_intervals_of_any_tile_count(ckpt_tiles, chunk, l):
    """ckpt_tiles need not be a power of two (the benchmark times 6, between the default's 4 and 8): intervals of
    3 and 6 tiles, the last one cut short, over several chunks."""
    compare(2, 8, l, 4, block_d=4, tile=8, ckpt_tiles=ckpt_tiles, chunk=chunk, dtype=torch.bfloat16)


def test_stopped_summaries_bf16_model_layout_grouped():
    compare(1, 8, 40, 2, groups=2, dtype=torch.bfloat16, block_d=4, stop_summaries=True, fma_exps=1, **SMALL)
    compare(1, 4, 37, 2, dtype=torch.bfloat16, layout="bld", block_d=4, stop_summaries=True, **SMALL)


@pytest.mark.parametrize("lanes, l, n, launch", [
    (2, 63, 4, SMALL),  # several chunks, stopped summaries (the default)
    (4, 37, 3, dict(SMALL, stop_summaries=False)),  # a padding state (3 states on 4 lanes), the full summaries
    (8, 45, 4, dict(tile=8, ckpt_tiles=2, chunk=64)),  # one chunk; more lanes than states
    (2, 50, 4, dict(SMALL, unroll=False, fma_exps=1)),  # the forward's loop over states, an exp on the FMA pipe
])
def test_lanes_split_each_channels_states(lanes, l, n, launch):
    """lanes: each channel's states over several threads (tiles.lane_columns), y and the backward's sums over
    states added across them (tiles.lane_sum), dB/dC summed over the block's channels per lane."""
    compare(2, 4, l, n, block_d=4, lanes=lanes, **launch)


def test_lanes_bf16_model_layout_grouped():
    compare(1, 8, 40, 4, groups=2, dtype=torch.bfloat16, layout="bld", block_d=4, lanes=4, **SMALL)


@pytest.mark.parametrize("fwd_lanes, l, n, launch", [
    (2, 63, 4, SMALL),  # several chunks, stopped summaries: the backward reads the lanes' checkpoints and decays
    (4, 37, 3, dict(SMALL, stop_summaries=False)),  # a padding state, the full summaries
    (4, 29, 1, SMALL),  # one state, fewer than the lanes: the forward keeps lanes 1
])
def test_forward_alone_on_lanes(fwd_lanes, l, n, launch):
    """fwd_lanes: the forward on several threads a channel, the backward on one, from the same buffers."""
    compare(2, 8, l, n, block_d=8, fwd_lanes=fwd_lanes, **launch)


def test_forward_alone_on_lanes_bf16_model_layout_grouped():
    compare(1, 16, 40, 4, groups=2, dtype=torch.bfloat16, layout="bld", block_d=8, fwd_lanes=4, **SMALL)


@pytest.mark.parametrize("n, fma_exps", [(4, 0), (3, 1)])
def test_backward_state_loop_unrolled(n, fma_exps):
    """bwd_unroll: the backward's loop over states unrolled twice, over an odd count of them (3 states, padded to
    4; with one exp on the FMA pipe the first loop walks 3 of them), with the warp butterfly's rows."""
    compare(1, 32, 37, n, block_d=32, bwd_unroll=2, fma_exps=fma_exps, **SMALL)


def test_backward_register_cap_is_a_launch_option():
    """bwd_maxnreg reaches the backward's launch as Triton's maxnreg (the interpreter takes and ignores it; the GPU
    check in experiments/gpu_scan.sh runs each timed variant): the same gradients, and the plan keeps it."""
    assert scan_v2.plan(1, 32, 37, 32, torch.device("cpu"), bwd_maxnreg=168).bwd_maxnreg == 168
    compare(1, 32, 37, 4, block_d=32, bwd_maxnreg=168, **SMALL)


def test_backward_pipeline_stages_are_a_launch_option():
    """bwd_stages reaches the backward's state loop as tl.range's num_stages (the interpreter runs the loop as
    written; the sm_90 build in test_scan_v2_layout.py shows the pipelined loads): the same gradients."""
    assert scan_v2.plan(1, 32, 37, 32, torch.device("cpu"), bwd_stages=2).bwd_stages == 2
    assert scan_v2.plan(1, 32, 37, 32, torch.device("cpu")).bwd_stages == scan_v2.BWD_STAGES == 3
    compare(1, 32, 37, 4, block_d=32, bwd_stages=1, **SMALL)
    compare(1, 32, 37, 4, block_d=32, bwd_stages=2, **SMALL)


def test_atomic_dB_dC_sums_are_the_default_unless_deterministic():
    """bwd_atomic is the default launch, and torch.use_deterministic_algorithms picks the fixed-order partials."""
    cpu = torch.device("cpu")
    assert scan_v2.plan(1, 32, 37, 32, cpu).bwd_atomic is scan_v2.BWD_ATOMIC is True
    assert not scan_v2.plan(1, 32, 37, 32, cpu, bwd_atomic=False).bwd_atomic
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert not scan_v2.plan(1, 32, 37, 32, cpu).bwd_atomic
        assert scan_v2.plan(1, 32, 37, 32, cpu, bwd_atomic=True).bwd_atomic  # asked for, still given
    finally:
        torch.use_deterministic_algorithms(was)


@pytest.mark.parametrize("atomic", [True, False])
@pytest.mark.parametrize("layout", ["bdl", "bld"])
def test_dB_dC_sums_added_atomically_or_as_partials(layout, atomic):
    """Every channel block's dB/dC added into one sum a group (scan_v2_bwd.put_sum, the default) or kept as
    partials that the launcher adds: the same gradients with several blocks a group, groups, chunks, lanes, and
    lengths that are not powers of two."""
    compare(2, 64, 37, 4, block_d=16, bwd_atomic=atomic, layout=layout, **SMALL)  # 4 blocks add into one sum
    compare(1, 64, 45, 4, groups=2, block_d=8, bwd_atomic=atomic, layout=layout, **SMALL)  # 4 blocks a group
    compare(1, 32, 29, 8, block_d=8, lanes=2, bwd_atomic=atomic, dtype=torch.bfloat16, layout=layout, **SMALL)


@pytest.mark.parametrize("atomic", [True, False])
def test_dB_dC_sums_after_the_warp_reduction(atomic):
    """The butterfly path's cross-warp sums, added atomically or as partials: two blocks of one warp each."""
    compare(1, 64, 27, 2, block_d=32, bwd_warps=1, bwd_atomic=atomic, **SMALL)


def test_warp_reduction_path():
    """Channel blocks of whole warps take the butterfly reduction of dB/dC (emulated in the interpreter) and its
    cross-warp sum: 2 warps of one channel each, and 1 warp of two channels a thread."""
    compare(1, 64, 24, 2, block_d=64, bwd_warps=2, **SMALL)


@pytest.mark.parametrize("lanes, n, block_d", [(2, 3, 32), (4, 4, 8)])
def test_warp_reduction_path_with_lanes(lanes, n, block_d):
    """With lanes (T·lanes <= 32) the butterfly sums each state over the lanes that hold it: 32 / lanes channels a
    warp; two columns a thread at lanes 2 (64 columns on one warp), one at lanes 4."""
    compare(1, 32, 24, n, block_d=block_d, bwd_warps=1, lanes=lanes, **SMALL)


@pytest.mark.slow
def test_warp_reduction_two_channels_per_thread():
    compare(1, 64, 24, 2, block_d=64, bwd_warps=1, **SMALL)


def test_default_plan_one_chunk():
    """The default launch shape (no overrides) on a short sequence: one chunk, the final state from F3."""
    compare(1, 4, 33, 4)


def test_large_delta_does_not_overflow():
    x = make_inputs(1, 4, 40, 2, **RANGES)
    x["delta"].fill_(60.0)
    x["A"].fill_(-64.0)
    y, h = selective_scan_triton_v2(**x, delta_softplus=True, return_final_state=True, block_d=4, **SMALL)
    ref_y, ref_h = selective_scan_ref(**x, delta_softplus=True, return_final_state=True)
    tol = TOLERANCE["vs_float64"][torch.float32]
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    assert rel_err(y, ref_y) < tol and rel_err(h, ref_h) < tol


def test_plan_cuts_sequences_only_below_full_occupancy():
    cpu = torch.device("cpu")  # 4 "SMs" off the GPU
    assert scan_v2.plan(64, 2048, 2048, 2048, cpu).NC == 1
    p = scan_v2.plan(1, 512, 2**20, 512, cpu)
    assert p.NC > 1 and p.CL % (p.M * p.T) == 0 and p.NC * p.CL >= 2**20
    # 12 programs of 4 warps: 12 warps on each of the 4 "SMs"; cut when asked for 16 a SM, not for 8
    assert scan_v2.plan(1, 1536, 4096, 1536, cpu, full_warps=16, sm_warps=16).NC == 2
    assert scan_v2.plan(1, 1536, 4096, 1536, cpu, full_warps=8).NC == 1
    # once cut, into enough chunks for WARPS_PER_SM (32 since the 12-06 measurement) warps a SM: 32 * 4 / 4 / 12
    assert scan_v2.plan(1, 1536, 4096, 1536, cpu, full_warps=16).NC == 3


def test_plan_with_lanes_counts_every_thread_of_a_channel():
    """A program keeps 128 threads: 128 / lanes channels. b·d·lanes threads fill the GPU, so sequences are cut
    into fewer chunks, or none."""
    cpu = torch.device("cpu")  # 4 "SMs"
    p = scan_v2.plan(1, 512, 4096, 512, cpu, lanes=4)
    assert (p.BD, p.fwd_warps, p.bwd_warps, p.lanes) == (32, 4, 4, 4)
    assert scan_v2.plan(1, 512, 4096, 512, cpu).NC == 8  # 16 warps < 8 a SM: cut for 32 a SM
    assert scan_v2.plan(1, 512, 4096, 512, cpu, lanes=2).NC == 1  # 32 warps
    assert scan_v2.plan(1, 512, 2**20, 512, cpu, full_warps=32).NC == 8
    assert scan_v2.plan(1, 512, 2**20, 512, cpu, full_warps=32, lanes=4).NC == 2
    assert scan_v2.plan(1, 512, 4096, 512, cpu).lanes == 1  # the default launch is unchanged
    with pytest.raises(ValueError, match="lanes must be"):
        scan_v2.plan(1, 512, 4096, 512, cpu, lanes=3)
    # fwd_lanes: the forward's own launch, the same 128 threads a program and the backward's chunks
    p, f = scan_v2.plan(1, 512, 2**20, 512, cpu, fwd_lanes=1), scan_v2.plan(1, 512, 2**20, 512, cpu)
    assert (f.BD, f.lanes, f.CL, f.NC) == (p.BD, 1, p.CL, p.NC) and p.fwd is None
    assert (f.fwd.BD, f.fwd.lanes, f.fwd.fwd_warps, f.fwd.CL, f.fwd.NC) == (32, scan_v2.FWD_LANES, 4, p.CL, p.NC)
    assert scan_v2.plan(1, 512, 2**20, 512, cpu, lanes=2).fwd is None  # lanes already splits the forward
    # u's channels contiguous (the model's layout with the Triton conv): the forward on FWD_LANES_CHANNELS_LAST lanes
    assert scan_v2.FWD_LANES_CHANNELS_LAST == 1
    assert scan_v2.plan(1, 512, 2**20, 512, cpu, channels_last=True).fwd is None
    assert scan_v2.plan(1, 512, 2**20, 512, cpu, channels_last=True, fwd_lanes=4).fwd.lanes == 4
    assert scan_v2.plan(1, 512, 2**20, 512, cpu, tile=2).fwd is None  # 4 lanes need tiles of 4 or more
    with pytest.raises(ValueError, match="give one"):
        scan_v2.plan(1, 512, 4096, 512, cpu, lanes=2, fwd_lanes=2)
    with pytest.raises(ValueError, match="must divide the tile"):
        scan_v2.plan(1, 512, 4096, 512, cpu, lanes=8, tile=4)


def test_rejects_empty_sequence():
    x = make_inputs(1, 4, 1, 2, **RANGES)
    x = {k: (v[..., :0] if k in ("u", "delta", "z", "B", "C") else v) for k, v in x.items()}
    with pytest.raises(ValueError, match="at least 1"):
        selective_scan_triton_v2(**x)


def test_the_forward_lanes_follow_the_layout_of_u(monkeypatch):
    """The autograd function tells plan whether u's channels are contiguous, from u's strides alone."""
    seen = []
    real = scan_v2.plan
    monkeypatch.setattr(scan_v2, "plan", lambda *a, **k: seen.append(k["channels_last"]) or real(*a, **k))
    b, d, l, n = 1, 8, 19, 4
    A = -torch.rand(d, n)
    for u in (torch.randn(b, d, l), torch.randn(b, l, d).transpose(1, 2)):
        delta = torch.rand(b, d, l)
        selective_scan_triton_v2(u, delta, A, torch.randn(b, n, l), torch.randn(b, n, l), block_d=8)
    assert seen == [False, True]
