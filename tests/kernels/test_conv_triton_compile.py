"""The causal conv kernels (kernels/conv_triton.py) compiled for an H100/H200 (sm_90), no GPU needed.

The interpreter that runs tests/kernels/test_conv_triton.py neither compiles the kernels nor sees their layouts.
This builds them at their default launch shapes for the model's case (bf16, K = 4, x a channels-last view: channel
stride 1) in a subprocess (the root conftest.py switches the interpreter on) and checks that they compile without
spilling registers and read x and write y and dx as 128-bit vectors along the channels.
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
    from mambadna.kernels import conv_triton as ct

    BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    BF16 = {"p_x", "p_init", "p_y", "p_dy", "p_dx", "p_dinit"}
    DIV16 = {"D", "s_xb", "s_xl", "s_yb", "s_yl", "s_dyb", "s_dyl", "s_dxb", "s_dxl"}

    def build(kern, cx, warps):
        sig, attrs = {}, {}
        for i, nm in enumerate(kern.arg_names):
            sig[nm] = "constexpr" if nm in cx else ("*bf16" if nm in BF16 else "*fp32") if nm.startswith("p_") else "i32"
            if sig[nm] != "constexpr" and (nm.startswith("p_") or nm in DIV16):
                attrs[(i,)] = [["tt.divisibility", 16]]
        src = triton.compiler.ASTSource(fn=kern, signature=sig, constexprs=cx, attrs=attrs)
        k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": 1})
        with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
            f.write(k.asm["cubin"])
        sass = subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", f.name], capture_output=True, text=True).stdout
        res = subprocess.run([os.path.join(BIN, "cuobjdump"), "--dump-resource-usage", f.name], capture_output=True,
                             text=True).stdout
        ops = re.findall(r"^\s+/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)", sass, re.M)
        return dict(regs=int(re.search(r"REG:(\d+)", res).group(1)), spills=int(re.search(r"STACK:(\d+)", res).group(1)),
                    stl=sum(o.startswith("STL") for o in ops), ldg128=ops.count("LDG.E.128"),
                    stg128=ops.count("STG.E.128"))

    common = dict(K=4, HAS_BIAS=True, SILU=True, BLOCK_D=128)
    out = {"fwd": build(ct._causal_conv_fwd, dict(common, HAS_INIT=True, BLOCK_L=ct.BLOCK_L, s_xd=1, s_yd=1),
                        ct.FWD_WARPS)}
    for init in (False, True):
        cx = dict(common, HAS_INIT=init, BLOCK_L=ct.BWD_BLOCK_L, BLOCK_K=4, s_xd=1, s_dyd=1, s_dxd=1)
        out[f"bwd init={init}"] = build(ct._causal_conv_bwd, cx, ct.BWD_WARPS)
    print(json.dumps(out))
''')


@pytest.fixture(scope="module")
def compiled():
    return compile_script(SCRIPT)


def test_kernels_compile_without_spills(compiled):
    for name, k in compiled.items():
        assert k["spills"] == 0 and k["stl"] == 0, (name, k)


def test_channels_last_rows_are_vector_loads_and_stores(compiled):
    """The forward's K shifted x tiles (two rows of 8 channels a thread each) are 128-bit loads and y's rows 128-bit
    stores; the backward's x, dy and fp32 scratch tiles too, and its dx and scratch stores."""
    assert compiled["fwd"]["ldg128"] >= 8 and compiled["fwd"]["stg128"] >= 2, compiled["fwd"]
    for init in (False, True):
        k = compiled[f"bwd init={init}"]
        assert k["ldg128"] >= 2 * (4 + 1) + 4 * 4 and k["stg128"] >= 2 + 4, (init, k)
