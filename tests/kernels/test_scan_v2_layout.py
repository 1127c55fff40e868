"""The v2 kernels compiled for an H100/H200 (sm_90), no GPU needed: the layouts and instruction mix they rely on.

The butterfly reduction of dB/dC assumes channel c of a tile sits on lane c % 32 with the positions of a tile inside
the thread; the forward assumes it has no cross-lane work at all. Both hold only if Triton's layout passes choose
what tiles.py steers them to, so this compiles the default-plan kernels (in a subprocess: the interpreter, which the
root conftest.py switches on, cannot compile) for (b, d, l) bf16 rows (vector loads) and for channels-last views
(hidden strides), and checks the TTGIR layouts and the SASS (ptxas and cuobjdump ship with Triton). The `lanes`
launch (each channel's 16 states over 2, 4 or 8 threads) is compiled too, for (b, d, l) rows.
"""

from __future__ import annotations

import textwrap

import pytest
from sm90 import compiled_fixture

pytest.importorskip("triton")

LANES = (2, 4, 8)
SCRIPT = f"LANES = {LANES}\n" + textwrap.dedent(r'''
    import json, re
    import sm90
    from mambadna.kernels import scan_v2_bwd, scan_v2_fwd
    from mambadna.kernels.scan_v2 import CKPT_TILES

    BF16 = {"p_u", "p_dt", "p_z", "p_y", "p_dy", "p_du", "p_ddt", "p_dz"}
    DIV16 = {"L", "CL", "s_bb", "s_bg", "s_ub", "s_ud", "s_tb", "s_td", "s_zb", "s_zd", "s_yb", "s_yd",
             "s_oub", "s_oud", "s_otb", "s_otd", "s_ozb", "s_ozd"}

    def build(kern, cx, warps):
        k = sm90.build(kern, cx, warps, {nm: "*bf16" for nm in BF16}, DIV16, num_stages=1)
        ops = [o.split(".")[0] for o in k["ops"]]
        two_d = re.findall(r"#ttg\.blocked<\{sizePerThread = \[(\d+), (\d+)\], threadsPerWarp = \[(\d+), (\d+)\], "
                           r"warpsPerCTA = \[(\d+), (\d+)\]", k["ttgir"])
        return dict(regs=k["regs"], spills=k["spills"], shfl=ops.count("SHFL"), stl=ops.count("STL"),
                    mufu=ops.count("MUFU"), cp_async=ops.count("LDGSTS"), red=ops.count("RED") + ops.count("REDG"),
                    layouts=sorted(set(two_d)))

    out = {}
    T, W = 8, 4  # scan_v2.plan's defaults: 128 threads a program, 128 / lanes channels
    for NL, layouts in ((1, (("bdl", 1, True), ("bld", 512, False))),) + tuple((NL, (("bdl", 1, True),))
                                                                            for NL in LANES):
        BD, sfx = 128 // NL, "" if NL == 1 else f" lanes{NL}"
        for name, sl, vec in layouts:
            base = dict(N=16, NP=16, T=T, BD=BD, M=CKPT_TILES, NFMA=0, HAS_BIAS=True, SOFTPLUS=True, HAS_Z=True,
                        HAS_D=True, s_ul=sl, s_tl=sl, s_zl=sl, s_yl=sl, VU=vec, VT=vec, VZ=vec, VY=vec, NL=NL)
            name += sfx
            out["F3 " + name] = build(scan_v2_fwd._fwd_scan, dict(base, UNROLL_N=True, SUMMARY=False, HAS_H0=True), W)
            out["F1tail " + name] = build(scan_v2_fwd._fwd_summary_tail, dict(
                N=16, NP=16, T=T, BD=BD, NFMA=0, STOP=160.0, HAS_BIAS=True, SOFTPLUS=True, s_ul=sl, s_tl=sl, VU=vec,
                VT=vec, NL=NL), W)
            out["B1head " + name] = build(scan_v2_bwd._bwd_summary_head, dict(
                N=16, NP=16, T=T, BD=BD, NFMA=0, HAS_BIAS=True, SOFTPLUS=True, HAS_Z=True, STOP=160.0, s_ul=sl,
                s_tl=sl, s_zl=sl, s_yl=sl, s_oul=sl, s_otl=sl, s_ozl=sl, VT=vec, VZ=vec, VY=vec, NL=NL), W)
            b3 = dict(base, HAS_PIN=True, HAS_H0=True, REDUCE_ASM=T * NL <= 32, CPT=1, s_oul=sl, s_otl=sl,
                      s_ozl=sl, VOU=vec, VOT=vec, VOZ=vec, UNROLL=1, STAGES=1, ATOMIC=False)
            out["B3 " + name] = build(scan_v2_bwd._bwd_scan, b3, W)
            if name in ("bdl", "bld"):  # plan's bwd_stages: the loop over states software-pipelined
                for stages in (2, 3):
                    out[f"B3 {name} stages{stages}"] = build(scan_v2_bwd._bwd_scan, dict(b3, STAGES=stages), W)
                out[f"B3 {name} atomic"] = build(scan_v2_bwd._bwd_scan, dict(b3, STAGES=3, ATOMIC=True), W)
    print(json.dumps(out))
''')


compiled = compiled_fixture(SCRIPT)


def test_tiles_put_positions_in_thread_and_channels_on_lanes(compiled):
    for name, k in compiled.items():
        family = [("1", "1"), ("8", "1"), ("2", "1"), ("4", "1")]
        if name == "B3 bdl lanes8":  # T·lanes > 32: dB/dC are tl.sums, whose [T, lanes] results have small layouts
            family = [("8", "1")]
        for size0, size1, tpw0, tpw1, w0, w1 in k["layouts"]:
            if (size0, size1) in family:  # the tile family
                assert (tpw0, tpw1, w0) == ("1", "32", "1"), f"{name}: positions across lanes or warps: {k}"
        if "lanes" in name:  # the tiles' vector rows: T positions a thread, columns (channel, lane) on lanes
            assert ("8", "1", "1", "32", "1", "4") in [tuple(x) for x in k["layouts"]], (name, k)


def test_forward_has_no_cross_lane_work_and_no_spills(compiled):
    for name in ("F3 bdl", "F3 bld"):
        k = compiled[name]
        assert k["shfl"] == 0 and k["spills"] == 0 and k["stl"] == 0, (name, k)
        assert k["mufu"] >= 8 * 16, (name, k)  # at least one exp2 per (position, state) of a tile


def test_stop_summaries_crosses_lanes_only_for_its_stop_test(compiled):
    """scan_v2_fwd._fwd_summary_tail and scan_v2_bwd._bwd_summary_head: in-thread tile scans, plus one max over the
    program's channels per tile (5 shuffles within a warp and 2 more across the 4 warps' partial maxima), no
    spills."""
    for name in ("F1tail bdl", "F1tail bld", "B1head bdl", "B1head bld"):
        k = compiled[name]
        assert k["spills"] == 0 and k["stl"] == 0 and k["shfl"] <= 8, (name, k)
        assert k["mufu"] >= 8 * 16, (name, k)


def test_backward_uses_the_butterfly_and_does_not_spill(compiled):
    for name in ("B3 bdl", "B3 bld"):
        k = compiled[name]
        assert k["spills"] == 0 and k["stl"] == 0, (name, k)
        # one loop iteration per state: 2 reductions of T = 8 rows, T - 1 + (5 - 3) = 9 shuffles each
        assert k["shfl"] == 18, (name, k)


def test_lanes_do_not_spill_and_compute_per_channel_work_once(compiled):
    """With lanes a thread holds 16 / lanes states (fewer registers) and takes 16 / lanes exp2 per position, and Δ's
    softplus and the gate's sigmoid are split over a channel's lanes and shared (tiles.softplus_lanes: shuffles at
    lanes 2, shared memory beyond), so the forward's MUFU work per tile is 8·(16 + 4) / lanes (+1), not
    8·(16 / lanes + 4). Its cross-lane steps: y's sum over the lanes, 8·log2(lanes) shuffles (tiles.lane_sum), and
    those exchanges. The backward also adds Σ g·B and Σ A·g·a·h over the lanes (3·8·log2(lanes) shuffles a tile) and,
    while 8·lanes <= 32, sums dB/dC with the butterfly minus its low log2(lanes) rounds (7 + 5 - log2(8·lanes)
    shuffles a reduction, two a state step); at lanes 8 with tl.sum."""
    for NL in LANES:
        log_nl = NL.bit_length() - 1
        f3 = compiled[f"F3 bdl lanes{NL}"]
        assert f3["spills"] == 0 and f3["stl"] == 0 and f3["regs"] < compiled["F3 bdl"]["regs"], (NL, f3)
        assert 8 * 16 // NL <= f3["mufu"] <= 8 * 20 // NL + 1, (NL, f3)
        assert 8 * log_nl <= f3["shfl"] <= 8 * log_nl + 16, (NL, f3)
        for name in (f"F1tail bdl lanes{NL}", f"B1head bdl lanes{NL}", f"B3 bdl lanes{NL}"):
            k = compiled[name]
            assert k["spills"] == 0 and k["stl"] == 0, (name, k)
            assert k["shfl"] <= 8 + 16 or name.startswith("B3"), (name, k)  # the stop test (and exchanges)
        if 8 * NL <= 32:
            want = 2 * (7 + 5 - log_nl - 3) + 3 * 8 * log_nl
            assert want <= compiled[f"B3 bdl lanes{NL}"]["shfl"] <= want + 16, NL


def test_atomic_dB_dC_sums_compile_to_reductions_without_spilling(compiled):
    """bwd_atomic (the default, with the default 3 stages): the dB/dC rows become global reductions (RED), none in
    the partials' launch, and the kernel still spills nothing, in both layouts."""
    for layout in ("bdl", "bld"):
        assert compiled[f"B3 {layout} stages3"]["red"] == 0
        atomic = compiled[f"B3 {layout} atomic"]
        assert atomic["red"] > 0 and atomic["spills"] == 0 and atomic["stl"] == 0, (layout, atomic)


def test_pipelined_backward_loads_ahead_without_spilling(compiled):
    """bwd_stages 2 and 3: Triton's pipeliner turns the state loop's row loads into asynchronous copies (LDGSTS),
    issued one or two states ahead, in both layouts, and the registers they take in flight still fit without
    spilling; one stage (no pipelining) has none."""
    for layout in ("bdl", "bld"):
        plain = compiled[f"B3 {layout}"]
        assert plain["cp_async"] == 0, plain
        for stages in (2, 3):
            piped = compiled[f"B3 {layout} stages{stages}"]
            assert piped["cp_async"] > 0, (layout, stages, piped)
            assert piped["spills"] == 0 and piped["stl"] == 0, (layout, stages, piped)
