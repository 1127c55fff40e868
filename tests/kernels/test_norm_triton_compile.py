"""The RMSNorm kernels (kernels/norm_triton.py) compiled for an H100/H200 (sm_90), no GPU needed.

The interpreter that runs tests/kernels/test_norm_triton.py neither compiles the kernels nor sees their layouts.
This builds them at their launch shapes (`launch_shape`) for the model's widths (d_model 256: the base model's rows,
x fp32 from the residual stream or bf16, y fp32) and for the widest row they take (MAX_D), in a subprocess (the root
conftest.py switches the interpreter on), and checks that they compile without spilling registers and that at the
model's width x, dy are read and y, dx written as 128-bit vectors.
"""

from __future__ import annotations

import textwrap

import pytest
from sm90 import assert_no_spills, compiled_fixture

pytest.importorskip("triton")

SCRIPT = textwrap.dedent(r'''
    import json
    import sm90
    from mambadna.kernels import norm_triton as nt

    def build(kern, d, x_dtype):
        block_m, block_d, warps = nt.launch_shape(d)
        types = {"p_x": "*" + x_dtype, "p_dx": "*" + x_dtype, "eps": "fp32"}
        # D and the row strides: as Triton specialises them at d = 256
        return sm90.memory_counts(sm90.build(kern, dict(BLOCK_M=block_m, BLOCK_D=block_d), warps, types,
                                             ("D", "s_x", "s_dy")))

    out = {}
    for d, x_dtype in ((256, "fp32"), (256, "bf16"), (nt.MAX_D, "fp32")):
        for name, kern in (("fwd", nt._rms_norm_fwd), ("bwd", nt._rms_norm_bwd)):
            out[f"{name} d={d} x={x_dtype}"] = build(kern, d, x_dtype)
    print(json.dumps(out))
''')


compiled = compiled_fixture(SCRIPT)


def test_kernels_compile_without_spills(compiled):
    assert_no_spills(compiled)


def test_rows_are_vector_loads_and_stores(compiled):
    """At d 256 a program holds 8 rows, 8 values a thread a tensor: fp32 x and y as two 128-bit accesses a thread,
    bf16 x as one (8 x 2 bytes); the backward reads x and dy and writes dx the same way."""
    assert compiled["fwd d=256 x=fp32"]["ldg128"] >= 2 and compiled["fwd d=256 x=fp32"]["stg128"] >= 2
    assert compiled["bwd d=256 x=fp32"]["ldg128"] >= 4 and compiled["bwd d=256 x=fp32"]["stg128"] >= 2
    assert compiled["fwd d=256 x=bf16"]["ldg128"] >= 1 and compiled["fwd d=256 x=bf16"]["stg128"] >= 2
    assert compiled["bwd d=256 x=bf16"]["ldg128"] >= 3 and compiled["bwd d=256 x=bf16"]["stg128"] >= 1
