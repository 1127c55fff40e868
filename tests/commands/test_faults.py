"""Faults during training, through the CLI: SIGTERM / SIGINT / SIGKILL sent to a real training process, a full
disk, a NaN, non-finite weights; after each, `--resume` continues the same run (same schedule, same batches).

The interrupted runs are subprocesses (signals need a process of their own); the reference and the resumed
runs run in this process, on one thread like the subprocesses, so their losses can be compared step by step."""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from mambadna import cli, files
from mambadna.commands import train
from mambadna.commands.run_dir import read_checkpoint
from mambadna.data import bundled_path
from mambadna.tasks.checkpoints import step_checkpoints

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[2]
STEPS = 24
# 16 windows of 4 per epoch: 4 steps an epoch, so signals and checkpoints land mid-epoch as well as at its end
RUN = ["--set", "model.d_model=16", "--set", "model.d_state=4", "--window-bp", "64", "--batch-size", "4",
       "--set", "data.train_windows=16", "--set", "data.val_windows=4", "--set", "train.log_every_n_steps=1",
       "--ckpt-every", "3", "--no-progress"]


def losses(out_dir: Path) -> dict[int, float]:
    """{step: train loss} of every part of a run's CSV log (logs.part1, ... then logs)."""
    found = {}
    for csv_path in sorted(out_dir.glob("logs*/metrics.csv")):
        with open(csv_path, newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("train/loss"):
                    found[int(row["step"])] = float(row["train/loss"])
    return found


def pretrain(out_dir: Path, genome: Path, *extra) -> list[str]:
    return ["pretrain", "--out", str(out_dir), "--genome", str(genome), "--steps", str(STEPS), *RUN, *extra]


@pytest.fixture(scope="module")
def genome(tmp_path_factory):
    path = tmp_path_factory.mktemp("genome") / "lambda.fa"
    path.write_bytes(bundled_path("lambda").read_bytes())
    return path


@pytest.fixture(scope="module")
def reference(genome, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses (OMP_NUM_THREADS=1), so the sums add up in the same order
    try:
        assert cli.main(pretrain(out, genome)) == 0
    finally:
        torch.set_num_threads(threads)
    found = losses(out)
    assert sorted(found) == list(range(STEPS)), sorted(found)
    return found


def _start(argv: list[str], tmp_path: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), MAMBADNA_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "mambadna", *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _signal_at_step(procs: dict, signals: dict, dirs: dict, step: int, timeout_s: float = 240) -> None:
    """Send each process its signal as soon as it has saved the checkpoint of `step` (all watched at once, so
    none trains on far past it while another one is awaited)."""
    waiting, deadline = set(procs), time.time() + timeout_s
    while waiting and time.time() < deadline:
        for name in sorted(waiting):
            if any(s >= step for s, _ in step_checkpoints(dirs[name] / "checkpoints")):
                procs[name].send_signal(signals[name])
                waiting.discard(name)
            elif procs[name].poll() is not None:
                pytest.fail(f"{name}: training ended early ({procs[name].returncode}): {procs[name].stderr.read()}")
        time.sleep(0.02)
    for name in waiting:
        procs[name].kill()
    assert not waiting, f"no checkpoint in time: {sorted(waiting)}"


def test_sigterm_sigint_sigkill_then_resume_continues_the_same_schedule(genome, reference, tmp_path, capsys):
    signals = {"term": signal.SIGTERM, "int": signal.SIGINT, "hup": signal.SIGHUP, "kill": signal.SIGKILL}
    procs = {name: _start(pretrain(tmp_path / name, genome), tmp_path) for name in signals}  # all at once
    # and a two-process DDP run (gloo): rank 1 re-runs the command in the folder rank 0 prepared, and a SIGTERM
    # sent to rank 0 alone must stop both ranks at one step, with one checkpoint and one line
    ddp_dir = tmp_path / "ddp"
    procs["ddp"] = _start([*pretrain(ddp_dir, genome, "--steps", "400"), "--accelerator", "cpu", "--devices", "2",
                           "--strategy", "ddp"], tmp_path)
    _signal_at_step(procs, {**signals, "ddp": signal.SIGTERM}, {name: tmp_path / name for name in procs}, 6)
    ddp = procs.pop("ddp")
    _, err = ddp.communicate(timeout=120)
    assert ddp.returncode == 143, err
    stopped_at = step_checkpoints(ddp_dir / "checkpoints")[-1][0]
    assert [line for line in err.splitlines() if line.startswith("interrupted")] == [
        f"interrupted at step {stopped_at}; continue with: mambadna pretrain --out {ddp_dir} --resume"], err
    assert read_checkpoint(ddp_dir / "checkpoints" / f"step-{stopped_at:08d}.ckpt")["global_step"] == stopped_at
    for name, signum in signals.items():
        _, err = procs[name].communicate(timeout=120)
        out_dir, ckpts = tmp_path / name, step_checkpoints(tmp_path / name / "checkpoints")
        assert not list((out_dir / "checkpoints").glob(".*")), "a half-written checkpoint was left"
        for _, path in ckpts:
            read_checkpoint(path)  # every checkpoint under a real name is whole
        stopped_at = ckpts[-1][0]
        if signum == signal.SIGKILL:
            assert procs[name].returncode == -signal.SIGKILL
        else:
            assert procs[name].returncode == 128 + signum, err
            line = err.strip().splitlines()[-1]
            assert line == f"interrupted at step {stopped_at}; continue with: mambadna pretrain --out {out_dir} --resume"
            assert (out_dir / "checkpoints" / f"step-{stopped_at:08d}.ckpt").is_file()  # saved at that very step
        assert 6 <= stopped_at < STEPS
        # the printed advice, followed; --resume takes the run's saved settings, nothing else is needed
        assert cli.main(["pretrain", "--out", str(out_dir), "--resume"]) == 0
        resumed = {s: v for s, v in losses(out_dir).items() if s >= stopped_at}
        assert sorted(resumed) == list(range(stopped_at, STEPS)), name
        for step, value in resumed.items():
            assert value == pytest.approx(reference[step], rel=1e-4, abs=1e-6), (name, step)
        assert json.loads((out_dir / "summary.json").read_text())["steps"] == STEPS


class SignalDuringValidation(pl.Callback):
    """Sends this process SIGTERM from inside the first validation after step `step`."""

    def __init__(self, step: int):
        self.step, self.sent = step, False

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not self.sent and trainer.global_step >= self.step:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_during_validation_saves_that_step_and_resumes_exactly(genome, reference, tmp_path, capsys,
                                                                       monkeypatch):
    out = tmp_path / "run"
    _extra_callback(monkeypatch, SignalDuringValidation(8))
    assert cli.main(pretrain(out, genome)) == 143
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("interrupted at step 8; continue with:")
    monkeypatch.undo()
    assert cli.main(["pretrain", "--out", str(out), "--resume"]) == 0
    found = losses(out)
    assert sorted(found) == list(range(STEPS))
    for step in range(8, STEPS):
        assert found[step] == pytest.approx(reference[step], rel=1e-4, abs=1e-6), step


class FullDisk:
    """`open` for mambadna.files whose files raise OSError(ENOSPC) once `budget` bytes were written in all."""

    def __init__(self, budget: int):
        self.left = budget

    def __call__(self, path, mode="r", **kwargs):
        return _Limited(open(path, mode, **kwargs), self)


class _Limited:
    def __init__(self, fh, disk: FullDisk):
        self._fh, self._disk = fh, disk

    def write(self, data):
        if len(data) > self._disk.left:
            self._fh.write(data[: max(0, self._disk.left)])
            self._disk.left = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._disk.left -= len(data)
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._fh.__exit__(*exc)


def test_full_disk_keeps_the_previous_checkpoints_and_resumes(genome, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert cli.main(pretrain(out, genome, "--steps", "6")) == 0
    ckpt_dir = out / "checkpoints"
    kept = {p.name: p.read_bytes() for _, p in step_checkpoints(ckpt_dir)}
    assert sorted(kept) == ["step-00000003.ckpt", "step-00000006.ckpt"]
    size = len(kept["step-00000006.ckpt"])
    # resuming rewrites run_config.json (a few KB), then the disk fills halfway through the step 9 checkpoint
    monkeypatch.setattr(files, "_open", FullDisk(8192 + size // 2))
    capsys.readouterr()
    assert cli.main(["pretrain", "--out", str(out), "--resume", "--steps", "12"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: no space left on the device while writing") and "step-00000009.ckpt" in line
    assert {p.name: p.read_bytes() for _, p in step_checkpoints(ckpt_dir)} == kept  # the earlier ones intact
    assert not [p for p in ckpt_dir.iterdir() if p.name.startswith(".")]  # no half-written file left
    assert (ckpt_dir / "last.ckpt").resolve().name == "step-00000006.ckpt"
    monkeypatch.setattr(files, "_open", open)
    assert cli.main(["pretrain", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 12


class Poison(pl.Callback):
    """After optimizer step `step`, before the checkpoint of that step is written, set the final norm's weight."""

    def __init__(self, step: int, value: float):
        self.step, self.value = step, value

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.model.norm_f.weight.fill_(self.value)


def _extra_callback(monkeypatch, callback: pl.Callback) -> None:
    """Run `callback` first, before the run's own (its checkpoints included)."""
    real = train.run_callbacks

    def run_callbacks(cfg, command, out_dir):
        callbacks, stats = real(cfg, command, out_dir)
        return [callback, *callbacks], stats

    monkeypatch.setattr(train, "run_callbacks", run_callbacks)


def _poisoned(monkeypatch, step: int, value: float) -> None:
    _extra_callback(monkeypatch, Poison(step, value))


def test_nan_stop_names_a_checkpoint_whose_weights_and_loss_were_finite(genome, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    # 3e38 is finite, so the step-6 checkpoint is written; its weights then give an infinite logit, a NaN loss
    _poisoned(monkeypatch, 6, 3e38)
    assert cli.main(pretrain(out, genome, "--steps", "12", "--lr", "1e-2")) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "loss became nan at step 6" in line
    good = out / "checkpoints" / "step-00000003.ckpt"
    assert f"whose weights and loss were finite is {good}" in line
    advice = line.split("continue with: ")[1].split(" (")[0]
    assert advice == f"mambadna pretrain --out {out} --resume --lr 0.001"
    assert (out / "checkpoints" / "nonfinite" / "step-00000006.ckpt").is_file()
    monkeypatch.undo()
    assert cli.main(advice.split()[1:]) == 0  # the advice works when followed
    resumed = {s: v for s, v in losses(out).items() if s >= 3}
    assert sorted(resumed)[-1] == 11 and all(v == v and abs(v) < 10 for v in resumed.values())
    final = read_checkpoint(out / "checkpoints" / "step-00000012.ckpt")
    assert final["optimizer_states"][0]["param_groups"][0]["initial_lr"] == pytest.approx(1e-3)


def test_non_finite_weights_are_never_checkpointed(genome, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    _poisoned(monkeypatch, 6, float("nan"))
    assert cli.main(pretrain(out, genome, "--steps", "12")) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "weights became non-finite by step 6" in line and "no checkpoint was written" in line
    assert [s for s, _ in step_checkpoints(out / "checkpoints")] == [3]


def test_overwrite_moves_the_old_run_aside_or_deletes_it(genome, tmp_path, capsys):
    out = tmp_path / "run"
    (tmp_path / "run").mkdir()
    (out / "notes.txt").write_text("mine\n")
    assert cli.main(pretrain(out, genome, "--steps", "3")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["device"] == "cpu" and summary["peak_gpu_memory_mib"] is None
    assert summary["bases_trained"] == 3 * 4 * 64 and summary["bases_per_s"] > 0 and summary["wall_time_s"] > 0
    assert "peak_gpu_memory_mib: none (ran on the cpu" in capsys.readouterr().out
    assert cli.main(pretrain(out, genome, "--steps", "3", "--overwrite")) == 0
    assert (tmp_path / "run.old-1" / "summary.json").is_file() and (tmp_path / "run.old-1" / "notes.txt").is_file()
    assert cli.main(pretrain(out, genome, "--steps", "3", "--overwrite", "delete")) == 0
    assert not (tmp_path / "run.old-2").exists()
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "curves.png", "logs", "model", "model_best",
                                                     "run_config.json", "summary.json"]

