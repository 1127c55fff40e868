"""The causal conv kernels (kernels/conv_triton.py) compiled for an H100/H200 (sm_90), no GPU needed.

The interpreter that runs tests/kernels/test_conv_triton.py neither compiles the kernels nor sees their layouts.
This builds them at their default launch shapes for the model's case (bf16, K = 4, x a channels-last view: channel
stride 1) in a subprocess (the root conftest.py switches the interpreter on) and checks that they compile without
spilling registers and read x and write y and dx as 128-bit vectors along the channels.
"""

from __future__ import annotations

import textwrap

import pytest
from sm90 import assert_no_spills, compiled_fixture

pytest.importorskip("triton")

SCRIPT = textwrap.dedent(r'''
    import json
    import sm90
    from mambadna.kernels import conv_triton as ct

    BF16 = {"p_x", "p_init", "p_y", "p_dy", "p_dx", "p_dinit"}
    DIV16 = {"D", "s_xb", "s_xl", "s_yb", "s_yl", "s_dyb", "s_dyl", "s_dxb", "s_dxl"}

    def build(kern, cx, warps):
        return sm90.memory_counts(sm90.build(kern, cx, warps, {nm: "*bf16" for nm in BF16}, DIV16, num_stages=1))

    common = dict(K=4, HAS_BIAS=True, SILU=True, BLOCK_D=128)
    out = {"fwd": build(ct._causal_conv_fwd, dict(common, HAS_INIT=True, BLOCK_L=ct.BLOCK_L, s_xd=1, s_yd=1),
                        ct.FWD_WARPS)}
    for init, rows in ((False, False), (True, False), (False, True)):
        cx = dict(common, HAS_INIT=init, BLOCK_L=ct.BWD_BLOCK_L, BLOCK_K=4, s_xd=1, s_dyd=1, s_dxd=1, DW_ROWS=rows)
        out[f"bwd init={init}" + (" dw_rows" if rows else "")] = build(ct._causal_conv_bwd, cx, ct.BWD_WARPS)
    print(json.dumps(out))
''')


compiled = compiled_fixture(SCRIPT)


def test_kernels_compile_without_spills(compiled):
    assert_no_spills(compiled)


def test_channels_last_rows_are_vector_loads_and_stores(compiled):
    """The forward's K shifted x tiles (two rows of 8 channels a thread each) are 128-bit loads and y's rows 128-bit
    stores; the backward's x, dy and fp32 scratch tiles too, and its dx and scratch stores."""
    assert compiled["fwd"]["ldg128"] >= 8 and compiled["fwd"]["stg128"] >= 2, compiled["fwd"]
    for name in ("bwd init=False", "bwd init=True", "bwd init=False dw_rows"):
        k = compiled[name]
        assert k["ldg128"] >= 2 * (4 + 1) + 4 * 4 and k["stg128"] >= 2 + 4, (name, k)
