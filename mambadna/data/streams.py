"""Consecutive windows along contigs for truncated-BPTT training (see mambadna/tbptt.py).

The regions of a split (contigs, or the split's blocks of them, optionally intersected with a BED file) are cut
into pieces of at most ``piece_bp`` and dealt to ``batch_size`` parallel streams (longest piece first, each to
the stream with the fewest bases so far). Stream s walks its pieces in order, ``window_bp`` bases at a time, so
item k of the dataset is the k-th window of every stream: a (batch_size, window_bp) batch whose row s continues
row s of item k-1 exactly where it stopped. ``reset[s]`` is true where row s starts a new piece; the model's
carried state must be zeroed there.

Targets are the next base of every position (window k of a piece reads window_bp + 1 bases), so no position
loses its label at a window boundary. A piece's last window is padded (input PAD, target IGNORE_INDEX), and a stream
that has run out of pieces yields padding windows until the longest stream ends.

Order matters, so use ``DataLoader(dataset, batch_size=None, shuffle=False)`` (any num_workers: a map-style
dataset keeps its order). Under DDP pass rank / world_size (each rank gets its own streams, every rank the same
number of steps) and keep Lightning from adding a DistributedSampler (``use_distributed_sampler=False``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mambadna.data.errors import DataError
from mambadna.data.genome import Genome
from mambadna.data.regions import Interval
from mambadna.data.windows import check_rank, split_intervals
from mambadna.tokenizer import IGNORE_INDEX


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class ContigStreams(Dataset):
    """``{"input_ids": LongTensor (B, window_bp), "targets": LongTensor (B, window_bp), "reset": BoolTensor (B,),
    "start_bp": LongTensor (B,)}`` for step k of B = ``batch_size`` consecutive-window streams.

    ``piece_bp`` (default: split bases / all streams, rounded up to whole windows) bounds how much of one contig
    a single stream carries state over; shorter pieces balance the streams better. ``shuffle`` deals the pieces
    in an order drawn from (seed, epoch); call ``set_epoch(e)`` before each epoch. ``start_bp`` is the window's
    first base in its contig (-1 for padding windows).
    """

    def __init__(self, genome: Genome | str | os.PathLike, window_bp: int, batch_size: int, split: str = "train",
                 piece_bp: int | None = None, bed: str | os.PathLike | None = None, shuffle: bool = True,
                 seed: int = 0, rank: int = 0, world_size: int = 1, tokenizer=None, val_fraction: float = 0.1,
                 test_fraction: float = 0.1, split_by: str = "auto", val_contigs=None, test_contigs=None):
        self.genome = genome if isinstance(genome, Genome) else Genome(Path(genome))
        self.window_bp = _positive_int("window_bp", window_bp)
        self.batch_size = _positive_int("batch_size", batch_size)
        check_rank(rank, world_size)
        self.rank, self.world_size = rank, world_size
        intervals = [iv for iv in split_intervals(self.genome, split, bed, val_fraction=val_fraction,
                                                  test_fraction=test_fraction, by=split_by, val_contigs=val_contigs,
                                                  test_contigs=test_contigs) if iv.length_bp >= 2]
        if not intervals:
            raise DataError(f"{self.genome.source_path}: the {split!r} split has no region of 2 bp or more")
        n_streams = self.batch_size * world_size
        if piece_bp is None:
            total_bp = sum(iv.length_bp for iv in intervals)
            piece_bp = max(1, math.ceil(total_bp / n_streams / self.window_bp)) * self.window_bp
        self.piece_bp = _positive_int("piece_bp", piece_bp)
        self.pieces = [Interval(iv.contig, s, min(s + self.piece_bp, iv.end_bp))
                       for iv in intervals for s in range(iv.start_bp, iv.end_bp, self.piece_bp)]
        self.pieces = [p for p in self.pieces if p.length_bp >= 2]  # one base has no next base to predict
        if tokenizer is None:
            from mambadna.tokenizer import NucleotideTokenizer

            tokenizer = NucleotideTokenizer()
        self.tokenizer = tokenizer
        self.shuffle, self.seed = shuffle, int(seed)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Deal the pieces to the streams for ``epoch``; every rank computes the same deal and keeps its own."""
        self.epoch = int(epoch)
        order = list(range(len(self.pieces)))
        if self.shuffle:
            order = [int(i) for i in np.random.default_rng((self.seed, self.epoch)).permutation(len(order))]
        # longest first, the shuffled order breaking ties, so equal-length pieces still change streams per epoch
        order.sort(key=lambda i: -self.pieces[i].length_bp)
        n_streams = self.batch_size * self.world_size
        loads, streams = [0] * n_streams, [[] for _ in range(n_streams)]
        for i in order:
            s = min(range(n_streams), key=loads.__getitem__)
            streams[s].append(self.pieces[i])
            loads[s] += self.pieces[i].length_bp
        # per stream: its pieces and the cumulative window count at the end of each piece
        counted = [(p, np.cumsum([self._n_windows(iv) for iv in p], dtype=np.int64)) for p in streams]
        self._streams = counted[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        # every rank runs as many steps as the longest stream of all ranks, so DDP ranks stay in lockstep
        self._n_steps = max(int(cum[-1]) if len(cum) else 0 for _, cum in counted)

    def _n_windows(self, piece: Interval) -> int:
        # inputs are bases [start, end - 1) of the piece: the last base is only ever a target
        return math.ceil((piece.length_bp - 1) / self.window_bp)

    def __len__(self) -> int:
        return self._n_steps

    def _window(self, stream: int, step: int):
        """(piece, window index inside it) of ``stream`` at ``step``, or None once the stream is used up."""
        pieces, cum = self._streams[stream]
        if not len(cum) or step >= cum[-1]:
            return None
        i = int(np.searchsorted(cum, step, side="right"))
        return pieces[i], step - (int(cum[i - 1]) if i else 0)

    def __getitem__(self, step: int) -> dict:
        if not 0 <= step < len(self):
            raise IndexError(f"step {step} out of range for {len(self)} steps")
        B, W = self.batch_size, self.window_bp
        input_ids = torch.full((B, W), self.tokenizer.pad_id, dtype=torch.long)
        targets = torch.full((B, W), IGNORE_INDEX, dtype=torch.long)
        reset = torch.ones(B, dtype=torch.bool)
        start_bp = torch.full((B,), -1, dtype=torch.long)
        for s in range(B):
            found = self._window(s, step)
            if found is None:
                continue
            piece, j = found
            start = piece.start_bp + j * W
            end = min(start + W + 1, piece.end_bp)  # one base past the inputs: the last input's target
            ids = torch.from_numpy(np.asarray(self.tokenizer.encode(self.genome.fetch(piece.contig, start, end)),
                                              dtype=np.int64))
            input_ids[s, : len(ids) - 1] = ids[:-1]
            targets[s, : len(ids) - 1] = ids[1:]
            reset[s] = j == 0
            start_bp[s] = start
        return {"input_ids": input_ids, "targets": targets, "reset": reset, "start_bp": start_bp}
