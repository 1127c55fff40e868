import pytest
import pytorch_lightning as pl
import torch

from mambadna.config import tiny
from mambadna.data import GenomeDataModule, bundled_path
from mambadna.tasks.callbacks import NonFiniteLossError, NonFiniteLossGuard, SeqLenWarmup, doubling_stages
from mambadna.tasks.lm import LMTask
from mambadna.run_config import OptimSpec


class Shapes(pl.Callback):
    def __init__(self):
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append((trainer.current_epoch, tuple(batch["input_ids"].shape)))


def tiny_trainer(callbacks, max_steps):
    return pl.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0, reload_dataloaders_every_n_epochs=1, callbacks=callbacks)


def test_doubling_stages_keep_tokens_per_step():
    stages = doubling_stages(1024, 8192, 4, epochs_per_stage=2)
    assert stages == [(1024, 32, 2), (2048, 16, 2), (4096, 8, 2), (8192, 4, None)]
    with pytest.raises(ValueError, match="must start at"):
        doubling_stages(4096, 1024, 4)


def test_warmup_changes_window_and_batch_on_schedule():
    torch.manual_seed(0)
    dm = GenomeDataModule(bundled_path("lambda"), window_bp=128, batch_size=2, train_windows=16, val_windows=2)
    shapes = Shapes()
    warmup = SeqLenWarmup([(32, 8, 1), (64, 4, 1), (128, 2, None)])
    task = LMTask(tiny(d_model=16, d_state=4), OptimSpec())
    tiny_trainer([warmup, shapes], max_steps=8).fit(task, datamodule=dm)
    # 16 windows per epoch: 2 batches of 8x32, then 4 of 4x64, then 8x128 until max_steps
    assert shapes.seen == [(0, (8, 32))] * 2 + [(1, (4, 64))] * 4 + [(2, (2, 128))] * 2
    assert warmup.stage_at(0) == (32, 8) and warmup.stage_at(5) == (128, 2)


class PoisonAfter(pl.Callback):
    """Makes the model's output NaN from step `step` on."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step >= self.step:
            with torch.no_grad():
                pl_module.model.norm_f.weight.fill_(float("nan"))


def test_nan_guard_stops_with_step_and_checkpoint(tmp_path):
    dm = GenomeDataModule(bundled_path("lambda"), window_bp=32, batch_size=4, train_windows=8, val_windows=2)
    for step in (2, 3):
        (tmp_path / f"step-{step:08d}.ckpt").write_bytes(b"")
    task = LMTask(tiny(d_model=16, d_state=4), OptimSpec())
    # the loss of step 3 is that of the weights checkpointed as step 3: that one is set aside, step 2 is named
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at step 3; stopped; the newest checkpoint whose "
                                                 r"weights and loss were finite is .*step-00000002\.ckpt"):
        tiny_trainer([PoisonAfter(3), NonFiniteLossGuard(tmp_path)], max_steps=6).fit(task, datamodule=dm)
    assert (tmp_path / "nonfinite" / "step-00000003.ckpt").is_file() and not (tmp_path / "step-00000003.ckpt").exists()
    assert (tmp_path / "last.ckpt").resolve() == (tmp_path / "step-00000002.ckpt").resolve()
