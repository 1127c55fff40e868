"""Pretraining windows: ``window_bp`` bases drawn uniformly over a genome (or inside BED intervals).

Sampling is stratified: the valid window starts of the split are cut into ``num_windows`` equal strata and item
g of an epoch draws its start inside stratum ``perm[g]`` (``perm`` a permutation seeded by (seed, epoch)). Each
window is therefore uniform over the genome, length-weighted over contigs, and two different global indices never
draw the same window in one epoch, which is what keeps DDP ranks disjoint: rank r of W takes global indices
r, r + W, r + 2W, ... (or leave rank/world_size at 0/1 and let a DistributedSampler split the indices; the same
guarantee holds). Windows with too many N are redrawn from the item's own random stream, so everything is a
function of (seed, epoch, index) and the same with any number of DataLoader workers.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from mambadna.data.errors import DataError
from mambadna.data.genome import Genome
from mambadna.data.regions import held_out_advice, intersect, read_bed, split_regions, Interval
from mambadna.data.sampling import RegionWindows, WindowReader


def check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise DataError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")


def split_intervals(genome: Genome, split: str, bed=None, **split_kwargs) -> list[Interval]:
    """The intervals of ``split`` ("train"/"val"/"test", or "all" for the whole genome), restricted to ``bed``."""
    if split == "all":
        intervals = [Interval(n, 0, l) for n, l in genome.contigs.items()]
    elif split in ("train", "val", "test"):
        key = tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in split_kwargs.items()))
        if key not in genome.split_cache:
            genome.split_cache[key] = split_regions(genome.contigs, **split_kwargs)
        intervals = genome.split_cache[key][split]
        if not intervals:
            raise DataError(f"{genome.source_path}: the {split!r} split is empty (split settings {split_kwargs})")
    else:
        raise DataError(f"split must be 'train', 'val', 'test' or 'all', got {split!r}")
    if bed is not None:
        intervals = intersect(intervals, read_bed(bed, genome.contigs))
        if not intervals:
            raise DataError(f"{bed}: no BED interval overlaps the {split!r} split of {genome.source_path}")
    return intervals


class GenomeWindowDataset(Dataset):
    """``{"input_ids": LongTensor (window_bp,), "targets": LongTensor (window_bp,)}`` windows of one genome for
    next-base prediction: window_bp + 1 bases are read and target t is base t + 1, already aligned for the loss.

    ``num_windows`` is the epoch length over all ranks (default: bases in the split // window_bp, so an epoch
    covers about the split once whatever the window). Call ``set_epoch(e)`` before each epoch.
    """

    def __init__(self, genome: Genome | str | os.PathLike, window_bp: int, split: str = "train",
                 num_windows: int | None = None, seed: int = 0, max_n_fraction: float = 0.1,
                 reverse_complement: bool = False, bed: str | os.PathLike | None = None,
                 val_fraction: float = 0.1, test_fraction: float = 0.1, split_by: str = "auto",
                 val_contigs=None, test_contigs=None, rank: int = 0, world_size: int = 1, tokenizer=None):
        self.genome = genome if isinstance(genome, Genome) else Genome(Path(genome))
        check_rank(rank, world_size)
        self.split = split
        self.intervals = split_intervals(self.genome, split, bed, val_fraction=val_fraction,
                                         test_fraction=test_fraction, by=split_by, val_contigs=val_contigs,
                                         test_contigs=test_contigs)
        what = "interval of the BED file" if bed is not None else f"contig/region of the {split!r} split"
        advice = "" if bed is not None else held_out_advice(split, window_bp + 1, self.genome.contigs.values(),
                                                            val_fraction, test_fraction, split_by)
        self.windows = RegionWindows([(self.genome, self.intervals)], window_bp, what=what, lookahead_bp=1,
                                     advice=advice)
        self.window_bp = self.windows.window_bp
        if num_windows is None:
            num_windows = max(1, self.windows.total_bp // self.window_bp)
        if num_windows < 1:
            raise DataError(f"num_windows must be >= 1, got {num_windows}")
        self.num_windows = int(num_windows)
        self.reader = WindowReader(tokenizer, max_n_fraction, reverse_complement)
        self.seed, self.rank, self.world_size = int(seed), rank, world_size
        self.epoch = 0
        self._perm: tuple[int, np.ndarray] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(range(self.rank, self.num_windows, self.world_size))

    def _global_index(self, index: int) -> int:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} windows")
        return self.rank + index * self.world_size

    def _stratum(self, g: int) -> tuple[int, int]:
        if self._perm is None or self._perm[0] != self.epoch:
            self._perm = (self.epoch, np.random.default_rng((self.seed, self.epoch)).permutation(self.num_windows))
        p = int(self._perm[1][g])
        n = self.windows.n_starts
        return p * n // self.num_windows, (p + 1) * n // self.num_windows

    def window(self, index: int):
        """(contig, start_bp, raw bytes, rng) of item ``index`` in this epoch; the rng continues for augmentation."""
        g = self._global_index(index)
        lo, hi = self._stratum(g)
        rng = np.random.default_rng((self.seed, self.epoch, g))
        _, contig, start, raw = self.reader.draw(self.windows, rng, lo, hi)
        return contig, start, raw, rng

    def __getitem__(self, index: int) -> dict:
        _, _, raw, rng = self.window(index)
        ids = self.reader.encode(raw, rng)  # (window_bp + 1,)
        return {"input_ids": ids[:-1], "targets": ids[1:]}
