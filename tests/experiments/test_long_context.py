"""Issue 19's experiments run at tiny CPU sizes (`--cpu-smoke`), and their report reads what they wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "experiments" / "long_context"


def run(script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.timeout(600)
def test_long_context_experiments_cpu_smoke(tmp_path):
    rows = tmp_path / "rows"
    run("run.py", "chrx", "--cpu-smoke", "--out", str(tmp_path / "runs"), "--rows", str(rows))
    run("run.py", "species", "--cpu-smoke", "--out", str(tmp_path / "runs"), "--rows", str(rows))
    chrx = [json.loads(line) for line in (rows / "chrx.jsonl").read_text().splitlines()]
    # every model scored on the same held-out bases, whatever its window
    assert [r["window_bp"] for r in chrx] == [64, 4096]
    assert len({(r["eval_start"], r["scored_bases"]) for r in chrx}) == 1
    assert all(0 < r["bits_per_base"] < 5 and r["command"].startswith("mambadna pretrain ") for r in chrx)
    # the finished runs scored again at other windows, not retrained; a model scored at its own window agrees
    run("run.py", "chrx", "--cpu-smoke", "--out", str(tmp_path / "runs"), "--rows", str(tmp_path / "rescored"),
        "--rescore", "--eval-windows", "6,12")
    again = [json.loads(line) for line in (tmp_path / "rescored" / "chrx.jsonl").read_text().splitlines()]
    assert [r["summary"]["train_time_s"] for r in again] == [r["summary"]["train_time_s"] for r in chrx]
    assert [sorted(map(int, r["bits_at"])) for r in again] == [[64, 4096], [64, 4096]]
    assert abs(again[0]["bits_at"]["64"] - chrx[0]["bits_per_base"]) < 1e-6
    assert "| trained at \\ scored at | 2^6 | 2^12 |" in run("report.py", str(tmp_path / "rescored"))
    species = [json.loads(line) for line in (rows / "species.jsonl").read_text().splitlines()]
    kmers = [r for r in species if r["kind"] == "kmer"]
    models = [r for r in species if r["kind"] == "model" and r["status"] == "ok"]
    # each fine-tune's row with finetune's own test is written before its grid, then again with the grid
    trained = [r for r in species if r["kind"] == "model" and r["status"] == "trained"]
    assert [r["train_bp"] for r in trained] == [r["train_bp"] for r in models] == [64, 8192]
    assert [r["own_test"] for r in trained] == [r["own_test"] for r in models]
    assert all(0 <= r["own_test"]["accuracy"] <= 1 and "grid" not in r for r in trained)
    assert [r["test_bp"] for r in kmers] == [64, 8192]
    # the train-length x test-length grid; the 8 kb run went through the automatic curriculum (more bases a step
    # at its last stage: two windows accumulated for two classes)
    assert [sorted(map(int, r["grid"])) for r in models] == [[64, 8192], [64, 8192]]
    assert models[1]["bases_trained"] > models[1]["steps"] * 8192
    # a pretrained row: the backbone sees the training strains only, and the fine-tune starts from it
    run("run.py", "species", "--cpu-smoke", "--out", str(tmp_path / "runs"), "--rows", str(rows), "--windows", "6",
        "--test-windows", "6,13", "--pretrain-window", "6", "--part", "models", "--seed", "1",
        "--set", "optim.lr=0.002", "--tag", "lr2")
    pre = [json.loads(line) for line in (rows / "species_pre6_seed1_lr2.jsonl").read_text().splitlines()]
    pre = [r for r in pre if r["status"] == "ok"]
    assert sorted(map(int, pre[0]["grid"])) == [64, 8192] and pre[0]["pretrained"].endswith("pretrain_L6/model")
    assert pre[0]["seed"] == 1 and pre[0]["lr"] == 0.002 and "--set train.seed=1" in pre[0]["command"]
    strains = (tmp_path / "runs" / "pretrain_data" / "training_strains.fa").read_text()
    assert "_train" in strains and "_test" not in strains
    report = run("report.py", str(rows))
    assert "| Mamba 2^13 |" in report and "k-mer 4..6" in report and (rows / "chrx_bits_vs_window.png").is_file()
    assert "pretrained at 2^6" in report
    assert "finetune's own test" in report and "| 2^13 | scratch |" in report and "| trained |" not in report


@pytest.mark.timeout(300)
def test_chrx_processes_side_by_side_share_one_rows_file(tmp_path):
    """gpu_run.sh's chrX groups: several run.py processes append to one chrx.jsonl (under a lock); --micro-bp splits
    a step into smaller micro-batches at the same bases a step; --set reaches every chrX run."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    common = [sys.executable, str(SCRIPTS / "run.py"), "chrx", "--cpu-smoke", "--out", str(tmp_path / "runs"),
              "--rows", str(tmp_path / "rows")]
    procs = [subprocess.Popen([*common, "--windows", "6", "--micro-bp", "8", "--set", "train.seed=3"], cwd=REPO,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
             subprocess.Popen([*common, "--windows", "7"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)]
    for p in procs:
        _, err = p.communicate(timeout=280)
        assert p.returncode == 0, err[-3000:]
    chrx = {r["window_bp"]: r for r in map(json.loads, (tmp_path / "rows" / "chrx.jsonl").read_text().splitlines())}
    assert sorted(chrx) == [64, 128] and all(r["status"] == "ok" for r in chrx.values())
    # 2^10 bases a step either way: 4 windows of 64 a micro-batch, 4 accumulated (the smoke's default: 4 of 128, 2)
    assert "data.batch_size=4 " in chrx[64]["command"] and "accumulate_grad_batches=4 " in chrx[64]["command"]
    assert "data.batch_size=4 " in chrx[128]["command"] and "accumulate_grad_batches=2 " in chrx[128]["command"]
    assert "--set train.seed=3" in chrx[64]["command"] and "train.seed" not in chrx[128]["command"]
    assert chrx[64]["bases_trained"] == chrx[128]["bases_trained"]
