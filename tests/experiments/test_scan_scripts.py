"""Every selective-scan script in experiments/ runs end to end at tiny sizes (--cpu-smoke), so that a script broken
by a kernel change fails CI instead of the next GPU session. Triton kernels run in its interpreter there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["bench_scan.py", "check_scan_gpu.py", "profile_scan.py", "bench_cpu_scan.py", "ncu_scan.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_runs_in_cpu_smoke_mode(script, tmp_path):
    pytest.importorskip("triton")
    out = tmp_path / "out"
    args = {"bench_scan.py": ["--out", str(out)], "check_scan_gpu.py": ["--json", str(out)],
            "profile_scan.py": ["--out", str(out)], "bench_cpu_scan.py": ["--out", str(out)],
            "ncu_scan.py": []}[script]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, str(ROOT / "experiments" / script), "--cpu-smoke", *args], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{script} --cpu-smoke failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    if script == "ncu_scan.py":  # the program ncu profiles: it only runs the scan
        assert "ran v2 fwd+bwd 2 times at (1, 32, 37, 4) bdl" in res.stdout
    else:
        assert out.exists() and out.stat().st_size > 0, f"{script} wrote nothing to {out}"


def test_gpu_scan_script_runs_every_step_in_cpu_smoke_mode(tmp_path):
    """experiments/gpu_scan.sh, the issue-20 GPU call, end to end at tiny sizes: the check, the scan benchmark, the
    model series (scan_kernel v2 with the PyTorch or Triton conv and norm) and the model's two profiles each leave
    their results, and the summary names them."""
    pytest.importorskip("triton")
    env = dict(os.environ, OUT=str(tmp_path), TRITON_INTERPRET="1", COMMIT="test")
    res = subprocess.run(["bash", str(ROOT / "experiments" / "gpu_scan.sh"), "--cpu-smoke"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "check_v2_0.log: 6 passed, 0 failed" in (tmp_path / "gpu_scan.log").read_text()
    assert "commit test" in (tmp_path / "env.txt").read_text()
    for name in ("bench_scan.json", "model_plain.json", "model_chunked.json", "profile_model.json", "details.tgz"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert len(list(tmp_path.iterdir())) <= 8  # what the device tool brings back
    for series in ("", "[norm=triton]", "[conv=triton]", "[conv=triton,norm=triton]"):
        assert f"| mamba-base{series} | chunked | 2^9 |" in res.stdout
    assert "profile_model exit 0" in res.stdout and "| matmul |" in res.stdout  # phase 4's groups in the summary
    assert "profile_model fused exit 0" in res.stdout
    assert "bench_conv exit 0" in res.stdout and 'triton {"dw_rows": false}' in res.stdout  # the conv variants


def test_kernel_defaults_ab_script_runs_both_arms_in_cpu_smoke_mode(tmp_path):
    """ab_kernel_defaults.sh: the model step with the package's kernel defaults (or a candidate, NEW) and with the
    ones they replaced, each arm in its own process with its module defaults set as named (printed by the arm)."""
    env = dict(os.environ, ROUNDS="1", OUT=str(tmp_path), OMP_NUM_THREADS="1",
               NEW="import mambadna.kernels.scan_v2 as s; s.BWD_STAGES = 2",  # a candidate on the new side
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    res = subprocess.run(["bash", str(ROOT / "experiments" / "ab_kernel_defaults.sh"), "--cpu-smoke"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    lines = (tmp_path / "summary.txt").read_text().splitlines()
    runs = [ln for ln in lines if " round 1 ab_" in ln]
    assert len(runs) == 4 and all("exit 0" in ln and "| mamba-base" in ln for ln in runs), lines
    assert all("DW_ROWS True FWD_LANES_CHANNELS_LAST 1 BWD_STAGES 2" in ln for ln in runs if ln.startswith("new"))
    assert all("DW_ROWS False FWD_LANES_CHANNELS_LAST 4 BWD_STAGES 1" in ln for ln in runs if ln.startswith("old"))
    assert (tmp_path / "ab.tgz").stat().st_size > 0
