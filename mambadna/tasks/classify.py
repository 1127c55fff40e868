"""Sequence classification: a MambaClassifier (pooled features -> Linear) with accuracy, macro-F1 and a
confusion matrix. Any backbone: causal, bidirectional or RC-equivariant (whose classifier is RC-invariant)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from mambadna.chunking import check_chunk_bp
from mambadna.model import MambaClassifier
from mambadna.objective import classification_loss
from mambadna.run_config import OptimSpec
from mambadna.tasks.optim import build_optimizer


class ClassifyTask(pl.LightningModule):
    def __init__(self, model: MambaClassifier, optim: OptimSpec, class_names: list[str],
                 freeze_backbone: bool = False, activation_checkpointing: bool = False, compile: bool = False,
                 chunk_bp: int | None = None, label_map: list[int] | None = None, segment_bp: int | None = None):
        """`label_map[i]` is the model's class index of the data's label i (evaluation data names its classes in
        its own order, or holds only some of them); None when the data's labels are the model's. `segment_bp`:
        training windows longer than it are also classified stretch by stretch (objective.classification_loss);
        validation and test score whole windows only."""
        super().__init__()
        if len(class_names) < 2:
            raise ValueError(f"classification needs at least 2 classes, the data has {len(class_names)}: "
                             f"{class_names}")
        self.model, self.optim, self.class_names = model, optim, list(class_names)
        self.lr_scale = None  # step -> lr factor, set by the command (optim.lr_full_windows)
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            for p in self.model.backbone.parameters():
                p.requires_grad_(False)
        if activation_checkpointing and chunk_bp:
            raise ValueError("activation_checkpointing does not combine with chunk_bp: chunk_bp already recomputes "
                             "each chunk in the backward")
        if chunk_bp is not None:
            check_chunk_bp(chunk_bp, model.config)  # before training starts: a non-causal model cannot run chunked
        self.model.backbone.activation_checkpointing = activation_checkpointing
        self.chunk_bp, self.segment_bp = chunk_bp, segment_bp
        # kept off the module tree so state_dict keys stay those of MambaClassifier
        object.__setattr__(self, "_loss", torch.compile(classification_loss) if compile else classification_loss)
        k = len(class_names)
        self.metrics = torch.nn.ModuleDict({
            split: torch.nn.ModuleDict({
                "accuracy": MulticlassAccuracy(k, average="micro"),
                "macro_f1": MulticlassF1Score(k, average="macro"),
            }) for split in ("train_", "val_", "test_")  # "train" is a reserved ModuleDict key prefix clash
        })
        self.confusion = MulticlassConfusionMatrix(k)
        self.register_buffer("label_map", None if label_map is None else torch.as_tensor(label_map, dtype=torch.long),
                             persistent=False)

    def on_train_epoch_start(self):
        if self.freeze_backbone:
            self.model.backbone.eval()  # frozen features: no dropout-like train behaviour, fixed statistics

    def forward(self, input_ids, attention_mask=None):
        return self.model(input_ids, attention_mask, self.chunk_bp)

    def _step(self, split: str, batch) -> torch.Tensor:
        labels = batch["label"] if self.label_map is None else self.label_map[batch["label"]]
        segment_bp = self.segment_bp if split == "train" else None
        loss, logits = self._loss(self.model, batch["input_ids"], batch.get("attention_mask"), labels, self.chunk_bp,
                                  segment_bp)
        preds = logits.argmax(-1)
        on_step = split == "train"
        kw = dict(on_step=on_step, on_epoch=not on_step, batch_size=labels.shape[0], sync_dist=not on_step)
        self.log(f"{split}/loss", loss, prog_bar=True, **kw)
        for name, metric in self.metrics[split + "_"].items():
            metric(preds, labels)
            self.log(f"{split}/{name}", metric, on_step=on_step, on_epoch=not on_step, prog_bar=name == "accuracy")
        if split == "test":
            self.confusion.update(preds, labels)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step("train", batch)

    def validation_step(self, batch, batch_idx):
        return self._step("val", batch)

    def test_step(self, batch, batch_idx):
        return self._step("test", batch)

    def on_test_epoch_start(self):
        self.confusion.reset()

    def configure_optimizers(self):
        return build_optimizer(self.model, self.optim, int(self.trainer.max_steps), self.lr_scale)
