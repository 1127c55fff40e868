import math

import pytest
import pytorch_lightning as pl
import torch

from mambadna.config import tiny
from mambadna.data import GenomeDataModule, bundled_path
from mambadna.tasks.callbacks import NonFiniteLossError, NonFiniteLossGuard, SeqLenWarmup, length_curriculum
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


def test_length_curriculum_keeps_bases_per_step_and_sizes_stages_in_steps():
    stages = length_curriculum(1024, 8192, 4, max_steps=100)
    # bases per micro-batch 8192 * 4 at every stage; four stages of equal bases: 25 steps each, the last to the end
    assert stages == [(1024, 32, 1, 25), (2048, 16, 1, 25), (4096, 8, 1, 25), (8192, 4, 1, None)]
    with pytest.raises(ValueError, match="must start at"):
        length_curriculum(4096, 1024, 4, max_steps=10)


def test_length_curriculum_accumulates_to_the_minimum_windows_and_keeps_bases_per_stage():
    # a million-base classifier with batch 1 and 4 classes: the last two stages accumulate to 4 windows a step, so
    # they get a quarter / half of a plain stage's steps and every stage still trains on the same bases
    stages = length_curriculum(2**18, 2**20, 1, max_steps=70, min_windows=4)
    assert [s[:3] for s in stages] == [(2**18, 4, 1), (2**19, 2, 2), (2**20, 1, 4)]
    plain = stages[0][3]
    assert (plain, stages[1][3], stages[-1][3]) == (40, 20, None)  # then 10 steps of 4 windows to max_steps
    # too few steps for every stage: the early stages go first, the target window always trains
    short = length_curriculum(1024, 2**20, 1, max_steps=3)
    assert short[-1] == (2**20, 1, 1, None) and len(short) <= 3


def test_length_curriculum_first_fraction_front_loads_the_first_window():
    # half the steps at 1 kb, the other half over 2 kb .. 8 kb at equal bases (the last one to the end)
    stages = length_curriculum(1024, 8192, 4, max_steps=100, first_fraction=0.5)
    assert stages == [(1024, 32, 1, 50), (2048, 16, 1, 16), (4096, 8, 1, 16), (8192, 4, 1, None)]
    assert length_curriculum(1024, 1024, 4, max_steps=10, first_fraction=0.5) == [(1024, 4, 1, None)]


def test_lr_scale_lowers_the_rate_of_stages_with_few_windows_a_step():
    # stages of 16, 8 and 1 x 2 windows a step; full rate from 16 windows, sqrt of the share below
    warmup = SeqLenWarmup([(1024, 16, 1, 10), (2048, 8, 1, 5), (4096, 1, 2, None)])
    scale = warmup.lr_scale(16)
    assert [scale(s) for s in (0, 9)] == [1.0, 1.0]
    assert math.isclose(scale(10), math.sqrt(0.5)) and math.isclose(scale(14), math.sqrt(0.5))
    assert math.isclose(scale(15), math.sqrt(2 / 16)) and math.isclose(scale(10_000), math.sqrt(2 / 16))
    warmup.world_size = 2  # every rank adds its windows to the step: read when the schedule runs, not when built
    assert scale(10) == 1.0 and math.isclose(scale(15), 0.5)


def test_length_curriculum_holds_a_chunked_runs_memory():
    # a 1 Mb window in 64 kb chunks holds 64 kb of activations: a 1 kb stage takes 64 windows a micro-batch and
    # accumulates 16 of them, not one batch of 1024 windows
    stages = length_curriculum(1024, 2**20, 1, max_steps=64, chunk_bp=2**16)
    assert stages[0][:3] == (1024, 64, 16) and all(w * b <= 2**16 or w > 2**16 for w, b, _, _ in stages)
    assert all(w * b * k == 2**20 for w, b, k, _ in stages) and stages[-1] == (2**20, 1, 1, None)
    assert sum(s for *_, s in stages[:-1]) < 64


def test_warmup_changes_window_and_batch_on_schedule():
    torch.manual_seed(0)
    dm = GenomeDataModule(bundled_path("lambda"), window_bp=128, batch_size=2, train_windows=16, val_windows=2)
    shapes = Shapes()
    warmup = SeqLenWarmup([(32, 8, 1, 2), (64, 4, 1, 3), (128, 2, 1, None)])
    task = LMTask(tiny(d_model=16, d_state=4), OptimSpec())
    tiny_trainer([warmup, shapes], max_steps=8).fit(task, datamodule=dm)
    # stages sized in steps: 2 batches of 8x32, then 3 of 4x64, then 2x128 (16 windows an epoch) until max_steps
    assert shapes.seen == [(0, (8, 32))] * 2 + [(1, (4, 64))] * 3 + [(2, (2, 128))] * 3
    assert warmup.stage_at(0) == (32, 8, 1, 16) and warmup.stage_at(5) == (128, 2, 1, None)
    # validation stays at the run's own window and batch
    assert next(iter(dm.val_dataloader()))["input_ids"].shape == (2, 128)


def test_warmup_raises_accumulation_per_stage():
    dm = GenomeDataModule(bundled_path("lambda"), window_bp=64, batch_size=1, train_windows=8, val_windows=2)
    seen = []

    class Accumulation(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append((trainer.global_step, tuple(batch["input_ids"].shape), trainer.accumulate_grad_batches))

    warmup = SeqLenWarmup([(32, 2, 1, 2), (64, 1, 2, None)])
    tiny_trainer([warmup, Accumulation()], max_steps=4).fit(LMTask(tiny(d_model=16, d_state=4), OptimSpec()),
                                                           datamodule=dm)
    # two plain steps of 2x32, then steps of two accumulated 1x64 micro-batches
    assert seen == [(0, (2, 32), 1), (1, (2, 32), 1), (2, (1, 64), 2), (2, (1, 64), 2), (3, (1, 64), 2),
                    (3, (1, 64), 2)]


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
