"""--resume continues the exact run: optimizer, scheduler, sampling epoch, warmup stage and, mid-epoch, the batches
not trained yet."""

import dataclasses
import json

import pytest
import pytorch_lightning as pl

from mambadna import run_config as rc
from mambadna.commands import train


class Interrupt(Exception):
    pass


class Record(pl.Callback):
    def __init__(self, stop_at=None):
        self.losses, self.shapes, self.stop_at = {}, {}, stop_at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.stop_at is not None and trainer.global_step == self.stop_at:
            raise Interrupt
        self.shapes[trainer.global_step + 1] = tuple(batch["input_ids"].shape)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"])


REAL_BUILD_TRAINER = train.build_trainer


def run(monkeypatch, out_dir, recorder, resume=False, ckpt_every=100):
    monkeypatch.setattr(train, "build_trainer",
                        lambda t, o, clip, extra=(), runtime=None, **kw: REAL_BUILD_TRAINER(t, o, clip, [*extra, recorder],
                                                                                            runtime, **kw))
    cfg = rc.apply_overrides(rc.PretrainConfig(), [
        f"out_dir={out_dir}", "model.d_model=16", "model.d_state=4", "data.window_bp=64", "data.batch_size=4",
        "data.train_windows=16", "data.val_windows=4", "train.max_steps=8", f"train.ckpt_every_n_steps={ckpt_every}",
        "train.log_every_n_steps=1", "train.progress_bar=false", "train.seqlen_warmup_from_bp=32"])
    try:
        train.run_pretrain(dataclasses.replace(cfg, resume=resume))
    except Interrupt:
        pass


@pytest.mark.parametrize("stop_at", [4, 6], ids=["epoch-end", "mid-epoch"])
def test_resume_reproduces_uninterrupted_run(tmp_path, monkeypatch, stop_at):
    full = Record()
    run(monkeypatch, tmp_path / "full", full)
    # length curriculum: epoch 0 = 32 bp x 8 for 4 steps (half the bases), then 64 bp x 4 (4 steps per epoch)
    assert full.shapes[4] == (8, 32) and full.shapes[5] == (4, 64) and full.shapes[8] == (4, 64)

    first = Record(stop_at=stop_at)  # killed at the start of the next step, just after a checkpoint
    run(monkeypatch, tmp_path / "cut", first, ckpt_every=stop_at)
    assert sorted(first.losses) == list(range(1, stop_at + 1))
    assert (tmp_path / "cut" / "checkpoints" / "last.ckpt").is_file()

    resumed = Record()
    run(monkeypatch, tmp_path / "cut", resumed, resume=True, ckpt_every=stop_at)
    assert sorted(resumed.losses) == list(range(stop_at + 1, 9))
    for step in resumed.losses:
        assert resumed.shapes[step] == full.shapes[step]
        assert resumed.losses[step] == pytest.approx(full.losses[step], rel=1e-4, abs=1e-5)
    assert (tmp_path / "cut" / "model" / "model.safetensors").is_file()
    # the best model by validation (every max_steps // 5 = 1 step) is tracked across the interruption
    full_summary, cut_summary = (json.loads((tmp_path / run / "summary.json").read_text()) for run in ("full", "cut"))
    assert cut_summary["best_step"] == full_summary["best_step"]
    assert cut_summary["best_val_loss"] == pytest.approx(full_summary["best_val_loss"], rel=1e-4)
    best_info = json.loads((tmp_path / "cut" / "model_best" / "training.json").read_text())
    assert best_info["step"] == full_summary["best_step"]
    assert (tmp_path / "cut" / "logs.part1" / "metrics.csv").is_file()  # the interrupted part's log is kept
    assert (tmp_path / "cut" / "curves.png").is_file()


def test_resume_without_checkpoint_is_an_error(tmp_path):
    cfg = rc.PretrainConfig(out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="holds no run to continue"):
        train.run_pretrain(dataclasses.replace(cfg, resume=True))
