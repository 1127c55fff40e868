"""Labelled variable-length sequences (cut from the bundled real DNA), padding and length bucketing."""

import pytest
import torch
from torch.utils.data import DataLoader

from mambadna.data import DataError, LabelledSequenceDataset, LengthBucketBatchSampler, PadCollate
from mambadna.tokenizer import NucleotideTokenizer


@pytest.fixture
def pieces(copy_bundled, read_fasta):
    """(sequence, label) pairs: pieces of 40..400 bp of two real genomes, labelled by genome."""
    human = read_fasta(copy_bundled("mt_human"))["MT_human"]
    lam = read_fasta(copy_bundled("lambda"))["gi|9626243|ref|NC_001416.1|"]
    out = []
    for i in range(30):
        length = 40 + 12 * i
        out.append((human[i * 500: i * 500 + length], "mito"))
        out.append((lam[i * 900: i * 900 + length], "phage"))
    return out


def test_table_csv_and_tsv(pieces, tmp_path):
    csv = tmp_path / "seqs.csv"
    csv.write_text("label,sequence\n" + "".join(f"{lab},{seq}\n" for seq, lab in pieces))
    tsv = tmp_path / "seqs.tsv"
    tsv.write_text("sequence\tlabel\n" + "".join(f"{seq}\t{lab}\n" for seq, lab in pieces))
    for path in (csv, tsv):
        ds = LabelledSequenceDataset.from_table(path)
        assert ds.class_names == ["mito", "phage"] and len(ds) == 60
        assert ds[1]["label"] == 1
        assert torch.equal(ds[1]["input_ids"], torch.from_numpy(NucleotideTokenizer().encode(pieces[1][0])))


@pytest.mark.parametrize("header, kwargs", [("{i} class={lab} src=test", {"label_key": "class"}),
                                            ("{i}|{lab}", {"label_regex": r"\|(\w+)$"})])
def test_fasta_with_labels_in_headers(pieces, tmp_path, header, kwargs):
    path = tmp_path / "labelled.fa"
    path.write_text("".join(f">{header.format(i=i, lab=lab)}\n{seq}\n" for i, (seq, lab) in enumerate(pieces)))
    ds = LabelledSequenceDataset.from_fasta(path, **kwargs)
    assert ds.class_names == ["mito", "phage"]
    assert [ds[i]["label"] for i in range(4)] == [0, 1, 0, 1]
    assert ds.lengths == [len(s) for s, _ in pieces]


def test_pad_collate_right_pads_with_a_mask(pieces, tmp_path):
    tsv = tmp_path / "seqs.tsv"
    tsv.write_text("sequence\tlabel\n" + "".join(f"{seq}\t{lab}\n" for seq, lab in pieces))
    ds = LabelledSequenceDataset.from_table(tsv)
    batch = PadCollate(pad_id=0, pad_to_multiple_of=8)([ds[0], ds[5], ds[59]])
    lengths = [len(pieces[i][0]) for i in (0, 5, 59)]
    assert batch["input_ids"].shape == (3, -(-max(lengths) // 8) * 8)
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert (batch["input_ids"][~batch["attention_mask"]] == 0).all()
    assert batch["label"].tolist() == [0, 1, 1]


def test_length_buckets_cover_every_index_once_and_reduce_padding(pieces, tmp_path):
    lengths = [len(s) for s, _ in pieces]
    sampler = LengthBucketBatchSampler(lengths, batch_size=6, pool_batches=10, seed=0)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(60))
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert padded < 1.2 * sum(lengths)
    sampler.set_epoch(1)
    assert list(sampler) != batches
    ranks = [set(i for b in LengthBucketBatchSampler(lengths, 6, rank=r, world_size=2) for i in b) for r in (0, 1)]
    assert not ranks[0] & ranks[1] and ranks[0] | ranks[1] == set(range(60))
    tsv = tmp_path / "s.tsv"
    tsv.write_text("sequence\tlabel\n" + "".join(f"{seq}\t{lab}\n" for seq, lab in pieces))
    loader = DataLoader(LabelledSequenceDataset.from_table(tsv), batch_sampler=sampler, collate_fn=PadCollate(),
                        num_workers=2)
    assert sum(b["input_ids"].shape[0] for b in loader) == 60


def test_labelled_errors(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("seq\tlabel\nACGT\ta\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['sequence'\]"):
        LabelledSequenceDataset.from_table(bad)
    letters = tmp_path / "letters.tsv"
    letters.write_text("sequence\tlabel\nACGT\ta\nACGXT\tb\n")
    with pytest.raises(DataError, match=r"line 3 has a non-DNA letter 'X' at offset 3"):
        LabelledSequenceDataset.from_table(letters)
    fa = tmp_path / "x.fa"
    fa.write_text(">s1 class=a\nACGT\n")
    with pytest.raises(DataError, match="exactly one group"):
        LabelledSequenceDataset.from_fasta(fa, label_regex=r"class=(\w)(\w*)")
    with pytest.raises(DataError, match="no label in header"):
        LabelledSequenceDataset.from_fasta(fa, label_key="species")
