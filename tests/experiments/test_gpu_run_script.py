"""experiments/long_context/gpu_run.sh's process plan, with python3 and nvidia-smi stubbed: which run.py commands
start for each set of knobs (the GPU call itself cannot run here)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "experiments" / "long_context" / "gpu_run.sh"


def planned(tmp_path: Path, **knobs: str) -> list[str]:
    """The run.py command lines gpu_run.sh starts with these environment knobs."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir(exist_ok=True)
    calls.unlink(missing_ok=True)
    (bin_dir / "python3").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho stub\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path), "OUT": str(tmp_path / "out"),
           "LC_WORK": str(tmp_path / "work"), **knobs}
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return sorted(line for line in calls.read_text().splitlines() if "run.py" in line)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_chrx_groups_run_side_by_side_without_species(tmp_path):
    runs = planned(tmp_path, SPECIES="0", MICRO_BP="18", CHRX_WINDOWS="12,11/14", CHRX_ARGS="--set data.num_workers=3")
    assert len(runs) == 2 and all(r.split()[1] == "chrx" for r in runs)
    assert any("--windows 12,11" in r for r in runs) and any("--windows 14" in r for r in runs)
    assert all("--micro-bp 18" in r and "--set data.num_workers=3" in r for r in runs)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_species_alone_and_the_default_plan(tmp_path):
    runs = planned(tmp_path, CHRX="0", TEST_WINDOWS="10,13", SPECIES_ARGS="--windows 13 --steps 256",
                   VARIANT2_ARGS="--windows 20 --seed 2")
    assert not any(" chrx " in f" {r} " for r in runs)
    kinds = sorted(r.split("--part ")[1].split()[0] for r in runs)
    assert kinds == ["kmer", "models", "models", "models"]  # k-mers, defaults, the variant, the second variant
    assert all("--test-windows 10,13" in r for r in runs)
    assert any(r.endswith("--windows 13 --steps 256") for r in runs)
    # no knobs: one chrX process, the k-mers, the defaults and the first variant
    default = planned(tmp_path)
    assert sum(" chrx " in f" {r} " for r in default) == 1 and len(default) == 4
    assert all("--micro-bp" not in r for r in default)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_pieces_unpacked_before_the_runs_and_packed_after(tmp_path):
    runs = planned(tmp_path, SPECIES="0", CHRX_WINDOWS="20/17", CHRX_STEPS="1024", PAUSE_AFTER_S="520",
                   CHRX_PIECES=".pieces")
    assert len(runs) == 2 and all("--pause-after-s 520" in r and "--steps 1024" in r for r in runs)
    calls = (tmp_path / "calls").read_text().splitlines()
    work, out = tmp_path / "work", tmp_path / "out"
    unpack = calls.index(f"experiments/long_context/pieces.py unpack .pieces {work}")
    pack = calls.index(f"experiments/long_context/pieces.py pack {work} {out}")
    assert unpack < min(calls.index(r) for r in runs) and pack == len(calls) - 1
    # without the knobs nothing is unpacked, paused or packed
    assert planned(tmp_path, SPECIES="0")
    assert not any("pieces.py" in c or "--pause-after-s" in c for c in (tmp_path / "calls").read_text().splitlines())
