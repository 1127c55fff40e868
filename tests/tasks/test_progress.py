"""Progress of our own (mambadna/tasks/progress.py): lines a redirected log can read, a bar on a terminal, steps
counted from the checkpoint after a resume, whatever progress-bar packages are installed."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from pytorch_lightning.callbacks import ProgressBar

from mambadna import run_config as rc
from mambadna.commands import train
from mambadna.tasks.progress import ProgressReport

REPO = Path(__file__).resolve().parents[2]
TINY = ["--window-bp", "64", "--batch-size", "4", "--model.d_model", "16", "--model.n_layer", "1",
        "--model.d_state", "4", "--set", "data.val_windows=4", "--set", "data.train_windows=16",
        "--set", "train.progress_every_s=0.001"]
LINE = re.compile(r"^step (\d+)/(\d+)  loss \d+\.\d{4}  [\d,]+ bases/s  elapsed \d+:\d\d  ETA (\d+:\d\d|-)$")


def _pretrain(out: Path, *extra: str, block_rich: bool = False) -> str:
    """stdout + stderr of a pretraining subprocess whose output goes to a file, as in a cluster job."""
    # Lightning picks its bar by this flag (RichProgressBar when rich is installed, else tqdm's)
    hide = ("import pytorch_lightning.trainer.connectors.callback_connector as c; c._RICH_AVAILABLE = False; "
            if block_rich else "")
    code = f"import sys; {hide}from mambadna.cli import main; sys.exit(main(sys.argv[1:]))"
    log = out.with_suffix(".log")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, "-c", code, "pretrain", "--out", str(out), *TINY, *extra],
                              stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO, timeout=600)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    return text


def _steps(text: str) -> list[tuple[int, int]]:
    return [(int(m.group(1)), int(m.group(2))) for m in map(LINE.match, text.splitlines()) if m]


@pytest.mark.timeout(900)
def test_redirected_log_has_progress_lines_and_resume_counts_from_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    text = _pretrain(out, "--steps", "6", block_rich=True)
    assert "\r" not in text and "\x1b" not in text  # no bar drawing in a file
    assert _steps(text) == [(s, 6) for s in range(1, 7)]
    # validation shows up in the log, every max_steps // 5 = 1 step here
    assert re.search(r"^validation at step 6/6: val/bits_per_base \d\.\d{4}  val/loss \d", text, re.M)
    resumed = _pretrain(out, "--steps", "9", "--resume")  # rich importable this time: the same lines
    assert "training 9 steps, resumed at step 6" in resumed
    assert _steps(resumed) == [(s, 9) for s in range(7, 10)]


def test_no_lightning_progress_bar_and_no_progress_turns_ours_off(tmp_path):
    cfg = rc.PretrainConfig(out_dir=str(tmp_path))
    callbacks, _ = train.run_callbacks(cfg, "pretrain", tmp_path)
    trainer = train.build_trainer(cfg.train, tmp_path, extra_callbacks=callbacks)
    assert not any(isinstance(c, ProgressBar) for c in trainer.callbacks)  # not tqdm's, not rich's
    assert sum(isinstance(c, ProgressReport) for c in trainer.callbacks) == 1
    quiet = rc.apply_overrides(cfg, ["train.progress_bar=false"])
    assert not any(isinstance(c, ProgressReport) for c in train.run_callbacks(quiet, "pretrain", tmp_path)[0])


def _fake_trainer(step: int, total: int = 100, loss: float = 1.5):
    return SimpleNamespace(global_step=step, max_steps=total, is_global_zero=True, world_size=1,
                           callback_metrics={"train/loss": torch.tensor(loss)}, sanity_checking=False,
                           state=SimpleNamespace(fn="fit"))


def test_terminal_bar_is_redrawn_in_place_and_validation_keeps_its_line(monkeypatch):
    stream = io.StringIO()
    report = ProgressReport(every_s=30, stream=stream, tty=True)
    clock = iter(range(1000))
    monkeypatch.setattr("mambadna.tasks.progress.time.monotonic", lambda: float(next(clock)))
    report.on_train_start(_fake_trainer(40), None)  # resumed at step 40
    batch = {"input_ids": torch.full((2, 8), 5)}
    for step in (41, 42):
        report.on_train_batch_end(_fake_trainer(step), None, None, batch, 0)
    trainer = _fake_trainer(42)
    trainer.callback_metrics["val/loss"] = torch.tensor(1.25)
    report.on_validation_end(trainer, None)
    report.on_train_batch_end(_fake_trainer(43), None, None, batch, 0)
    report.on_train_end(trainer, None)
    text = stream.getvalue()
    assert text.startswith("\rtraining 100 steps, resumed at step 40\n")
    assert "\r[##########..............] step 42/100  loss 1.5000  " in text  # 24 * 42 // 100 = 10 filled
    assert "\nvalidation at step 42/100: val/loss 1.2500\n" in text
    assert "ETA 0:58" in text  # 2 steps in 2 s since the resume: 58 steps left
    assert text.endswith("\n") and text.count("\x1b[K") == 3
