"""The DataModule of truncated-BPTT pretraining: `mambadna.data.ContigStreams` for the train and val splits.

Each item is already a (batch_size, window_bp) batch of consecutive windows, so the loaders use
`batch_size=None` and keep the order (no shuffling, no sampler: build the Trainer with
`use_distributed_sampler=False`; under DDP every rank builds its own streams from its rank and the world size).
Lightning calls `train_dataloader()` every epoch (`reload_dataloaders_every_n_epochs=1`), which deals the pieces
of the epoch to the streams (`set_epoch`). Validation streams are dealt once and never reshuffled, so the metric
covers the same bases every time.
"""

from __future__ import annotations

import os

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from mambadna.data import ContigStreams, Genome


class StreamsDataModule(pl.LightningDataModule):
    def __init__(self, genome: str | os.PathLike, window_bp: int, batch_size: int, num_workers: int = 0,
                 seed: int = 0, tokenizer=None):
        super().__init__()
        self.genome = Genome(genome)
        self.window_bp, self.batch_size, self.num_workers = window_bp, batch_size, num_workers
        self.seed, self.tokenizer = seed, tokenizer
        self.datasets: dict[str, ContigStreams] = {}

    def _streams(self, split: str) -> ContigStreams:
        if split not in self.datasets:
            trainer = getattr(self, "trainer", None)
            rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
            self.datasets[split] = ContigStreams(
                self.genome, self.window_bp, self.batch_size, split=split, shuffle=split == "train", seed=self.seed,
                rank=rank, world_size=world_size, tokenizer=self.tokenizer)
        return self.datasets[split]

    def _loader(self, dataset: ContigStreams) -> DataLoader:
        # the dataset's items are whole batches in stream order; persistent workers would keep a stale epoch
        return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=self.num_workers,
                          persistent_workers=False)

    def train_dataloader(self) -> DataLoader:
        dataset = self._streams("train")
        trainer = getattr(self, "trainer", None)
        dataset.set_epoch(int(trainer.current_epoch) if trainer is not None else 0)
        return self._loader(dataset)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._streams("val"))
