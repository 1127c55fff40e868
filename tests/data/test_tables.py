"""Labelled sequences from parquet and from a Hugging Face `datasets` folder, beside CSV/TSV and FASTA."""

import sys
from pathlib import Path

import pytest
import torch

from mambadna.commands.embed import read_records
from mambadna.data import DataError, LabelledDataModule, LabelledSequenceDataset
from mambadna.tokenizer import NucleotideTokenizer

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

DATASETS = Path(__file__).parent / "fixtures" / "hf_datasets"  # written by `datasets` itself, see make_fixtures.py
SEQS = ["ACGTACGTAA", "GGGCCCATAT", "acgtnnACGT", "TTTTAAAACC", "GCGCGCGCAT", "ATATATATGC"]
LABELS = ["promoter", "enhancer", "promoter", "other", "enhancer", "other"]


def _parquet(path, **columns):
    pq.write_table(pa.table(columns), path)
    return path


def test_parquet_with_default_and_renamed_columns(tmp_path):
    default = _parquet(tmp_path / "a.parquet", sequence=SEQS, label=LABELS)
    renamed = _parquet(tmp_path / "b.parquet", dna=SEQS, y=[3, 1, 3, 2, 1, 2])  # integer labels
    for ds in (LabelledSequenceDataset.from_path(default),
               LabelledSequenceDataset.from_table(renamed, sequence_column="dna", label_column="y")):
        assert len(ds) == 6 and ds.num_classes == 3
        assert torch.equal(ds[2]["input_ids"], torch.from_numpy(NucleotideTokenizer().encode(SEQS[2])))
    assert LabelledSequenceDataset.from_table(renamed, "dna", "y").class_names == ["1", "2", "3"]


def test_datasets_folder_written_by_datasets(tmp_path):
    ds = LabelledSequenceDataset.from_path(DATASETS / "ds")
    assert ds.class_names == ["enhancer", "other", "promoter"]
    assert [ds.class_names[ds[i]["label"]] for i in range(6)] == LABELS
    assert ds.lengths == [len(s) for s in SEQS]
    # a ClassLabel column holds integers; its names come from dataset_info.json
    named = LabelledSequenceDataset.from_path(DATASETS / "ds_classlabel")
    assert [named.class_names[named[i]["label"]] for i in range(6)] == LABELS
    # a DatasetDict: one split folder is a dataset, the root is refused with the way out
    assert len(LabelledSequenceDataset.from_path(DATASETS / "dd" / "test")) == 2
    with pytest.raises(DataError, match=r"holds a DatasetDict with splits \['train', 'test'\]; pass one split"):
        LabelledSequenceDataset.from_path(DATASETS / "dd")


def test_datamodule_and_embed_inputs_read_every_table_format(tmp_path):
    train = _parquet(tmp_path / "train.parquet", sequence=SEQS, label=LABELS)
    dm = LabelledDataModule(train, DATASETS / "dd" / "test", DATASETS / "ds", batch_size=4)
    assert dm.class_names == ["enhancer", "other", "promoter"]
    assert sum(len(b["label"]) for b in dm.train_dataloader()) == 6
    assert sum(len(b["label"]) for b in dm.val_dataloader()) == 2
    records = read_records(DATASETS / "ds", name_column="id")
    assert [(r.name, r.label) for r in records[:2]] == [("r0", "promoter"), ("r1", "enhancer")]
    records = read_records(_parquet(tmp_path / "e.parquet", sequence=SEQS))
    assert [r.name for r in records[:2]] == ["seq0", "seq1"] and records[0].label == ""


def test_table_errors_name_the_file_row_and_columns(tmp_path):
    with pytest.raises(DataError, match=r"missing column\(s\) \['label'\]; this parquet file has columns "
                                         r"\['sequence', 'other'\]"):
        LabelledSequenceDataset.from_path(_parquet(tmp_path / "c.parquet", sequence=SEQS, other=LABELS))
    with pytest.raises(DataError, match=r"d.parquet: row 1 has a non-DNA letter 'U' at offset 2"):
        LabelledSequenceDataset.from_path(_parquet(tmp_path / "d.parquet", sequence=["ACGT", "ACUG"],
                                                   label=["a", "b"]))
    with pytest.raises(DataError, match=r"e.parquet: row 0: empty sequence"):
        LabelledSequenceDataset.from_path(_parquet(tmp_path / "e.parquet", sequence=[None, "ACGT"], label=["a", "b"]))
    with pytest.raises(DataError, match="no such file"):
        LabelledSequenceDataset.from_path(tmp_path / "absent.parquet")


def test_missing_pyarrow_names_the_extra(tmp_path, monkeypatch):
    path = _parquet(tmp_path / "a.parquet", sequence=SEQS, label=LABELS)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    with pytest.raises(DataError, match=r"reading a parquet file needs pyarrow.*pip install 'mambadna\[formats\]'"):
        LabelledSequenceDataset.from_path(path)
    with pytest.raises(DataError, match=r"reading a datasets folder needs pyarrow"):
        LabelledSequenceDataset.from_path(DATASETS / "ds")
