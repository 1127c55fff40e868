import time

import numpy as np
import pytest
import torch

from mambadna.tokenizer import (
    ByteTokenizer,
    NucleotideTokenizer,
    reverse_complement,
    tokenizer_from_name,
)


def test_ids_match_the_contract():
    tok = NucleotideTokenizer()
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.mask_id, tok.unk_id) == (0, 1, 2, 3, 4)
    assert tok.encode("ACGTN").tolist() == [5, 6, 7, 8, 9]
    assert tok.vocab_size == 16 and tok.vocab_size % 8 == 0
    assert ByteTokenizer().vocab_size == 264
    assert ByteTokenizer().encode(b"\x00A\xff").tolist() == [5, 5 + 65, 5 + 255]


def test_round_trip_real_sequence(real_dna):
    tok = NucleotideTokenizer()
    ids = tok.encode(real_dna)
    assert ids.dtype == np.int64 and len(ids) == len(real_dna)
    assert tok.decode(ids) == real_dna
    assert tok.decode(torch.from_numpy(ids)) == real_dna
    assert tok.decode(tok.encode(real_dna.encode())) == real_dna


def test_lowercase_maps_to_same_ids_and_soft_mask_round_trips():
    tok = NucleotideTokenizer()
    seq = "ACgtNnAC"
    ids, soft = tok.encode(seq, return_soft_mask=True)
    assert ids.tolist() == tok.encode(seq.upper()).tolist()
    assert soft.tolist() == [c.islower() for c in seq]
    assert tok.decode(ids, soft_mask=soft) == seq


def test_iupac_codes_map_to_n():
    tok = NucleotideTokenizer()
    codes = "RYKMSWBDHV"
    assert tok.encode(codes + codes.lower()).tolist() == [9] * 20
    assert tok.decode(tok.encode("ACRT")) == "ACNT"


@pytest.mark.parametrize("seq, char, pos", [("ACGU", "U", 3), ("AC GT", " ", 2), ("ACG\nT", "\n", 3), ("AéC", "é", 1),
                                            ("-ACG", "-", 0)])
def test_bad_character_message_names_char_and_position(seq, char, pos):
    with pytest.raises(ValueError) as err:
        NucleotideTokenizer().encode(seq)
    assert repr(char) in str(err.value) and f"position {pos}" in str(err.value)


def test_lenient_maps_bad_characters_to_unk_in_place():
    tok = NucleotideTokenizer(lenient=True)
    assert tok.encode("AUé-C").tolist() == [5, 4, 4, 4, 6]


def test_special_tokens_and_decode():
    tok = NucleotideTokenizer()
    ids = tok.encode("ACG", add_special_tokens=True)
    assert ids.tolist() == [1, 5, 6, 7, 2]
    assert tok.decode(ids) == "ACG"
    assert tok.decode(ids, skip_special_tokens=False) == "[BOS]ACG[EOS]"
    _, soft = tok.encode("aC", add_special_tokens=True, return_soft_mask=True)
    assert soft.tolist() == [False, True, False, False]
    with pytest.raises(ValueError, match="padding slot"):
        tok.decode([5, 12])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([5, 16])


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    text = "ACGT acgt ümlaut"
    ids = tok.encode(text, add_special_tokens=True)
    assert ids[0] == 1 and ids[-1] == 2
    assert tok.decode(ids) == text


def test_reverse_complement_numpy_and_torch(real_dna):
    tok = NucleotideTokenizer()
    ids = tok.encode("AACGTN", add_special_tokens=True)
    rc = reverse_complement(ids)
    assert tok.decode(rc, skip_special_tokens=False) == "[EOS]NACGTT[BOS]"
    real = tok.encode(real_dna)
    assert np.array_equal(reverse_complement(reverse_complement(real)), real)
    batch = torch.from_numpy(np.stack([real, real[::-1].copy()]))  # (2, l)
    rc_t = tok.reverse_complement(batch)
    assert rc_t.dtype == batch.dtype and rc_t.shape == batch.shape
    assert torch.equal(rc_t[0], torch.from_numpy(reverse_complement(real)))
    assert torch.equal(reverse_complement(rc_t), batch)
    with pytest.raises(ValueError, match="ids must lie"):
        reverse_complement(np.array([5, 99]))


def test_batch_encode_right_pads_with_masks():
    tok = NucleotideTokenizer()
    out = tok.batch_encode(["ACGT", "A", "GG"], add_special_tokens=True)
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.dtype == torch.long and mask.dtype == torch.bool and ids.shape == (3, 6)
    assert ids[1].tolist() == [1, 5, 2, 0, 0, 0]
    assert mask.sum(1).tolist() == [6, 3, 4]
    assert torch.all(ids[~mask] == tok.pad_id)
    out = tok.batch_encode(["ACGTACGT", "A"], max_length=5, pad_to_multiple_of=8, add_special_tokens=True)
    assert out["input_ids"].shape == (2, 8)
    assert out["input_ids"][0, :5].tolist() == [1, 5, 6, 7, 2]
    with pytest.raises(ValueError, match="non-empty"):
        tok.batch_encode([])
    with pytest.raises(ValueError, match="sequence 1 of the batch: invalid nucleotide character 'X' at position 2"):
        tok.batch_encode(["ACGT", "ACX"])


def test_encoding_ten_megabases_is_fast():
    seq = "ACGTNacgtn" * 1_000_000
    tok = NucleotideTokenizer()
    start = time.perf_counter()
    ids = tok.encode(seq)
    elapsed = time.perf_counter() - start
    assert len(ids) == 10_000_000
    assert elapsed < 3.0, f"encoding 10 Mb took {elapsed:.2f} s"


def test_tokenizer_from_name_and_dict_round_trip():
    tok = tokenizer_from_name("nucleotide", lenient=True)
    assert isinstance(tok, NucleotideTokenizer) and tok.lenient
    again = NucleotideTokenizer.from_dict(tok.to_dict())
    assert isinstance(again, NucleotideTokenizer) and again.lenient
    assert isinstance(tokenizer_from_name("byte"), ByteTokenizer)
    with pytest.raises(ValueError, match="expected 'nucleotide'"):
        NucleotideTokenizer.from_dict({"name": "byte"})
    with pytest.raises(ValueError, match="unknown tokenizer 'kmer'"):
        tokenizer_from_name("kmer")
    with pytest.raises(ValueError, match="bad options"):
        tokenizer_from_name("byte", lenient=True)
