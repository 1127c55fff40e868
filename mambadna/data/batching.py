"""Batching variable-length sequences: right padding with a mask, and a length-bucketing batch sampler."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler

from mambadna.data.errors import DataError


class PadCollate:
    """Collate ``{"input_ids": (l_i,), "label"?: int}`` items into ``input_ids (b, l)``, ``attention_mask (b, l)``
    (True on real tokens; right padding with ``pad_id``) and ``label (b,)``. A class, not a closure, so it pickles
    into DataLoader workers."""

    def __init__(self, pad_id: int = 0, pad_to_multiple_of: int | None = None, max_length: int | None = None):
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise DataError(f"pad_to_multiple_of must be >= 1, got {pad_to_multiple_of}")
        self.pad_id, self.pad_to_multiple_of, self.max_length = pad_id, pad_to_multiple_of, max_length

    def __call__(self, items: list[dict]) -> dict:
        if not items:
            raise DataError("cannot collate an empty batch")
        seqs = [it["input_ids"][: self.max_length] if self.max_length else it["input_ids"] for it in items]
        length = max(len(s) for s in seqs)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(seqs), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), length), dtype=torch.bool)
        for i, s in enumerate(seqs):
            input_ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
            mask[i, : len(s)] = True
        out = {"input_ids": input_ids, "attention_mask": mask}
        if "label" in items[0]:
            out["label"] = torch.tensor([it["label"] for it in items], dtype=torch.long)
        return out


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Batches of similar length, to waste little compute on padding.

    Each epoch: shuffle all indices (seeded by seed and epoch), cut them into pools of
    ``batch_size * pool_batches``, sort each pool by length, cut pools into batches, shuffle the batches.
    With ``world_size > 1`` rank r keeps batches r, r + W, ... (whole batches, so ranks never share an index).
    ``skip`` leaves out the first batches of the next pass only (a resumed epoch); ``len`` stays the full count.
    """

    def __init__(self, lengths, batch_size: int, pool_batches: int = 50, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.lengths = np.asarray(lengths)
        self.batch_size, self.pool_batches, self.shuffle = batch_size, max(1, pool_batches), shuffle
        self.seed, self.drop_last, self.rank, self.world_size, self.epoch = seed, drop_last, rank, world_size, 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _batches(self) -> list[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        pool = self.batch_size * self.pool_batches
        batches = []
        for lo in range(0, len(order), pool):
            chunk = order[lo : lo + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            for b in range(0, len(chunk), self.batch_size):
                batch = chunk[b : b + self.batch_size].tolist()
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches[self.rank :: self.world_size]

    def __iter__(self):
        skip, self.skip = self.skip, 0
        return iter(self._batches()[skip:])

    def __len__(self) -> int:
        return len(self._batches())
