"""Masked-language-model batches (BERT's recipe, as Caduceus pretrains): choose bases, corrupt them, score them.

Each base is chosen with probability `rate` (0.15); a chosen base becomes [MASK] with probability `mask_fraction`
(0.8), a random base with probability `random_fraction` (0.1), and otherwise stays as it is, so the model cannot
tell from the input which of the bases it sees are scored. Targets are the original bases at the chosen positions
and IGNORE_INDEX elsewhere, aligned with the inputs like every language-model batch (mambadna/objective.py).
Only real symbols are chosen and drawn as replacements: for the nucleotide tokenizer A, C, G and T (an N has no
base to predict); special ids are never touched.

The draw comes from the item's own random stream, a function of (seed, epoch, index), so it is the same with any
number of DataLoader workers, on resume, and for the validation windows at every evaluation.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from mambadna.data.errors import DataError
from mambadna.tokenizer import IGNORE_INDEX, MASK_ID, N_ID, NucleotideTokenizer

# a key of the masking draws, distinct from the window draws of the same (seed, epoch, index)
MASKING_STREAM = 1


def check_masking(rate: float, mask_fraction: float, random_fraction: float) -> None:
    if not 0 < rate <= 1:
        raise DataError(f"masking rate must be in (0, 1], got {rate}")
    if mask_fraction < 0 or random_fraction < 0 or mask_fraction + random_fraction > 1:
        raise DataError(f"mask_fraction ({mask_fraction}) and random_fraction ({random_fraction}) must be >= 0 and "
                        "sum to at most 1 (the rest of the chosen bases are left as they are)")


def maskable_ids(tokenizer) -> tuple[int, int, tuple[int, ...]]:
    """[first, end) of the ids that can be chosen and drawn as replacements, and ids in it to leave alone."""
    first, end = tokenizer.sampleable_ids
    skip = (N_ID,) if isinstance(tokenizer, NucleotideTokenizer) else ()
    return first, end, skip


def mask_tokens(ids: torch.Tensor, rng: np.random.Generator, rate: float, mask_fraction: float,
                random_fraction: float, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (l,) int64 -> (corrupted input_ids (l,), targets (l,): the original id where chosen, else IGNORE_INDEX)."""
    first, end, skip = maskable_ids(tokenizer)
    ids = ids.numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    eligible = (ids >= first) & (ids < end) & ~np.isin(ids, skip)  # (l,)
    chosen = eligible & (rng.random(ids.shape) < rate)
    how = rng.random(ids.shape)  # below mask_fraction: [MASK]; then random_fraction more: a random base
    to_mask = chosen & (how < mask_fraction)
    to_random = chosen & (how >= mask_fraction) & (how < mask_fraction + random_fraction)
    replacements = np.array([i for i in range(first, end) if i not in skip], dtype=np.int64)
    inputs = ids.copy()
    inputs[to_mask] = MASK_ID
    inputs[to_random] = rng.choice(replacements, size=int(to_random.sum()))
    targets = np.where(chosen, ids, IGNORE_INDEX)
    return torch.from_numpy(inputs), torch.from_numpy(targets.astype(np.int64))


class MaskedWindows(Dataset):
    """A window dataset (mambadna.data.GenomeWindowDataset) re-targeted for masked-LM training: each item is
    ``{"input_ids": (window_bp,) with chosen bases corrupted, "targets": (window_bp,)}``."""

    def __init__(self, windows, rate: float = 0.15, mask_fraction: float = 0.8, random_fraction: float = 0.1):
        check_masking(rate, mask_fraction, random_fraction)
        self.windows = windows
        self.rate, self.mask_fraction, self.random_fraction = rate, mask_fraction, random_fraction

    def set_epoch(self, epoch: int) -> None:
        self.windows.set_epoch(epoch)

    @property
    def num_windows(self) -> int:
        """Windows in one epoch over all ranks, as the wrapped dataset's (the run checks batch against it)."""
        return self.windows.num_windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        ids = self.windows[index]["input_ids"]  # (window_bp,): the window, its next-base targets are not used
        w = self.windows
        rng = np.random.default_rng((w.seed, w.epoch, w.rank + index * w.world_size, MASKING_STREAM))
        input_ids, targets = mask_tokens(ids, rng, self.rate, self.mask_fraction, self.random_fraction,
                                         w.reader.tokenizer)
        return {"input_ids": input_ids, "targets": targets}
