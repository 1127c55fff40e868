"""Every bad input gets a DataError (or, for a bad user index, a DataWarning) with a clear message."""

import os
import time
import warnings

import pytest

from mambadna.data import (DataError, DataWarning, Genome, GenomeWindowDataset, SpeciesWindowDataset,
                           normalize_fasta)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        Genome(tmp_path / "nope.fa")


def test_empty_fasta(fixture_copy):
    with pytest.raises(DataError, match="empty"):
        Genome(fixture_copy("empty.fa"))


def test_header_only_fasta(tmp_path):
    path = tmp_path / "headers.fa"
    path.write_text(">a\n>b\n")
    with pytest.raises(DataError, match="every record is empty"):
        Genome(path)


@pytest.mark.parametrize("name", ["ragged.fa", "mixed_endings.fa"])
def test_unindexable_fasta_is_normalised_once_into_the_cache(name, fixture_copy, tmp_path, private_cache):
    path = fixture_copy(name)
    before = path.read_bytes()
    letters = b"".join(line.strip() for line in before.splitlines() if not line.startswith(b">"))
    with pytest.warns(DataWarning, match=r"cannot be indexed in place.*normalising it once.*mambadna normalize"):
        g = Genome(path)
    assert path.read_bytes() == before and not path.with_name(name + ".fai").exists()
    assert g.fasta_path.is_relative_to(private_cache)
    assert g.fetch(next(iter(g.contigs)), 0, len(letters)) == letters
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second open reuses the copy, silently
        assert Genome(path).fasta_path == g.fasta_path
    fixed = tmp_path / "fixed.fa"
    lengths = normalize_fasta(path, fixed)
    assert dict(Genome(fixed).contigs) == lengths == dict(g.contigs)


def test_a_layout_pyfaidx_accepts_but_reads_wrongly_is_normalised(tmp_path):
    path = tmp_path / "long_last_line.fa"
    path.write_text(">a\nACGT\nACGTTTGGCCAA\n>b\nGGGG\n")  # a last line longer than the ones before it
    with pytest.warns(DataWarning, match="cannot be indexed in place"):
        g = Genome(path)
    assert g.contigs == {"a": 16, "b": 4} and g.fetch("a", 0, 16) == b"ACGTACGTTTGGCCAA"


def test_index_listing_fewer_contigs_than_the_fasta_is_not_trusted(copy_bundled, tmp_path):
    path = tmp_path / "two.fa"
    path.write_text(">c1\n" + "ACGT" * 15 + "\n" + "ACG\n>c2\n" + "GATTACA" * 9 + "\n")
    fai = path.with_name("two.fa.fai")
    fai.write_text("c1\t63\t4\t60\t61\n")  # right for c1, newer than the FASTA, silent about c2
    with pytest.warns(DataWarning, match="lists fewer contigs than the FASTA"):
        g = Genome(path)
    assert list(g.contigs) == ["c1", "c2"] and fai.read_text() == "c1\t63\t4\t60\t61\n"


def test_normalize_never_overwrites(fixture_copy):
    path = fixture_copy("ragged.fa")
    with pytest.raises(DataError, match="never overwrites"):
        normalize_fasta(path, path)


def test_duplicate_contig_names(fixture_copy):
    path = fixture_copy("duplicate_names.fa")
    with pytest.raises(DataError, match="contig name 'chrA' appears more than once"):
        Genome(path)
    assert not path.with_name(path.name + ".fai").exists()


def test_non_dna_letter_names_contig_and_offset(fixture_copy):
    with pytest.raises(DataError, match=r"contig 'bad' has a non-DNA letter 'U' at offset 8"):
        Genome(fixture_copy("non_dna.fa"))


def test_window_longer_than_every_contig(copy_bundled):
    with pytest.raises(DataError, match=r"window_bp 20000 is longer than every .* longest is 16569 bp"):
        GenomeWindowDataset(copy_bundled("mt_human"), 20000, split="all")


def test_window_longer_than_the_held_out_block(copy_bundled):
    with pytest.raises(DataError, match=r"window_bp 8192 is longer than every .*'val' split"):
        GenomeWindowDataset(copy_bundled("lambda"), 8192, split="val")


def _manifest(tmp_path, text):
    path = tmp_path / "manifest.tsv"
    path.write_text(text)
    return path


def test_manifest_missing_column(fixture_copy):
    with pytest.raises(DataError, match="missing column.*fasta"):
        SpeciesWindowDataset(fixture_copy("manifest_missing_column.tsv"), 128)


def test_manifest_unknown_path(copy_bundled, tmp_path):
    copy_bundled("mt_human")
    path = _manifest(tmp_path / "genomes", "species\tfasta\nhuman\tMT-human.fa\norang\tMT-orang.fa\n")
    with pytest.raises(DataError, match=r"line 3: FASTA 'MT-orang.fa' of species 'orang' not found"):
        SpeciesWindowDataset(path, 128)


def test_manifest_with_one_species(copy_bundled, tmp_path):
    copy_bundled("mt_human")
    path = _manifest(tmp_path / "genomes", "species\tfasta\nhuman\tMT-human.fa\n")
    with pytest.raises(DataError, match="at least 2 species, found 1"):
        SpeciesWindowDataset(path, 128)


def test_corrupt_user_index_is_left_alone_and_rebuilt_in_cache(copy_bundled, read_fasta, private_cache):
    path = copy_bundled("lambda")
    fai = path.with_name(path.name + ".fai")
    fai.write_text("this is not an index\n")
    with pytest.warns(DataWarning, match="not a valid .fai index"):
        g = Genome(path)
    assert fai.read_text() == "this is not an index\n"
    assert g.fai_path.is_relative_to(private_cache)
    contig, seq = next(iter(read_fasta(path).items()))
    assert g.fetch(contig, 100, 200) == seq[100:200].encode()


def test_index_that_disagrees_with_the_fasta_is_detected(copy_bundled, read_fasta):
    path = copy_bundled("mt_human")
    Genome(path)
    fai = path.with_name(path.name + ".fai")
    fields = fai.read_text().split("\t")
    fields[1] = str(int(fields[1]) - 7)
    fai.write_text("\t".join(fields))
    with pytest.warns(DataWarning, match="disagrees with the FASTA"):
        g = Genome(path)
    assert g.contigs["MT_human"] == len(read_fasta(path)["MT_human"])


def test_stale_user_index_is_detected(copy_bundled):
    path = copy_bundled("mt_orang")
    Genome(path)
    fai = path.with_name(path.name + ".fai")
    old = time.time() - 3600
    os.utime(fai, (old, old))
    kept = fai.read_text()
    with pytest.warns(DataWarning, match="older than the FASTA"):
        Genome(path)
    assert fai.read_text() == kept
