"""A live command holds its output folder: every other command into it is refused with one `error:` line naming
the holder's pid, and a holder that died (a crash, SIGKILL) leaves nothing stuck. Tested with real processes."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mambadna import cli, files
from mambadna.config import tiny
from mambadna.model import MambaLM
from mambadna.run_config import PretrainConfig, save_config

pytestmark = pytest.mark.usefixtures("single_thread")
REPO = Path(__file__).resolve().parents[1]
HOLD = ("import sys, time\nfrom mambadna.files import lock_folder\nlock_folder(sys.argv[1], 'pretrain')\n"
        "print('held', flush=True)\ntime.sleep(300)\n")


def _spawn(*argv: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, stdin=subprocess.DEVNULL)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("locks")
    torch.manual_seed(0)
    MambaLM(tiny(d_model=16, d_state=4)).save_pretrained(root / "lm")
    (root / "small.fa").write_text(">a\n" + "ACGT" * 100 + "\n>b\n" + "GATTACA" * 40 + "\n")
    return root


@pytest.fixture
def held_run(tmp_path):
    """A run folder (as a run leaves it) held by another live process; yields (folder, pid)."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    save_config(PretrainConfig(out_dir=str(run)), run / "run_config.json")
    (run / "checkpoints" / "step-00000002.ckpt").write_bytes(b"weights")
    (run / "logs").mkdir()
    (run / "logs" / "metrics.csv").write_text("step,loss\n1,1.0\n")
    proc = _spawn("-c", HOLD, str(run))
    try:
        assert proc.stdout.readline().strip() == "held"
        yield run, proc
    finally:
        _kill(proc)


COMMANDS = {
    "second pretrain": lambda run, w: ["pretrain", "--out", run, "--steps", "2"],
    "--resume": lambda run, w: ["pretrain", "--out", run, "--resume"],
    "--overwrite": lambda run, w: ["pretrain", "--out", run, "--overwrite"],
    "--overwrite delete": lambda run, w: ["pretrain", "--out", run, "--overwrite", "delete"],
    "finetune": lambda run, w: ["finetune", "--out", run, "--overwrite"],
    "embed": lambda run, w: ["embed", w / "lm", w / "small.fa", "--out", run],
    "evaluate": lambda run, w: ["evaluate", w / "lm", "--genome", w / "small.fa", "--out", run],
}


def test_every_command_into_a_held_folder_is_refused_naming_the_pid(held_run, inputs, capsys):
    run, proc = held_run
    before = _hashes(run)
    for name, make in COMMANDS.items():
        capsys.readouterr()
        assert cli.main([str(a) for a in make(run, inputs)]) == 2, name
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"is in use by `mambadna pretrain` (pid {proc.pid} " in errors[0], (name, err)
        assert "Traceback" not in err
        assert _hashes(run) == before, f"{name} changed the held run's files"
    assert not list(run.parent.glob("run.old-*")), "a held run was moved aside"


def test_a_killed_holder_leaves_no_stuck_folder(held_run, inputs, capsys):
    run, proc = held_run
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert (run / files.LOCK_NAME).is_file()  # left behind by the killed process, and taken over
    out = run / "emb"
    assert cli.main(["embed", str(inputs / "lm"), str(inputs / "small.fa"), "--out", str(run)]) == 0
    assert (run / "embeddings.npy").is_file() and not (run / files.LOCK_NAME).exists()
    assert not out.exists()


def test_a_live_training_process_holds_its_folder(inputs, tmp_path, capsys):
    """Two real `mambadna` processes: a pretraining run, then a --resume and an embed into its folder."""
    run = tmp_path / "run"
    proc = _spawn("-m", "mambadna", "pretrain", "--genome", str(inputs / "small.fa"), "--out", str(run), "--steps",
                  "100000", "--window-bp", "32", "--batch-size", "2", "--set", "model.d_model=8", "--set",
                  "model.d_state=4", "--set", "model.n_layer=1", "--set", "data.val_windows=2", "--set",
                  "data.test_windows=2", "--no-progress")
    try:
        deadline = time.time() + 240
        while not (run / "run_config.json").is_file():
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() else "slow"
            time.sleep(0.2)
        info = json.loads((run / files.LOCK_NAME).read_text())
        assert info["pid"] == proc.pid and info["command"] == "pretrain"
        for argv in (["pretrain", "--out", str(run), "--resume"],
                     ["embed", str(inputs / "lm"), str(inputs / "small.fa"), "--out", str(run)]):
            capsys.readouterr()
            assert cli.main(argv) == 2
            assert f"(pid {proc.pid} on " in capsys.readouterr().err
        assert proc.poll() is None, "the refused commands disturbed the run"
    finally:
        _kill(proc)
    assert cli.main(["embed", str(inputs / "lm"), str(inputs / "small.fa"), "--out", str(run)]) == 0


def test_a_refused_command_leaves_no_empty_out(tmp_path, capsys):
    out = tmp_path / "new" / "run"
    assert cli.main(["pretrain", "--out", str(out), "--resume"]) == 2
    assert "holds no run to continue" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_the_same_process_may_hold_a_folder_twice_and_release_removes_only_what_it_made(tmp_path):
    folder = tmp_path / "a" / "b"
    files.lock_folder(folder, "embed")
    files.lock_folder(folder, "embed")
    assert json.loads((folder / files.LOCK_NAME).read_text())["pid"] == os.getpid()
    files.release_folder(folder)
    assert not (tmp_path / "a").exists()
    kept = tmp_path / "kept"
    files.lock_folder(kept, "embed")
    (kept / "result.txt").write_text("x")
    files.release_all()
    assert (kept / "result.txt").is_file() and not (kept / files.LOCK_NAME).exists()


def test_without_flock_the_lock_file_pid_is_checked(tmp_path, monkeypatch):
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(files.fcntl, "flock", no_flock)
    folder = tmp_path / "run"
    folder.mkdir()
    proc = _spawn("-c", "import time; time.sleep(300)")
    try:
        record = {"pid": proc.pid, "host": os.uname().nodename, "command": "finetune", "started": "now"}
        (folder / files.LOCK_NAME).write_text(json.dumps(record))
        with pytest.raises(ValueError, match=f"pid {proc.pid}"):
            files.lock_folder(folder, "embed")
    finally:
        _kill(proc)
    files.lock_folder(folder, "embed")  # its process is gone: taken over
    assert json.loads((folder / files.LOCK_NAME).read_text())["pid"] == os.getpid()
    files.release_folder(folder)


def test_a_multi_process_run_prints_its_summary_once(monkeypatch, capsys):
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    from mambadna.commands.summary import print_summary

    print_summary("pretraining done", {"steps": 2})
    assert "pretraining done" in capsys.readouterr().out
    monkeypatch.setattr(rank_zero_only, "rank", 1)  # what a relaunched DDP process sees
    print_summary("pretraining done", {"steps": 2})
    assert capsys.readouterr().out == ""


def test_embed_with_fewer_batches_than_devices_runs_in_fewer_processes(inputs, tmp_path, capsys):
    out = tmp_path / "emb"
    argv = ["embed", str(inputs / "lm"), str(inputs / "small.fa"), "--out", str(out), "--device", "cpu",
            "--devices", "2"]
    assert cli.main(argv) == 0
    assert "only 1 batch(es) of up to 16 sequences to deal out; using 1 process(es)" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["embeddings.npy", "index.tsv", "source.json"]
