"""Compiling kernels for an H100/H200 (sm_90) on a machine without a GPU, for the *_compile / layout tests.

Each test module's SCRIPT builds its kernels with Triton's compiler (ptxas and cuobjdump ship with Triton) and prints
one JSON line of what it measured (registers, spills, instruction counts, layouts). It runs in a subprocess: the
interpreter, which the root conftest.py switches on, cannot compile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def compile_script(script: str) -> dict:
    """Run `script` without TRITON_INTERPRET, with the checkout importable; its last stdout line as JSON. Skips
    where this Triton cannot compile for sm_90, or takes over 10 minutes."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    try:
        res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.skip("compiling for sm_90 took over 10 minutes")
    if res.returncode != 0:
        if "ptxas" in res.stderr or "No such file" in res.stderr:
            pytest.skip(f"this Triton cannot compile for sm_90 here: {res.stderr[-300:]}")
        raise AssertionError(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])
