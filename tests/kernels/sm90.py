"""Compiling kernels for an H100/H200 (sm_90) on a machine without a GPU, for the *_compile / layout tests.

Each test module's SCRIPT builds its kernels with `build` (Triton's compiler; ptxas and cuobjdump ship with Triton)
and prints one JSON line of what it measured (registers, spills, instruction counts, layouts). It runs in a
subprocess (`compile_script`): the interpreter, which the root conftest.py switches on, cannot compile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import re
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def build(kern, constexprs: dict, warps: int, types: dict | None = None, divisible=(), **options) -> dict:
    """Compile the @triton.jit `kern` for sm_90 -> dict(regs, spills, ops: the SASS opcodes with their modifiers,
    e.g. LDG.E.128, ttgir). Arguments not in `constexprs` take `types` (name -> Triton type), else "*fp32" for the
    p_* pointers and "i32"; the pointers and the names in `divisible` get the 16-divisibility Triton specialises
    aligned arguments with."""
    import triton
    from triton.backends.compiler import GPUTarget

    sig, attrs = {}, {}
    for i, nm in enumerate(kern.arg_names):
        sig[nm] = "constexpr" if nm in constexprs else (types or {}).get(nm, "*fp32" if nm.startswith("p_") else "i32")
        if sig[nm] != "constexpr" and (nm.startswith("p_") or nm in divisible):
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = triton.compiler.ASTSource(fn=kern, signature=sig, constexprs=constexprs, attrs=attrs)
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, **options})
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(k.asm["cubin"])
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True).stdout
    res = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    os.unlink(f.name)
    return dict(regs=int(re.search(r"REG:(\d+)", res).group(1)), spills=int(re.search(r"STACK:(\d+)", res).group(1)),
                ops=re.findall(r"^\s+/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)", sass, re.M),
                ttgir=k.asm["ttgir"])


def memory_counts(k: dict) -> dict:
    """What the no-spill and vector-access tests read of a `build`: registers, spill bytes, local stores and the
    128-bit global loads and stores."""
    ops = k["ops"]
    return dict(regs=k["regs"], spills=k["spills"], stl=sum(o.startswith("STL") for o in ops),
                ldg128=ops.count("LDG.E.128"), stg128=ops.count("STG.E.128"))


def compile_script(script: str) -> dict:
    """Run `script` without TRITON_INTERPRET, with the checkout importable; its last stdout line as JSON. Skips
    where this Triton cannot compile for sm_90, or takes over 10 minutes."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    env["PYTHONPATH"] = os.pathsep.join([ROOT, HERE, env.get("PYTHONPATH", "")])
    try:
        res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.skip("compiling for sm_90 took over 10 minutes")
    if res.returncode != 0:
        if "ptxas" in res.stderr or "No such file" in res.stderr:
            pytest.skip(f"this Triton cannot compile for sm_90 here: {res.stderr[-300:]}")
        raise AssertionError(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def compiled_fixture(script: str):
    """The module-scoped `compiled` fixture of a compile-test module: `compile_script(script)`, run once."""
    return pytest.fixture(scope="module", name="compiled")(lambda: compile_script(script))


def assert_no_spills(compiled: dict) -> None:
    """Every build of a `compile_script` result keeps its values in registers: no spill bytes, no local stores."""
    for name, k in compiled.items():
        assert k["spills"] == 0 and k["stl"] == 0, (name, k)
