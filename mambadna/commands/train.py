"""Running pretraining and fine-tuning: datamodule, Trainer (checkpoints, logs, precision, strategy), resume,
final save_pretrained, plots and a summary.

Layout of a run directory (the rules for reusing one are in mambadna/commands/run_dir.py):
    run_config.json            the resolved config
    checkpoints/step-N.ckpt    Lightning checkpoints (every N steps, each epoch end, on interrupt, at the end; the
                               newest train.keep_checkpoints kept; last.ckpt links to the newest); --resume uses it
    logs/metrics.csv           CSV log (TensorBoard events too when tensorboard is installed); logs.partK/ earlier
                               parts of a resumed run
    curves.png                 loss / metric curves
    model/                     save_pretrained (config.json + model.safetensors) + training.json: the last step's
                               model; a fine-tune's is the best validation's (final_model=best), and it is tested
    model_best/                the same, of the validation with the lowest val/loss (its step in training.json)
    summary.json               the newest validation's metrics, the best model's step and val/loss, model/'s step
                               (model_step), test metrics (fine-tuning), wall time, bases per second, peak GPU memory
Validation runs every train.val_every_n_steps optimizer steps (default: max_steps // 5), whatever the epoch length,
and for a fine-tune also where a length curriculum's first stage ends.
Every file is written under a temporary name and renamed into place (mambadna/files.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch

from mambadna.checkpoint import read_config
from mambadna.hf import locate
from mambadna.commands.plots import plot_curves, save_confusion
from mambadna.commands.run_dir import (BEST_MODEL, RunStart, check_checkpoint_fits, check_not_finished,
                                       continue_command, is_rank_zero, keep_interrupted_logs, read_checkpoint,
                                       start_run)
from mambadna.config import MambaConfig, tiny
from mambadna.data.datamodules import LabelledDataModule, StreamsDataModule
from mambadna.data.errors import DataError
from mambadna.files import release_folder, write_json, write_text
from mambadna.model import MambaClassifier, MambaLM
from mambadna.run_config import FinetuneConfig, PretrainConfig, RuntimeSpec, TrainSpec, save_config
from mambadna.tasks.callbacks import NonFiniteLossGuard, RunStats, SeqLenWarmup, length_curriculum
from mambadna.tasks.checkpoints import AtomicCheckpointIO, OptimizerSettingsFromConfig, RunCheckpoints, RunCSVLogger
from mambadna.tasks.classify import ClassifyTask
from mambadna.tasks.interrupts import GracefulInterrupt
from mambadna.tasks.lm import LMTask
from mambadna.tasks.progress import ProgressReport
from mambadna.tasks.validation import BestModel, StepValidation
from mambadna.threads import configure_torch_threads
from mambadna.tokenizer import tokenizer_from_name

TRAINING_INFO = "training.json"
CLASSIFIER_FIRST_FRACTION = 0.9  # a classifier's share of steps at its curriculum's first window (see run_finetune)


class TaskWarning(UserWarning):
    """A run setting that works but is probably not what was meant."""


@contextlib.contextmanager
def memory_advice():
    """Turn an out-of-memory error into a one-line message naming the knobs that reduce memory."""
    try:
        yield
    except torch.OutOfMemoryError as err:
        first = str(err).splitlines()[0] if str(err) else "out of memory"
        raise ValueError(f"out of memory ({first[:120]}). To use less memory: lower data.batch_size (and raise "
                         "train.accumulate_grad_batches to keep the batch), lower data.window_bp, set "
                         "train.activation_checkpointing=true or train.chunk_bp (pretraining), or "
                         "runtime.precision=bf16-mixed") from None


def check_accelerator(runtime: RuntimeSpec) -> None:
    """A GPU run on a machine without one, said before Lightning's 30-line traceback."""
    if runtime.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        cuda = torch.version.cuda
        build = "a CPU-only build of torch" if cuda is None else f"torch built for CUDA {cuda}"
        raise ValueError(f"runtime.accelerator={runtime.accelerator} but no GPU is visible ({build}, "
                         "torch.cuda.is_available() is False); use --accelerator cpu or auto")


def build_trainer(train: TrainSpec, out_dir: Path, grad_clip: float = 0.0, extra_callbacks=(),
                  runtime: RuntimeSpec | None = None, validate_at=()) -> pl.Trainer:
    """A Trainer writing into `out_dir`, running where `runtime` says, validating every train.val_every_n_steps
    and after the optimizer steps `validate_at`; checkpointing comes with the callbacks (see `run_callbacks`)."""
    runtime = runtime or RuntimeSpec()
    check_accelerator(runtime)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    loggers = [RunCSVLogger(str(out_dir), name="", version="logs")]
    if importlib.util.find_spec("tensorboard") is not None:
        from pytorch_lightning.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(str(out_dir), name="", version="tensorboard"))
    return pl.Trainer(
        default_root_dir=str(out_dir), max_steps=train.max_steps, max_epochs=-1, accelerator=runtime.accelerator,
        devices=runtime.lightning_devices(), strategy=runtime.strategy, num_nodes=runtime.num_nodes,
        precision=runtime.lightning_precision(torch.cuda.is_available()),
        accumulate_grad_batches=train.accumulate_grad_batches,
        gradient_clip_val=grad_clip or None, log_every_n_steps=train.log_every_n_steps,
        callbacks=[*extra_callbacks, StepValidation(train.val_interval_steps(), validate_at)], logger=loggers,
        plugins=[AtomicCheckpointIO()], enable_checkpointing=False,
        # progress is our own ProgressReport (run_callbacks): Lightning's bar changes with what is installed
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        # every train.val_every_n_steps optimizer steps, whatever the epoch and the accumulation: StepValidation
        reload_dataloaders_every_n_epochs=1, val_check_interval=1, check_val_every_n_epoch=None,
        # TBPTT streams are already split per rank and must keep their order: no DistributedSampler
        use_distributed_sampler=not train.tbptt,
    )


def run_callbacks(cfg, command: str, out_dir: Path) -> tuple[list, RunStats]:
    """The callbacks every run has: checkpoints, the NaN stop, clean interrupts, the optimizer settings on resume,
    the best model by validation, progress (unless turned off) and the speed / memory statistics (returned too,
    for the summary)."""
    ckpt_dir = out_dir / "checkpoints"
    checkpoints = RunCheckpoints(ckpt_dir, cfg.train.ckpt_every_n_steps, keep=cfg.train.keep_checkpoints)
    stats = RunStats()
    guard = NonFiniteLossGuard(ckpt_dir, continue_command(command, out_dir), cfg.optim.lr)
    best = BestModel(out_dir / BEST_MODEL, save=lambda model, folder, extra: save_model(model, folder, cfg, out_dir,
                                                                                       **extra), saved=saved_info)
    progress = [ProgressReport(cfg.train.progress_every_s)] if cfg.train.progress_bar else []
    # order matters at train end: the final checkpoint is saved before an interrupt that came late is raised
    return [guard, checkpoints, GracefulInterrupt(checkpoints), OptimizerSettingsFromConfig(), best, stats,
            *progress], stats


def save_model(model, folder: Path, cfg, out_dir: Path, **extra) -> None:
    """save_pretrained plus training.json: the window trained on and the genome (pretraining) or the classes, and
    for the best model its step and val/loss."""
    model.save_pretrained(folder)
    if isinstance(cfg, PretrainConfig):
        info = {"window_bp": cfg.data.window_bp, "genome": str(cfg.data.genome_path(out_dir))}
    else:
        info = {"window_bp": cfg.data.window_bp, "class_names": model.class_names}
    write_text(Path(folder) / TRAINING_INFO, json.dumps({**info, **extra}) + "\n")


def saved_info(folder: Path) -> dict | None:
    """A saved model's training.json, or None when it has none or it is unreadable."""
    try:
        return json.loads((Path(folder) / TRAINING_INFO).read_text())
    except (OSError, ValueError):
        return None


def _best_model(trainer: pl.Trainer) -> BestModel | None:
    """The run's BestModel callback (run_callbacks adds one), or None."""
    return next((c for c in trainer.callbacks if isinstance(c, BestModel)), None)


def validation_summary(trainer: pl.Trainer) -> dict:
    """The newest validation's metrics and the best model's step and val/loss (mambadna.tasks.BestModel)."""
    best = _best_model(trainer)
    return best.summary() if best is not None else {}


def check_data(datamodule, cfg, world_size: int, held_out=("val",), curriculum=None) -> None:
    """Before training: every held-out split has a window (Lightning would only build it after the first epoch),
    and an epoch has at least one batch (else nothing trains and max_steps is never reached), for the final
    window and every length-curriculum stage."""
    if isinstance(datamodule, (StreamsDataModule, LabelledDataModule)):
        return  # streams are batches already; labelled data keeps its last, smaller batch
    d = cfg.data
    for split in held_out:
        datamodule.check_split(split)
    # every stage as the curriculum will set it (SeqLenWarmup.stage_at), then the run's own window
    stages = [curriculum.stage_at(epoch) for epoch in range(len(curriculum.stages) - 1)] if curriculum else []
    try:
        for window_bp, batch_size, _, windows in [*stages, (d.window_bp, d.batch_size, 1, None)]:
            datamodule.set_window(window_bp, batch_size, train_windows=windows)
            windows = datamodule.train_windows_per_epoch()
            if windows < batch_size * world_size:
                devices = f" x {world_size} devices" if world_size > 1 else ""
                stage = f" (length-curriculum stage of {window_bp} bp)" if window_bp != d.window_bp else ""
                raise DataError(
                    f"an epoch has {windows} training windows of {window_bp} bp{stage} (data.train_windows; default: "
                    f"training bases // window) but a batch takes {batch_size}{devices}, so nothing would train; "
                    f"lower data.batch_size to at most {max(1, windows // world_size)}, raise data.train_windows, "
                    "or lower data.window_bp")
    finally:
        datamodule.set_window(d.window_bp, d.batch_size)


def check_resume(trainer: pl.Trainer, task, run: RunStart, class_names=None) -> None:
    """Refuse a checkpoint that cannot continue this run, before anything in the run folder is touched."""
    if run.ckpt_path is not None:
        ckpt = read_checkpoint(run.ckpt_path)
        check_checkpoint_fits(run.ckpt_path, ckpt, task.model, class_names)
        check_not_finished(run.ckpt_path, ckpt, run.out_dir, trainer.max_steps)


def _fit(trainer: pl.Trainer, task, datamodule, run: RunStart) -> None:
    if run.ckpt_path is not None:
        keep_interrupted_logs(run.out_dir)
    with memory_advice():
        trainer.fit(task, datamodule=datamodule, ckpt_path=str(run.ckpt_path) if run.ckpt_path else None,
                    weights_only=True)


def _finish(trainer: pl.Trainer, out_dir: Path, title: str) -> Path | None:
    for logger in trainer.loggers:
        logger.save()
    parts = sorted(out_dir.glob("logs.part*/metrics.csv"), key=lambda p: int(p.parent.suffix[5:]))
    metrics = [p for p in [*parts, out_dir / "logs" / "metrics.csv"] if p.is_file()]
    if trainer.is_global_zero and metrics:
        return plot_curves(metrics, out_dir / "curves.png", title=title)
    return None


def curriculum(cfg, datamodule, min_windows: int, first_fraction: float | None = None) -> SeqLenWarmup | None:
    """The length curriculum of a window run (train.seqlen_warmup_from_bp; automatic for long windows), or a single
    stage that only raises gradient accumulation to `min_windows` windows a step; None when neither applies.
    `first_fraction` is the share of the steps at the first window when train.seqlen_warmup_first_fraction is not
    set (None: equal bases for every stage). Labelled files take an explicit curriculum only, a stage an epoch
    (their epoch is the file); TBPTT streams none."""
    t, d = cfg.train, cfg.data
    if isinstance(datamodule, StreamsDataModule):
        return None
    start = t.curriculum_start(d.window_bp)
    if isinstance(datamodule, LabelledDataModule) and t.seqlen_warmup_from_bp is None:
        start = 0
    first = t.seqlen_warmup_first_fraction if t.seqlen_warmup_first_fraction is not None else first_fraction
    stages = length_curriculum(start or d.window_bp, d.window_bp, d.batch_size, t.max_steps,
                               t.accumulate_grad_batches, min_windows, t.chunk_bp, first)
    if len(stages) == 1 and stages[0][2] == t.accumulate_grad_batches:
        return None
    return SeqLenWarmup(stages)


def window_lr_scale(cfg, warmup: SeqLenWarmup | None, world_size: int):
    """optim.lr_full_windows's factor of each step (see SeqLenWarmup.lr_scale), or None when it is off; a run
    without a curriculum is one stage."""
    full = cfg.optim.lr_full_windows
    if not full:
        return None
    stages = warmup or SeqLenWarmup([(cfg.data.window_bp, cfg.data.batch_size, cfg.train.accumulate_grad_batches,
                                      None)], world_size)
    return stages.lr_scale(full)


def announce_curriculum(warmup: SeqLenWarmup | None, lr_scale=None) -> None:
    """One line a stage, so that a user who asked for a long window sees how the run gets there."""
    if warmup is None or not is_rank_zero():
        return
    lower = [lr_scale(step) if lr_scale else 1.0 for step in warmup.stage_starts()]
    parts = [f"{w} bp x {b}" + (f" x {k} accumulated" if k > 1 else "") + (f" for {s} steps" if s else " to the end")
             + (f" at lr x {f:.2g}" if f < 1 else "") for (w, b, k, s), f in zip(warmup.stages, lower)]
    print("length curriculum: " + " -> ".join(parts), flush=True)


def initial_model(model: MambaConfig, memory_bp: float) -> MambaConfig:
    """The model config a pretraining run initialises: its Δ reaching `memory_bp` bases (train.init_memory_bp; 0:
    as set), said in one line when that lowers model.dt_min. A function of the settings alone, so a resume builds
    the same config (the weights then come from the checkpoint)."""
    if not memory_bp or (new := model.with_memory(memory_bp)) is model:
        return model
    if is_rank_zero():
        print(f"initial memory: model.dt_min {model.dt_min:g} -> {new.dt_min:.3g}, so the slowest channels start out "
              f"holding {memory_bp:,.0f} bases (train.init_memory_bp; 0 keeps model.dt_min)", flush=True)
    return new


def run_pretrain(cfg: PretrainConfig) -> dict:
    started = time.perf_counter()
    configure_torch_threads()
    run = start_run(cfg.out_dir, "pretrain", cfg.resume, cfg.resume_from or None, cfg.overwrite)
    out_dir = run.out_dir
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    memory = cfg.data.window_bp / 10 if cfg.train.init_memory_bp is None else cfg.train.init_memory_bp
    model_config = initial_model(cfg.model, memory)
    d = cfg.data
    datamodule = d.datamodule("lm", tokenizer_from_name(model_config.tokenizer), out_dir, seed=cfg.train.seed,
                              masking=cfg.masking.as_tuple() if cfg.objective == "mlm" else None,
                              tbptt=cfg.train.tbptt)
    t = cfg.train
    task = LMTask(model_config, cfg.optim, t.activation_checkpointing, t.compile, chunk_bp=t.chunk_bp, tbptt=t.tbptt,
                  objective=cfg.objective)
    callbacks, stats = run_callbacks(cfg, "pretrain", out_dir)
    warmup = curriculum(cfg, datamodule, cfg.train.min_windows_per_step or 1)
    trainer = build_trainer(cfg.train, out_dir, cfg.optim.grad_clip, [*callbacks, *filter(None, [warmup])],
                            cfg.runtime)
    if warmup is not None:
        warmup.world_size = trainer.world_size
    task.lr_scale = window_lr_scale(cfg, warmup, trainer.world_size)
    check_data(datamodule, cfg, trainer.world_size, curriculum=warmup)
    announce_curriculum(warmup, task.lr_scale)
    check_resume(trainer, task, run)
    if is_rank_zero():  # the other ranks of a DDP run re-run this command
        save_config(cfg, out_dir / "run_config.json")
    _fit(trainer, task, datamodule, run)
    summary = {"out_dir": str(out_dir), "steps": trainer.global_step, **validation_summary(trainer),
               **stats.summary(trainer)}
    if trainer.is_global_zero:
        save_model(task.model, out_dir / "model", cfg, out_dir)
        curves = _finish(trainer, out_dir, "pretraining")
        summary.update(model_dir=str(out_dir / "model"), curves=str(curves) if curves else None,
                       wall_time_s=round(time.perf_counter() - started, 2))
        write_json(out_dir / "summary.json", summary)
    release_folder(out_dir)
    return summary


def load_backbone(pretrained: str | Path, spec: MambaConfig, window_bp: int) -> MambaLM:
    """A MambaLM from a save_pretrained directory, checked against the run's tokenizer and (if set) shape."""
    try:
        directory = locate(pretrained)  # a Hub id becomes its local snapshot; a transformers folder is read as is
    except FileNotFoundError as err:
        raise ValueError(str(err)) from None
    if not directory.is_dir():
        raise ValueError(f"pretrained checkpoint {directory} is not a directory (expected a save_pretrained folder, "
                         "e.g. <pretrain out_dir>/model)")
    try:
        meta = read_config(directory)
    except FileNotFoundError as err:
        raise ValueError(str(err)) from None
    saved = meta["config"]
    if saved.get("tokenizer") != spec.tokenizer:
        raise ValueError(f"{directory} was trained with the {saved.get('tokenizer')!r} tokenizer (vocabulary "
                         f"{saved.get('vocab_size')}) but this run uses {spec.tokenizer!r}; set "
                         f"model.tokenizer={saved.get('tokenizer')} or pretrain with the same tokenizer")
    default = tiny(tokenizer=spec.tokenizer)
    if spec != default:  # the model.* settings changed from the default must match; the others are not the user's
        differ = [f"{k}: checkpoint {saved.get(k)} vs run {getattr(spec, k)}"
                  for k in ("d_model", "n_layer", "d_state", "d_conv", "expand", "bidirectional", "rc_equivariant")
                  if getattr(spec, k) != getattr(default, k) and saved.get(k, False) != getattr(spec, k)]
        if differ:
            raise ValueError(f"{directory} has another model shape than the run config ({'; '.join(differ)}); "
                             "drop the model.* settings to take the checkpoint's shape")
    if meta["model_class"] != "MambaLM":
        raise ValueError(f"{directory} holds a {meta['model_class']}; fine-tuning starts from a pretrained MambaLM")
    info = directory / TRAINING_INFO
    if info.is_file():
        trained = json.loads(info.read_text()).get("window_bp")
        if trained and window_bp > trained:
            warnings.warn(f"data.window_bp {window_bp} is longer than the {trained} bp windows {directory} was "
                          "trained on; the model may not generalise to the longer context", TaskWarning, stacklevel=2)
    return MambaLM.from_pretrained(directory)


def _model_config(cfg: FinetuneConfig, resuming: bool) -> tuple[MambaConfig, MambaLM | None]:
    """(the classifier's shape, the pretrained backbone to start from); a resumed run needs no backbone weights."""
    if not cfg.pretrained:
        return cfg.model, None
    if resuming:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return MambaConfig.from_dict(read_config(cfg.pretrained)["config"]), None
        return cfg.model, None
    backbone = load_backbone(cfg.pretrained, cfg.model, cfg.data.window_bp)
    return backbone.config, backbone


def run_finetune(cfg: FinetuneConfig) -> dict:
    started = time.perf_counter()
    configure_torch_threads()
    run = start_run(cfg.out_dir, "finetune", cfg.resume, cfg.resume_from or None, cfg.overwrite)
    out_dir = run.out_dir
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    model_config, backbone = _model_config(cfg, run.ckpt_path is not None)
    # run_config.json records the shape that is trained, which a fine-tune takes from its pretrained model
    cfg = dataclasses.replace(cfg, model=model_config)
    datamodule = cfg.data.datamodule("classify", tokenizer_from_name(model_config.tokenizer), cfg.out_dir,
                                     seed=cfg.train.seed)
    model = MambaClassifier(model_config, datamodule.num_classes, cfg.pooling, datamodule.class_names)
    if backbone is not None:
        model.backbone.load_state_dict(backbone.state_dict())
    task = ClassifyTask(model, cfg.optim, datamodule.class_names, cfg.freeze_backbone,
                        cfg.train.activation_checkpointing, cfg.train.compile, cfg.train.chunk_bp,
                        segment_bp=cfg.segment_bp)
    callbacks, stats = run_callbacks(cfg, "finetune", out_dir)
    # a classifier spends 90% of its steps at the first window, where a step holds many labelled windows: on held-out
    # strains (experiments/long_context/RESULTS.md) models trained at 1 kb or 8 kb classified them perfectly at 1 Mb
    # (H200, 2026-12-06), one taken through 1 kb ... 1 Mb at equal bases per stage reached 0.84; at CPU size (three
    # seeds, 2026-12-07) accuracy at 8 kb rose with the share at 1 kb, from 0.84 at half to 0.96 at 0.9 with
    # final_model=best, above a model trained at 512 bp throughout and run at 8 kb (0.94)
    warmup = curriculum(cfg, datamodule, cfg.train.min_windows_per_step or datamodule.num_classes,
                        CLASSIFIER_FIRST_FRACTION)
    # validated where the first window's stage ends too, so that final_model=best can keep the model trained short
    # when it already classifies the run's window better than the longer training after it makes it
    first_end = [warmup.stages[0][3]] if warmup is not None and len(warmup.stages) > 1 else []
    trainer = build_trainer(cfg.train, out_dir, cfg.optim.grad_clip, [*callbacks, *filter(None, [warmup])],
                            cfg.runtime, validate_at=first_end)
    if warmup is not None:
        warmup.world_size = trainer.world_size
    task.lr_scale = window_lr_scale(cfg, warmup, trainer.world_size)
    check_data(datamodule, cfg, trainer.world_size, held_out=("val", "test"), curriculum=warmup)
    announce_curriculum(warmup, task.lr_scale)
    check_resume(trainer, task, run, datamodule.class_names)
    if is_rank_zero():  # the other ranks of a DDP run re-run this command
        save_config(cfg, out_dir / "run_config.json")
    _fit(trainer, task, datamodule, run)
    summary = {"out_dir": str(out_dir), "steps": trainer.global_step, "classes": datamodule.class_names,
               **validation_summary(trainer), **stats.summary(trainer)}
    summary["model_step"] = _final_model(cfg, trainer, model)
    summary.update(test_classifier(trainer, task, datamodule, out_dir))
    if trainer.is_global_zero:
        save_model(model, out_dir / "model", cfg, out_dir, step=summary["model_step"])
        curves = _finish(trainer, out_dir, "fine-tuning")
        summary.update(model_dir=str(out_dir / "model"), curves=str(curves) if curves else None,
                       wall_time_s=round(time.perf_counter() - started, 2))
        write_json(out_dir / "summary.json", summary)
    release_folder(out_dir)
    return summary


def _final_model(cfg: FinetuneConfig, trainer: pl.Trainer, model) -> int:
    """With final_model=best, the best validation's weights replace the last ones before the test and model/;
    returns the step of the weights the run tests and saves."""
    best = _best_model(trainer)
    step = best.restore(trainer, model) if best is not None and cfg.final_model == "best" else None
    if step is not None and is_rank_zero():
        print(f"final model: the best validation's, of step {step} (val/loss {best.best:.4g}; the last step's "
              f"{best.last_metrics.get('val/loss', float('nan')):.4g}); final_model=last keeps the last",
              flush=True)
    return trainer.global_step if step is None else step


def test_classifier(trainer: pl.Trainer, task: ClassifyTask, datamodule, out_dir: Path) -> dict:
    """Test-split accuracy / macro-F1, and the confusion matrix as PNG + CSV in out_dir."""
    with memory_advice():
        results = trainer.test(task, datamodule=datamodule, verbose=False)
    if not results:
        return {}
    metrics = {k: float(v) for k, v in results[0].items()}
    if trainer.is_global_zero:
        matrix = task.confusion.compute().cpu().numpy()
        save_confusion(matrix, task.class_names, out_dir / "confusion_matrix.png", out_dir / "confusion_matrix.csv")
        metrics["confusion_matrix"] = matrix.tolist()
    return metrics
