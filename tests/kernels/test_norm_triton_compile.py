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
from sm90 import compile_script

pytest.importorskip("triton")

SCRIPT = textwrap.dedent(r'''
    import json, os, re, subprocess, tempfile
    import triton
    from triton.backends.compiler import GPUTarget
    from mambadna.kernels import norm_triton as nt

    BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")

    def build(kern, d, x_dtype):
        block_m, block_d, warps = nt.launch_shape(d)
        cx = dict(BLOCK_M=block_m, BLOCK_D=block_d)
        types = {"p_x": x_dtype, "p_dx": x_dtype}
        sig, attrs = {}, {}
        for i, nm in enumerate(kern.arg_names):
            sig[nm] = ("constexpr" if nm in cx else "*" + types.get(nm, "fp32") if nm.startswith("p_")
                       else "fp32" if nm == "eps" else "i32")
            if nm.startswith("p_") or nm in ("D", "s_x", "s_dy"):  # as Triton specialises them at d = 256
                attrs[(i,)] = [["tt.divisibility", 16]]
        src = triton.compiler.ASTSource(fn=kern, signature=sig, constexprs=cx, attrs=attrs)
        k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
        with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
            f.write(k.asm["cubin"])
        sass = subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", f.name], capture_output=True, text=True).stdout
        res = subprocess.run([os.path.join(BIN, "cuobjdump"), "--dump-resource-usage", f.name], capture_output=True,
                             text=True).stdout
        ops = re.findall(r"^\s+/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)", sass, re.M)
        return dict(regs=int(re.search(r"REG:(\d+)", res).group(1)),
                    spills=int(re.search(r"STACK:(\d+)", res).group(1)), stl=sum(o.startswith("STL") for o in ops),
                    ldg128=ops.count("LDG.E.128"), stg128=ops.count("STG.E.128"))

    out = {}
    for d, x_dtype in ((256, "fp32"), (256, "bf16"), (nt.MAX_D, "fp32")):
        for name, kern in (("fwd", nt._fwd), ("bwd", nt._bwd)):
            out[f"{name} d={d} x={x_dtype}"] = build(kern, d, x_dtype)
    print(json.dumps(out))
''')


@pytest.fixture(scope="module")
def compiled():
    return compile_script(SCRIPT)


def test_kernels_compile_without_spills(compiled):
    for name, k in compiled.items():
        assert k["spills"] == 0 and k["stl"] == 0, (name, k)


def test_rows_are_vector_loads_and_stores(compiled):
    """At d 256 a program holds 8 rows, 8 values a thread a tensor: fp32 x and y as two 128-bit accesses a thread,
    bf16 x as one (8 x 2 bytes); the backward reads x and dy and writes dx the same way."""
    assert compiled["fwd d=256 x=fp32"]["ldg128"] >= 2 and compiled["fwd d=256 x=fp32"]["stg128"] >= 2
    assert compiled["bwd d=256 x=fp32"]["ldg128"] >= 4 and compiled["bwd d=256 x=fp32"]["stg128"] >= 2
    assert compiled["fwd d=256 x=bf16"]["ldg128"] >= 1 and compiled["fwd d=256 x=bf16"]["stg128"] >= 2
    assert compiled["bwd d=256 x=bf16"]["ldg128"] >= 3 and compiled["bwd d=256 x=bf16"]["stg128"] >= 1
