"""Every selective-scan script in experiments/ runs end to end at tiny sizes (--cpu-smoke), so that a script broken
by a kernel change fails CI instead of the next GPU session. Triton kernels run in its interpreter there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["bench_scan.py", "check_scan_gpu.py", "profile_scan.py", "bench_cpu_scan.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_runs_in_cpu_smoke_mode(script, tmp_path):
    pytest.importorskip("triton")
    out = tmp_path / "out"
    args = {"bench_scan.py": ["--out", str(out)], "check_scan_gpu.py": ["--json", str(out)],
            "profile_scan.py": ["--out", str(out)], "bench_cpu_scan.py": ["--out", str(out)]}[script]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, str(ROOT / "experiments" / script), "--cpu-smoke", *args], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{script} --cpu-smoke failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    assert out.exists() and out.stat().st_size > 0, f"{script} wrote nothing to {out}"
