"""Running pretraining and fine-tuning: datamodule, Trainer (checkpoints, logs, precision, strategy), resume,
final save_pretrained, plots and a summary.

Layout of a run directory:
    run_config.json            the resolved config
    checkpoints/*.ckpt         Lightning checkpoints (every N steps, each epoch end, last.ckpt); --resume uses last
    logs/metrics.csv           CSV log (TensorBoard events too when tensorboard is installed)
    curves.png                 loss / metric curves
    model/                     save_pretrained (config.json + model.safetensors) + training.json
    summary.json               final metrics
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from mambadna.checkpoint import read_config
from mambadna.hf import locate
from mambadna.model import MambaClassifier, MambaLM
from mambadna.tasks.callbacks import NonFiniteLossGuard, SeqLenWarmup, doubling_stages
from mambadna.tasks.classify import ClassifyTask
from mambadna.commands.defaults import default_pretrain_genome, default_species_manifest
from mambadna.tasks.lm import LMTask
from mambadna.commands.plots import plot_curves, save_confusion
from mambadna.config import MambaConfig, tiny
from mambadna.run_config import FinetuneConfig, PretrainConfig, TrainSpec, save_config
from mambadna.data.datamodules import StreamsDataModule
from mambadna.tokenizer import tokenizer_from_name

TRAINING_INFO = "training.json"


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
                         "train.precision=bf16-mixed") from None


def build_trainer(train: TrainSpec, out_dir: Path, grad_clip: float = 0.0, extra_callbacks=(),
                  epoch_checkpoints: bool = True) -> pl.Trainer:
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    ckpt_dir = out_dir / "checkpoints"
    callbacks = [
        NonFiniteLossGuard(ckpt_dir),
        ModelCheckpoint(dirpath=ckpt_dir, filename="step{step}", auto_insert_metric_name=False,
                        every_n_train_steps=train.ckpt_every_n_steps, save_top_k=1, save_last=True),
        *extra_callbacks,
    ]
    if epoch_checkpoints:
        # an epoch-end checkpoint resumes exactly (the next epoch's windows are a function of seed and epoch)
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="epoch-end", every_n_epochs=1,
                                         save_on_train_epoch_end=True, save_top_k=1, save_last=True))
    loggers = [CSVLogger(str(out_dir), name="", version="logs")]
    if importlib.util.find_spec("tensorboard") is not None:
        from pytorch_lightning.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(str(out_dir), name="", version="tensorboard"))
    val_kwargs = ({"val_check_interval": train.val_every_n_steps, "check_val_every_n_epoch": None}
                  if train.val_every_n_steps else {})
    return pl.Trainer(
        default_root_dir=str(out_dir), max_steps=train.max_steps, max_epochs=-1, accelerator=train.accelerator,
        devices=train.lightning_devices(), strategy=train.strategy, num_nodes=train.num_nodes,
        precision=train.precision, accumulate_grad_batches=train.accumulate_grad_batches,
        gradient_clip_val=grad_clip or None, log_every_n_steps=train.log_every_n_steps, callbacks=callbacks, logger=loggers,
        enable_progress_bar=train.progress_bar, enable_model_summary=False, num_sanity_val_steps=0,
        reload_dataloaders_every_n_epochs=1, **val_kwargs,
        # TBPTT streams are already split per rank and must keep their order: no DistributedSampler
        use_distributed_sampler=not train.tbptt,
    )


def _resume_path(out_dir: Path, resume: bool) -> str | None:
    if not resume:
        return None
    last = out_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise ValueError(f"--resume: no checkpoint to resume at {last}; run without --resume to start")
    # Lightning's CSV logger would overwrite metrics.csv: keep the interrupted part beside it for the plots
    logs = out_dir / "logs"
    if (logs / "metrics.csv").is_file():
        part = 1
        while (out_dir / f"logs.part{part}").exists():
            part += 1
        logs.rename(out_dir / f"logs.part{part}")
    return str(last)


def _fit(trainer: pl.Trainer, task, datamodule, ckpt_path) -> None:
    with memory_advice():
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)


def _finish(trainer: pl.Trainer, out_dir: Path, title: str) -> Path | None:
    for logger in trainer.loggers:
        logger.save()
    parts = sorted(out_dir.glob("logs.part*/metrics.csv"), key=lambda p: int(p.parent.suffix[5:]))
    metrics = [p for p in [*parts, out_dir / "logs" / "metrics.csv"] if p.is_file()]
    if trainer.is_global_zero and metrics:
        return plot_curves(metrics, out_dir / "curves.png", title=title)
    return None


def run_pretrain(cfg: PretrainConfig, resume: bool = False) -> dict:
    from mambadna.data import GenomeDataModule

    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = _resume_path(out_dir, resume)
    genome = cfg.data.genome or str(default_pretrain_genome(out_dir))
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    model_config = cfg.model
    d = cfg.data
    tokenizer = tokenizer_from_name(model_config.tokenizer)
    if cfg.train.tbptt:
        datamodule = StreamsDataModule(genome, window_bp=d.window_bp, batch_size=d.batch_size,
                                       num_workers=d.num_workers, seed=cfg.train.seed, tokenizer=tokenizer,
                                       val_fraction=d.val_fraction, test_fraction=d.test_fraction)
    else:
        datamodule = GenomeDataModule(
            genome, window_bp=d.window_bp, batch_size=d.batch_size, num_workers=d.num_workers, seed=cfg.train.seed,
            max_n_fraction=d.max_n_fraction, reverse_complement=d.reverse_complement, train_windows=d.train_windows,
            val_windows=d.val_windows, test_windows=d.test_windows, tokenizer=tokenizer,
            val_fraction=d.val_fraction, test_fraction=d.test_fraction, split_by=d.split_by,
            masking=cfg.masking.as_tuple() if cfg.objective == "mlm" else None,
        )
    save_config(cfg, out_dir / "run_config.json")
    t = cfg.train
    task = LMTask(model_config, cfg.optim, t.activation_checkpointing, t.compile, chunk_bp=t.chunk_bp, tbptt=t.tbptt,
                  objective=cfg.objective)
    extra = []
    if cfg.train.seqlen_warmup_from_bp:
        extra.append(SeqLenWarmup(doubling_stages(cfg.train.seqlen_warmup_from_bp, d.window_bp, d.batch_size,
                                                  cfg.train.epochs_per_stage)))
    trainer = build_trainer(cfg.train, out_dir, cfg.optim.grad_clip, extra)
    _fit(trainer, task, datamodule, ckpt_path)
    val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    summary = {"out_dir": str(out_dir), "steps": trainer.global_step, **val}
    if trainer.is_global_zero:
        task.model.save_pretrained(out_dir / "model")
        (out_dir / "model" / TRAINING_INFO).write_text(json.dumps({"window_bp": d.window_bp, "genome": genome}) + "\n")
        curves = _finish(trainer, out_dir, "pretraining")
        summary.update(model_dir=str(out_dir / "model"), curves=str(curves) if curves else None)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
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
    if spec != tiny(tokenizer=spec.tokenizer):  # model.* settings changed from the default: they must match
        differ = [f"{k}: checkpoint {saved.get(k)} vs run {getattr(spec, k)}"
                  for k in ("d_model", "n_layer", "d_state", "d_conv", "expand", "bidirectional", "rc_equivariant")
                  if saved.get(k, False) != getattr(spec, k)]
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


def finetune_datamodule(cfg: FinetuneConfig, tokenizer):
    from mambadna.data import LabelledDataModule, SpeciesDataModule

    d = cfg.data
    if d.train:
        datamodule = LabelledDataModule(
            d.train, d.val or None, d.test or None, batch_size=d.batch_size, num_workers=d.num_workers,
            seed=cfg.train.seed, sequence_column=d.sequence_column, label_column=d.label_column,
            label_regex=d.label_regex or None, label_key=d.label_key or None, tokenizer=tokenizer)
        datamodule.set_window(d.window_bp, d.batch_size)
    else:
        manifest = d.manifest or str(default_species_manifest(cfg.out_dir))
        datamodule = SpeciesDataModule(
            manifest, window_bp=d.window_bp, batch_size=d.batch_size, num_workers=d.num_workers, seed=cfg.train.seed,
            max_n_fraction=d.max_n_fraction, reverse_complement=d.reverse_complement, train_windows=d.train_windows,
            val_windows=d.val_windows, test_windows=d.test_windows, tokenizer=tokenizer,
            val_fraction=d.val_fraction, test_fraction=d.test_fraction, split_by=d.split_by)
    if datamodule.num_classes < 2:
        raise ValueError(f"fine-tuning needs at least 2 classes; the training data has {datamodule.num_classes}: "
                         f"{datamodule.class_names}")
    return datamodule


def run_finetune(cfg: FinetuneConfig, resume: bool = False) -> dict:
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = _resume_path(out_dir, resume)
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    backbone = load_backbone(cfg.pretrained, cfg.model, cfg.data.window_bp) if cfg.pretrained else None
    model_config = backbone.config if backbone is not None else cfg.model
    datamodule = finetune_datamodule(cfg, tokenizer_from_name(model_config.tokenizer))
    model = MambaClassifier(model_config, datamodule.num_classes, cfg.pooling, datamodule.class_names)
    if backbone is not None:
        model.backbone.load_state_dict(backbone.state_dict())
    save_config(cfg, out_dir / "run_config.json")
    task = ClassifyTask(model, cfg.optim, datamodule.class_names, cfg.freeze_backbone,
                        cfg.train.activation_checkpointing, cfg.train.compile, cfg.train.chunk_bp)
    extra = []
    if cfg.train.seqlen_warmup_from_bp:
        extra.append(SeqLenWarmup(doubling_stages(cfg.train.seqlen_warmup_from_bp, cfg.data.window_bp,
                                                  cfg.data.batch_size, cfg.train.epochs_per_stage)))
    trainer = build_trainer(cfg.train, out_dir, cfg.optim.grad_clip, extra)
    _fit(trainer, task, datamodule, ckpt_path)
    summary = {"out_dir": str(out_dir), "steps": trainer.global_step, "classes": datamodule.class_names}
    summary.update(test_classifier(trainer, task, datamodule, out_dir))
    if trainer.is_global_zero:
        model.save_pretrained(out_dir / "model")
        (out_dir / "model" / TRAINING_INFO).write_text(
            json.dumps({"window_bp": cfg.data.window_bp, "class_names": datamodule.class_names}) + "\n")
        curves = _finish(trainer, out_dir, "fine-tuning")
        summary.update(model_dir=str(out_dir / "model"), curves=str(curves) if curves else None)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


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
