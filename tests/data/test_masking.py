"""Masked-LM items: the 15% / 80-10-10 corruption, targets aligned with the inputs, determinism, DataModule."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mambadna.data import DataError, GenomeWindowDataset, MaskedWindows, mask_tokens
from mambadna.data.datamodules import GenomeDataModule
from mambadna.tokenizer import A_ID, IGNORE_INDEX, MASK_ID, N_ID, T_ID, NucleotideTokenizer

TOK = NucleotideTokenizer()


def test_rates_and_the_80_10_10_split_on_many_bases():
    ids = torch.from_numpy(np.random.default_rng(0).integers(A_ID, T_ID + 1, 200_000))
    inputs, targets = mask_tokens(ids, np.random.default_rng(1), 0.15, 0.8, 0.1, TOK)
    chosen = targets != IGNORE_INDEX
    assert abs(chosen.float().mean().item() - 0.15) < 0.005
    assert torch.equal(targets[chosen], ids[chosen])  # the original base is the target
    assert torch.equal(inputs[~chosen], ids[~chosen])  # nothing else is touched
    masked = inputs[chosen] == MASK_ID
    kept = inputs[chosen] == ids[chosen]
    assert abs(masked.float().mean().item() - 0.8) < 0.01
    # a random replacement equals the original a quarter of the time: kept ≈ 0.1 + 0.1 / 4
    assert abs(kept.float().mean().item() - 0.125) < 0.01
    replaced = inputs[chosen][~masked]
    assert ((replaced >= A_ID) & (replaced <= T_ID)).all()  # random bases are A, C, G or T


def test_specials_and_n_are_never_chosen_or_drawn():
    ids = torch.tensor([1, N_ID, 5, 6, 7, 8, N_ID, 2] * 500)
    inputs, targets = mask_tokens(ids, np.random.default_rng(0), 0.5, 0.0, 1.0, TOK)
    assert (targets[(ids == N_ID) | (ids < A_ID)] == IGNORE_INDEX).all()
    assert torch.equal(inputs[(ids == N_ID) | (ids < A_ID)], ids[(ids == N_ID) | (ids < A_ID)])
    assert not (inputs == N_ID)[ids != N_ID].any()


def test_masked_windows_are_deterministic_per_epoch_and_index(copy_bundled):
    path = copy_bundled("lambda")
    a = MaskedWindows(GenomeWindowDataset(path, 128, seed=3, num_windows=16))
    b = MaskedWindows(GenomeWindowDataset(path, 128, seed=3, num_windows=16))
    item = a[4]
    assert item["input_ids"].shape == item["targets"].shape == (128,)
    window = a.windows[4]["input_ids"]
    chosen = item["targets"] != IGNORE_INDEX
    assert torch.equal(item["targets"][chosen], window[chosen]) and chosen.any()
    assert all(torch.equal(a[i]["input_ids"], b[i]["input_ids"]) for i in range(len(a)))
    looped = [batch for batch in DataLoader(a, batch_size=4, num_workers=2)]  # workers draw the same masks
    assert torch.equal(torch.cat([x["targets"] for x in looped]), torch.stack([a[i]["targets"] for i in range(16)]))
    a.set_epoch(1)
    assert not torch.equal(a[4]["targets"], b[4]["targets"])


def test_datamodule_gives_masked_batches(copy_bundled):
    path = copy_bundled("lambda")
    dm = GenomeDataModule(path, window_bp=64, batch_size=4, val_windows=8, masking=(0.3, 0.8, 0.1))
    batch = next(iter(dm.val_dataloader()))
    assert batch["input_ids"].shape == batch["targets"].shape == (4, 64)
    assert (batch["input_ids"] == MASK_ID).any() and (batch["targets"] == IGNORE_INDEX).any()
    with pytest.raises(DataError, match="masking rate must be in"):
        GenomeDataModule(path, window_bp=64, masking=(0.0, 0.8, 0.1))
    with pytest.raises(DataError, match="sum to at most 1"):
        MaskedWindows(dm._make("val"), 0.15, 0.8, 0.3)
