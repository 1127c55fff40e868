"""Genomes of many small contigs (issue #22: a million contigs took 70 s before a 2-step run): the work done once
per genome and per file version, and the whole-array paths giving what the one-by-one ones give. Speed itself is
measured by experiments/bench_many_contigs.py, not here."""

from __future__ import annotations

import pytest

from mambadna.data import GenomeDataModule, genome as genome_module, windows
from mambadna.data.errors import DataError
from mambadna.data.genome import Genome
from mambadna.data.regions import _split_by_hash


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMBADNA_CACHE", str(tmp_path / "cache"))


def _many(path, n=60):
    """Contigs of mixed case and N runs, of 1 to 30 bases on lines of 8."""
    parts = []
    for i in range(n):
        seq = ("ACGTnnACgt" * 3)[: i * 7 % 30 + 1]
        parts.append(f">c{i} some words\n" + "".join(seq[j : j + 8] + "\n" for j in range(0, len(seq), 8)))
    path.write_text("".join(parts))
    return path


def test_counts_of_many_contigs_at_once_equal_one_by_one(tmp_path):
    genome = Genome(_many(tmp_path / "many.fa"), validate=False)
    together = genome._scan_all()
    assert together == {name: genome._scan_contig(name) for name in genome.contigs}
    assert sum(s.n_bp for s in together.values()) > 0 and sum(s.soft_masked_bp for s in together.values()) > 0


def test_a_bad_letter_among_many_contigs_is_named_as_before(tmp_path):
    path = _many(tmp_path / "bad.fa")
    text = path.read_text()
    assert ">c3 some words\nACGTnnAC\ngtA" in text
    path.write_text(text.replace(">c3 some words\nACGTnnAC\ngtA", ">c3 some words\nACGTnnAC\ngtX"))
    with pytest.raises(DataError, match=r"contig 'c3' has a non-DNA letter 'X' at offset 10"):
        Genome(path)


def test_an_index_is_checked_once_per_version_and_read_without_pyfaidx(tmp_path, monkeypatch):
    path = _many(tmp_path / "many.fa")
    first = Genome(path)
    calls = []
    monkeypatch.setattr(genome_module, "fai_problem", lambda *a, **k: calls.append(a))
    second = Genome(path)
    assert not calls and second._records == {k: tuple(v)[:4] for k, v in first._records.items()}
    assert second.fetch("c3", 2, 20) == first.fetch("c3", 2, 20) == b"GTnnACgtACGTnnACgt"
    path.write_text(path.read_text() + ">late\nACGT\n")  # a new version: checked again (and found stale)
    Genome(path)
    assert calls


def test_a_run_splits_the_genome_once(tmp_path, monkeypatch):
    path = tmp_path / "many.fa"
    path.write_text("".join(f">c{i}\n{'ACGT' * 20}\n" for i in range(200)))
    calls = []
    real = windows.split_regions
    monkeypatch.setattr(windows, "split_regions", lambda *a, **k: calls.append(1) or real(*a, **k))
    datamodule = GenomeDataModule(path, window_bp=16, batch_size=2, val_windows=2, test_windows=2)
    for split in ("val", "test"):
        datamodule.check_split(split)
    datamodule.train_windows_per_epoch()
    datamodule.train_dataloader()
    assert len(calls) == 1


def test_the_hash_split_holds_whole_contigs_in_their_shares():
    contigs = {f"c{i}": 10 + i % 13 for i in range(5000)}
    splits = _split_by_hash(contigs, 0.1, 0.2)
    names = [iv.contig for ivs in splits.values() for iv in ivs]
    assert sorted(names) == sorted(contigs)
    total = sum(contigs.values())
    for split, share in (("val", 0.1), ("test", 0.2)):
        held = sum(iv.length_bp for iv in splits[split])
        assert share * total <= held < share * total + 23  # up to the last contig that crossed the share
    assert splits == _split_by_hash(dict(reversed(contigs.items())), 0.1, 0.2)  # by name, not by file order


def test_a_long_first_pass_says_what_it_is_doing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(genome_module, "PROGRESS_CONTIGS", 10)
    Genome(_many(tmp_path / "many.fa"))
    assert "checking the 60 contigs" in capsys.readouterr().err
    Genome(tmp_path / "many.fa")  # cached: nothing to say
    assert capsys.readouterr().err == ""
