"""Issue 19's experiments run at tiny CPU sizes (`--cpu-smoke`), and their report reads what they wrote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "experiments" / "long_context"
sys.path.insert(0, str(REPO))

from experiments.long_context import pieces as P  # noqa: E402
from mambadna import run_config as rc  # noqa: E402


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


@pytest.mark.timeout(300)
def test_chrx_run_in_pieces_resumes_to_the_same_model(tmp_path):
    """run.py --pause-after-s stops a chrX run with a checkpoint and a "paused" row; the same command continues it
    (not afresh), in place or from what pieces.py packed, to the same step and the same model as a run in one go."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    whole = subprocess.Popen([sys.executable, str(SCRIPTS / "run.py"), "chrx", "--cpu-smoke", "--out",
                              str(tmp_path / "whole"), "--rows", str(tmp_path / "whole_rows"), "--steps", "4",
                              "--windows", "6"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    runs, rows, packed = tmp_path / "runs", tmp_path / "rows", tmp_path / "pieces"
    chrx = ["run.py", "chrx", "--cpu-smoke", "--out", str(runs), "--rows", str(rows), "--steps", "4"]
    # due at once: each piece stops after its first step, and the window after a pause waits for the next call
    run(*chrx, "--windows", "6,7", "--pause-after-s", "0")
    assert "chrx_L6: continuing the paused run from step 1 of 4" in run(*chrx, "--windows", "6", "--pause-after-s", "0")
    # a piece with other settings than the first is refused in one line, before it trains
    other = rc.apply_overrides(rc.load_config(runs / "chrx_L6" / "run_config.json"), ["optim.lr=0.002"])
    with pytest.raises(SystemExit, match=r"started with other settings \(optim.lr [0-9.e-]+ -> 0.002\)"):
        P.check_same_settings(runs / "chrx_L6", other)
    run("pieces.py", "pack", str(runs), str(packed))
    with tarfile.open(packed / "piece_chrx_L6.tgz") as tar:  # the newest checkpoint only, no data
        names = tar.getnames()
    assert [n for n in names if n.endswith(".ckpt")] == ["chrx_L6/checkpoints/step-00000002.ckpt"]
    assert "chrx_L6/run_config.json" in names and "chrx_L6/pieces.json" in names
    assert (runs / "chrx_L6" / "checkpoints" / "step-00000001.ckpt").is_file()
    shutil.rmtree(runs / "chrx_L6")  # the next call's machine has only the piece
    run("pieces.py", "unpack", str(packed), str(runs))
    assert "continuing the paused run from step 2 of 4" in run(*chrx, "--windows", "6")
    got = [json.loads(line) for line in (rows / "chrx.jsonl").read_text().splitlines()]
    assert [(r["window_bp"], r["status"], r.get("step")) for r in got] == [
        (64, "paused", 1), (128, "skipped: deadline", None), (64, "paused", 2), (64, "ok", None)]
    assert "bits_per_base" not in got[0] and "bits_per_base" not in got[2]
    done = got[-1]
    assert [(p["from_step"], p["to_step"]) for p in done["pieces"]] == [(0, 1), (1, 2), (2, 4)]
    # the last piece trained steps 3 and 4 only (afresh it would have trained four); the row counts every piece
    assert done["steps"] == 4 and done["summary"]["bases_trained"] == 2 * 1024 and done["bases_trained"] == 4 * 1024
    _, err = whole.communicate(timeout=280)
    assert whole.returncode == 0, err[-3000:]
    one_go = json.loads((tmp_path / "whole_rows" / "chrx.jsonl").read_text())
    assert one_go["bases_trained"] == done["bases_trained"]
    assert abs(one_go["bits_per_base"] - done["bits_per_base"]) < 1e-6
    report = run("report.py", str(rows))
    assert "| 2^6 | " in report and "paused" not in report and "| 2^7 | skipped: deadline |" in report
