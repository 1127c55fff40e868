"""CPU threads (mambadna/threads.py): passive OpenMP waiting unless the user chose, torch threads from the CPUs
this process may use unless OMP_NUM_THREADS is set, and the side-by-side experiment's smoke run. No timings here:
experiments/cpu_threads.py measures them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mambadna import threads

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**base, "PYTHONPATH": str(REPO), **env})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


def test_importing_mambadna_first_makes_idle_openmp_threads_sleep_unless_the_user_chose():
    code = "import os, mambadna, torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    assert _python(code) == "PASSIVE"
    assert _python(code, OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"
    # torch first: OpenMP has read its settings already, so mambadna leaves them alone
    assert _python("import os, torch, mambadna; print(os.environ.get('OMP_WAIT_POLICY'))") == "None"


def test_cgroup_quota_caps_the_thread_count(tmp_path, monkeypatch):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert threads.cpu_quota(cpu_max) == 2
    cpu_max.write_text("max 100000\n")
    assert threads.cpu_quota(cpu_max) is None
    assert threads.cpu_quota(tmp_path / "missing") is None
    monkeypatch.setattr(threads, "cpu_quota", lambda: 1)
    assert threads.cpu_threads() == 1
    monkeypatch.setattr(threads, "cpu_quota", lambda: None)
    assert threads.cpu_threads() == len(os.sched_getaffinity(0))


def test_torch_threads_follow_the_cpus_unless_omp_num_threads_is_set(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(threads, "cpu_threads", lambda: 1)
        assert threads.configure_torch_threads() == 1 == torch.get_num_threads()
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert threads.configure_torch_threads() == 2  # the user's setting stands
    finally:
        torch.set_num_threads(before)


@pytest.mark.timeout(900)
def test_side_by_side_experiment_smoke(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / "cpu_threads.py"), "--cpu-smoke", "--out",
                           str(tmp_path)], capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["steps"] == 3 and result["cpus"] >= 1 and result["commit"]
    assert [r["runs"] for r in result["results"]] == [1, 2]
    assert all(run["train_time_s"] > 0 for r in result["results"] for run in r["per_run"])
    assert "| two at once, 1 thread each | 2 |" in (tmp_path / "table.md").read_text()
