"""Lightning DataModules for the datasets. The only module of mambadna.data that imports Lightning.

Changing ``window_bp`` between epochs (the length curriculum): set ``datamodule.stage_for_epoch`` (epoch ->
window, batch, accumulation, windows) or call ``set_window(window_bp, batch_size, train_windows)``, and build the
Trainer with ``reload_dataloaders_every_n_epochs=1``. Lightning then calls ``train_dataloader()`` at the start of
every epoch (before ``on_train_epoch_start``), and it builds a fresh dataset with the stage's window, batch size
and the trainer's epoch (used as the dataset's sampling epoch). The default number of windows per epoch is
bases // window_bp, so an epoch covers the same number of bases whatever the window (a curriculum stage sets its
own count). Validation
and test windows are fixed (epoch 0) and keep the window and batch the module was made with, so the metric is
comparable across epochs and is the one at the window the run asked for.

DDP: leave Lightning's ``use_distributed_sampler=True`` (default). Dataset index g always maps to its own stratum
of the genome, so the DistributedSampler's disjoint index split gives disjoint windows across ranks.

Resuming mid-epoch: the training loaders are ``ResumableLoader``s. Lightning saves their ``state_dict`` (the
sampling epoch and the batches already trained in it) in every checkpoint and hands it back on resume, and the
loader then skips those batches, so a run killed mid-epoch continues with exactly the batches it had not trained
yet rather than the start of the epoch again.

``StreamsDataModule`` (truncated BPTT) is the exception: each item of ``ContigStreams`` is already a
(batch_size, window_bp) batch of consecutive windows, so its loaders use ``batch_size=None`` and keep the order
(build the Trainer with ``use_distributed_sampler=False``; under DDP every rank builds its own streams from its rank
and the world size). Lightning calls ``train_dataloader()`` every epoch, which deals the pieces of the epoch to the
streams (``set_epoch``). Validation streams are dealt once and never reshuffled, so the metric covers the same
bases every time.
"""

from __future__ import annotations

import os
import warnings

import pytorch_lightning as pl
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from mambadna.data.batching import LengthBucketBatchSampler, PadCollate
from mambadna.data.errors import DataError, DataWarning, WindowTooLong
from mambadna.data.genome import Genome
from mambadna.data.labelled import LabelledSequenceDataset
from mambadna.data.masking import MaskedWindows, check_masking
from mambadna.data.species import SpeciesWindowDataset, read_manifest
from mambadna.data.streams import ContigStreams
from mambadna.data.windows import GenomeWindowDataset

# Windows this long or longer are a long-context run: validation may run on shorter windows than training where the
# held-out region is short (_val_window), and the length curriculum is on by default (run_config)
LONG_WINDOW_BP = 8192


class SkippableBatchSampler(BatchSampler):
    """A BatchSampler whose next pass can skip its first ``skip`` batches (indices only: no data is read for
    them) while ``len`` stays the epoch's full count, which is how Lightning counts a resumed epoch."""

    def __init__(self, sampler, batch_size: int, drop_last: bool):
        super().__init__(sampler, batch_size, drop_last)
        self.skip = 0

    def __iter__(self):
        skip, self.skip = self.skip, 0
        for i, batch in enumerate(super().__iter__()):
            if i >= skip:
                yield batch


class SkippableSampler(SequentialSampler):
    """0, 1, 2, ... with the same one-pass ``skip`` as SkippableBatchSampler (loaders whose items are batches)."""

    def __init__(self, data_source):
        super().__init__(data_source)
        self.skip = 0

    def __iter__(self):
        skip, self.skip = self.skip, 0
        return iter(range(skip, len(self.data_source)))


class ResumableLoader(DataLoader):
    """A training DataLoader with the ``state_dict`` / ``load_state_dict`` Lightning saves and restores.

    ``progress()`` returns how many batches of the current epoch have been trained (read from the trainer when a
    checkpoint is saved); the batch sampler (or, for ``batch_size=None``, the sampler) has a ``skip`` attribute."""

    def __init__(self, *args, progress=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.progress = progress

    def _epoch(self) -> int:
        holder = self.batch_sampler if hasattr(self.batch_sampler, "epoch") else self.dataset
        return int(getattr(holder, "epoch", 0))

    def state_dict(self) -> dict:
        return {"epoch": self._epoch(), "batches_done": int(self.progress()) if self.progress else 0}

    def load_state_dict(self, state: dict) -> None:
        done = int(state.get("batches_done", 0))
        skipper = self.batch_sampler if self.batch_sampler is not None else self.sampler
        if state.get("epoch") == self._epoch() and 0 < done < len(self) and hasattr(skipper, "skip"):
            skipper.skip = done


def _trained_batches(datamodule: pl.LightningDataModule):
    def progress() -> int:
        trainer = getattr(datamodule, "trainer", None)
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.ready) if trainer is not None else 0

    return progress


class _WindowDataModule(pl.LightningDataModule):
    def __init__(self, window_bp: int, batch_size: int, num_workers: int, seed: int, val_windows: int | None,
                 test_windows: int | None, train_windows: int | None, pin_memory: bool):
        super().__init__()
        self.window_bp, self.batch_size = int(window_bp), int(batch_size)
        self.num_workers, self.seed, self.pin_memory = num_workers, seed, pin_memory
        self.num_windows = {"train": train_windows, "val": val_windows, "test": test_windows}
        # validation and testing stay at the run's own window and batch while a length curriculum changes the
        # training ones: the metric is then comparable across the run, and is the one at the window asked for
        self.eval_window_bp, self.eval_batch_size = self.window_bp, self.batch_size
        self.stage_train_windows: int | None = None
        self.val_window_bp: int | None = None  # found on first use (_val_window)
        # set by a length curriculum (tasks/callbacks.py SeqLenWarmup): epoch -> (window_bp, batch_size, accumulate,
        # train_windows), read whenever an epoch's training loader is built
        self.stage_for_epoch = None
        self._warned = False
        self.set_window(window_bp, batch_size)

    def set_window(self, window_bp: int, batch_size: int | None = None, train_windows: int | None = None) -> None:
        """Train on ``window_bp`` windows (``batch_size`` a batch, ``train_windows`` an epoch instead of
        data.train_windows) from the next ``train_dataloader()`` call on; validation and test keep the window and
        batch the module was made with."""
        if int(window_bp) < 1:
            raise DataError(f"window_bp must be >= 1, got {window_bp}")
        if batch_size is not None and int(batch_size) < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        self.window_bp = int(window_bp)
        if batch_size is not None:
            self.batch_size = int(batch_size)
        self.stage_train_windows = None if train_windows is None else int(train_windows)

    def _window(self, split: str) -> int:
        if split == "train":
            return self.window_bp
        return self._val_window() if split == "val" else self.eval_window_bp

    def _val_window(self) -> int:
        """The run's window, or for a long-window run (LONG_WINDOW_BP or more) whose validation region holds none,
        the longest halving of it that fits (said once): validation is a running check, and a million-base run on
        genomes of a few megabases has no million-base validation block. A short window that does not fit is an
        error that says which fraction to raise; testing always keeps the run's window."""
        if self.val_window_bp is None:
            window = self.eval_window_bp
            while True:
                try:
                    self._dataset("val", window)
                    break
                except WindowTooLong:
                    if self.eval_window_bp < LONG_WINDOW_BP or window < 2:
                        raise
                    window //= 2
            if window != self.eval_window_bp:
                warnings.warn(f"the validation region holds no {self.eval_window_bp} bp window; validating on "
                              f"{window} bp windows (the test split keeps {self.eval_window_bp} bp)", DataWarning,
                              stacklevel=2)
            self.val_window_bp = window
        return self.val_window_bp

    def _make(self, split: str):
        return self._dataset(split, self._window(split))

    def _count(self, split: str) -> int | None:
        if split == "train" and self.stage_train_windows is not None:
            return self.stage_train_windows
        return self.num_windows[split]

    def _epoch(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.current_epoch) if trainer is not None else 0

    def _loader(self, split: str, epoch: int) -> DataLoader:
        dataset = self._make(split)
        dataset.set_epoch(epoch)
        # the dataset shuffles itself from (seed, epoch); persistent workers would keep a stale epoch/window
        if split != "train":
            return DataLoader(dataset, batch_size=self.eval_batch_size, shuffle=False, num_workers=self.num_workers,
                              pin_memory=self.pin_memory, persistent_workers=False)
        batches = SkippableBatchSampler(SequentialSampler(dataset), self.batch_size, drop_last=True)
        return ResumableLoader(dataset, batch_sampler=batches, num_workers=self.num_workers,
                               pin_memory=self.pin_memory, persistent_workers=False, progress=_trained_batches(self))

    def check_split(self, split: str) -> None:
        """Build the split's dataset now, so a window that cannot fit it is reported before training."""
        self._make(split)

    def train_windows_per_epoch(self) -> int:
        """Training windows in one epoch over all ranks (data.train_windows, default bases // window_bp)."""
        return self._make("train").num_windows

    def train_dataloader(self) -> DataLoader:
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.reload_dataloaders_every_n_epochs != 1 and not self._warned:
            warnings.warn("build the Trainer with reload_dataloaders_every_n_epochs=1: without it every epoch "
                          "reuses epoch 0's windows and set_window() has no effect", DataWarning, stacklevel=2)
            self._warned = True
        epoch = self._epoch()
        if self.stage_for_epoch is not None:
            window_bp, batch_size, _, train_windows = self.stage_for_epoch(epoch)
            self.set_window(window_bp, batch_size, train_windows)
        return self._loader("train", epoch)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", 0)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", 0)


class GenomeDataModule(_WindowDataModule):
    """Pretraining windows from one genome file (see GenomeWindowDataset for the sampling and split options)."""

    def __init__(self, genome: str | os.PathLike, window_bp: int = 1024, batch_size: int = 8, num_workers: int = 0,
                 seed: int = 0, max_n_fraction: float = 0.1, reverse_complement: bool = False, bed=None,
                 val_fraction: float = 0.1, test_fraction: float = 0.1, split_by: str = "auto", val_contigs=None,
                 test_contigs=None, train_windows: int | None = None, val_windows: int | None = None,
                 test_windows: int | None = None, pin_memory: bool = False, tokenizer=None,
                 masking: tuple[float, float, float] | None = None):
        self.genome = Genome(genome)
        self.options = dict(max_n_fraction=max_n_fraction, reverse_complement=reverse_complement, bed=bed,
                            val_fraction=val_fraction, test_fraction=test_fraction, split_by=split_by,
                            val_contigs=val_contigs, test_contigs=test_contigs, tokenizer=tokenizer)
        # (rate, mask_fraction, random_fraction): masked-LM items (mambadna.data.masking) instead of next-base ones
        self.masking = masking
        if masking is not None:
            check_masking(*masking)
        super().__init__(window_bp, batch_size, num_workers, seed, val_windows, test_windows, train_windows,
                         pin_memory)

    def _dataset(self, split: str, window_bp: int) -> GenomeWindowDataset | MaskedWindows:
        opts = dict(self.options)
        if split != "train":
            opts["reverse_complement"] = False  # evaluation sees the genome as written
        windows = GenomeWindowDataset(self.genome, window_bp, split=split, num_windows=self._count(split),
                                      seed=self.seed, **opts)
        return windows if self.masking is None else MaskedWindows(windows, *self.masking)

    def raw_split(self, split: str, num_windows: int | None = None) -> list[bytes]:
        """The raw text of a split's windows of epoch 0 (each one base longer than the window: the last input's
        target), or of its first `num_windows`: for text baselines."""
        opts = dict(self.options, reverse_complement=False)
        count = self._count(split) if num_windows is None else num_windows
        windows = GenomeWindowDataset(self.genome, self._window(split), split=split, num_windows=count,
                                      seed=self.seed, **opts)
        windows.set_epoch(0)
        return [windows.window(i)[2] for i in range(len(windows))]


class SpeciesDataModule(_WindowDataModule):
    """Species-classification windows from a manifest TSV or a folder of FASTAs (see SpeciesWindowDataset)."""

    def __init__(self, manifest: str | os.PathLike, window_bp: int = 1024, batch_size: int = 8,
                 num_workers: int = 0, seed: int = 0, max_n_fraction: float = 0.1, reverse_complement: bool = False,
                 val_fraction: float = 0.1, test_fraction: float = 0.1, split_by: str = "auto",
                 train_windows: int | None = None, val_windows: int | None = None, test_windows: int | None = None,
                 pin_memory: bool = False, tokenizer=None, min_species: int = 2):
        self.manifest = manifest
        self.class_names = sorted({r.species for r in read_manifest(manifest, min_species)})
        self.options = dict(max_n_fraction=max_n_fraction, reverse_complement=reverse_complement,
                            val_fraction=val_fraction, test_fraction=test_fraction, split_by=split_by,
                            tokenizer=tokenizer, min_species=min_species)
        super().__init__(window_bp, batch_size, num_workers, seed, val_windows, test_windows, train_windows,
                         pin_memory)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def raw_split(self, split: str, num_windows: int | None = None) -> tuple[list[bytes], list[str]]:
        """(raw sequences, class names) of a split's windows, those its loader gives (or its first `num_windows`
        of epoch 0): for text baselines."""
        if num_windows is None:
            dataset = self._make(split)
        else:
            opts = dict(self.options, reverse_complement=False)
            dataset = SpeciesWindowDataset(self.manifest, self._window(split), split=split, num_windows=num_windows,
                                           seed=self.seed, **opts)
        dataset.set_epoch(0)
        return dataset.raw_windows()

    def _dataset(self, split: str, window_bp: int) -> SpeciesWindowDataset:
        opts = dict(self.options)
        if split != "train":
            opts["reverse_complement"] = False
        return SpeciesWindowDataset(self.manifest, window_bp, split=split, num_windows=self._count(split),
                                    seed=self.seed, **opts)


class LabelledDataModule(pl.LightningDataModule):
    """Labelled sequences: ``train``/``val``/``test`` files, each a table (CSV/TSV, parquet, a ``datasets`` folder) or a
    FASTA with labels in headers.

    Batches are right-padded with an attention mask; ``bucket=True`` groups similar lengths (LengthBucketBatchSampler).
    ``set_window`` only changes the batch size (and a truncation length) so the warmup callback can call it too.
    """

    def __init__(self, train, val=None, test=None, batch_size: int = 8, num_workers: int = 0, seed: int = 0,
                 bucket: bool = True, sequence_column: str = "sequence", label_column: str = "label",
                 label_regex: str | None = None, label_key: str | None = None, pad_to_multiple_of: int | None = None,
                 tokenizer=None):
        super().__init__()
        self.batch_size, self.num_workers, self.seed, self.bucket = batch_size, num_workers, seed, bucket
        self.max_length: int | None = None
        self.stage_for_epoch = None  # as the window modules' (a labelled epoch is its file: windows are not set)
        self.pad_to_multiple_of = pad_to_multiple_of
        read = dict(tokenizer=tokenizer)
        self.datasets: dict[str, LabelledSequenceDataset] = {}
        for split, path in (("train", train), ("val", val), ("test", test)):
            if path is None:
                continue
            names = self.datasets["train"].class_names if "train" in self.datasets else None
            try:
                ds = LabelledSequenceDataset.from_path(path, sequence_column, label_column, label_regex, label_key,
                                                       class_names=names, **read)
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}: not a text file ({exc}); give a table (CSV/TSV, parquet, a datasets "
                                "folder) or a FASTA") from None
            self.datasets[split] = ds
        self.paths = {"train": train, "val": val, "test": test}
        self.class_names = self.datasets["train"].class_names
        self.pad_id = getattr(self.datasets["train"].tokenizer, "pad_id", 0)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def set_window(self, window_bp: int | None, batch_size: int | None = None,
                   train_windows: int | None = None) -> None:
        """Truncate sequences to ``window_bp`` (None: no truncation) and use ``batch_size`` from the next loader
        (``train_windows`` is for window modules: a labelled epoch is its file)."""
        self.max_length = None if window_bp is None else int(window_bp)
        if batch_size is not None:
            self.batch_size = int(batch_size)

    def raw_split(self, split: str) -> tuple[list[bytes], list[str]]:
        """(raw sequences, class names) of a split, truncated as its loader truncates them: for text baselines."""
        ds = self.datasets[split]
        return ([s[: self.max_length] if self.max_length else s for s in ds.sequences],
                [ds.class_names[i] for i in ds.labels])

    def truncation_note(self, window_bp: int) -> str | None:
        """What a window of `window_bp` cuts off: sequences longer than it are read up to it only (a sentence for
        a warning), or None when every sequence fits."""
        counts = {}
        for split, ds in self.datasets.items():  # a file given for two splits (evaluate's train = test) counts once
            longer = [n for n in ds.lengths if n > window_bp]
            if longer:
                counts[str(self.paths[split])] = f"{len(longer)} of {len(ds.lengths)} {split} sequences"
        if not counts:
            return None
        longest = max(max(ds.lengths) for ds in self.datasets.values())
        return (f"{', '.join(counts.values())} are longer than the {window_bp} bp window (the longest {longest} bp): "
                f"only their first {window_bp} bp are read; raise --window-bp (data.window_bp) to {longest} to read "
                "them whole")

    def _loader(self, split: str, train: bool) -> DataLoader | None:
        if split not in self.datasets:
            return None
        ds = self.datasets[split]
        collate = PadCollate(self.pad_id, self.pad_to_multiple_of, self.max_length)
        trainer = getattr(self, "trainer", None)
        epoch = int(trainer.current_epoch) if trainer is not None else 0
        if self.bucket:
            sampler = LengthBucketBatchSampler(ds.lengths, self.batch_size, shuffle=train, seed=self.seed)
            sampler.set_epoch(epoch)
            if train:
                return ResumableLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=self.num_workers,
                                       progress=_trained_batches(self))
            return DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=self.num_workers)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=train, collate_fn=collate,
                          num_workers=self.num_workers)

    def train_dataloader(self):
        trainer = getattr(self, "trainer", None)
        if self.stage_for_epoch is not None and trainer is not None:
            self.set_window(*self.stage_for_epoch(int(trainer.current_epoch))[:2])
        return self._loader("train", True)

    def val_dataloader(self):
        return self._loader("val", False) or []

    def test_dataloader(self):
        return self._loader("test", False) or []


class StreamsDataModule(pl.LightningDataModule):
    """``ContigStreams`` for the train and val splits of one genome (truncated-BPTT pretraining)."""

    def __init__(self, genome: str | os.PathLike, window_bp: int, batch_size: int, num_workers: int = 0,
                 seed: int = 0, tokenizer=None, val_fraction: float = 0.1, test_fraction: float = 0.1):
        super().__init__()
        self.genome = Genome(genome)
        self.window_bp, self.batch_size, self.num_workers = window_bp, batch_size, num_workers
        self.seed, self.tokenizer = seed, tokenizer
        self.split_options = dict(val_fraction=val_fraction, test_fraction=test_fraction)
        self.datasets: dict[str, ContigStreams] = {}

    def _streams(self, split: str) -> ContigStreams:
        if split not in self.datasets:
            trainer = getattr(self, "trainer", None)
            rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
            self.datasets[split] = ContigStreams(
                self.genome, self.window_bp, self.batch_size, split=split, shuffle=split == "train", seed=self.seed,
                rank=rank, world_size=world_size, tokenizer=self.tokenizer, **self.split_options)
        return self.datasets[split]

    def _stream_loader(self, dataset: ContigStreams) -> DataLoader:
        # the dataset's items are whole batches in stream order; persistent workers would keep a stale epoch
        return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=self.num_workers,
                          persistent_workers=False)

    def train_dataloader(self) -> DataLoader:
        dataset = self._streams("train")
        trainer = getattr(self, "trainer", None)
        dataset.set_epoch(int(trainer.current_epoch) if trainer is not None else 0)
        # resumable like the window loaders: the windows continue where they stopped (the carried state starts
        # from zero there, as it is not in the checkpoint)
        return ResumableLoader(dataset, batch_size=None, sampler=SkippableSampler(dataset),
                               num_workers=self.num_workers, persistent_workers=False, progress=_trained_batches(self))

    def val_dataloader(self) -> DataLoader:
        return self._stream_loader(self._streams("val"))
