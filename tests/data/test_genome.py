"""Genome access on the bundled real DNA: every input format, index placement, statistics, pickling."""

import gzip
import pickle
import shutil
import warnings

import numpy as np
import pytest
from Bio import SeqIO, bgzf
from Bio.Align import MultipleSeqAlignment
from Bio.Seq import Seq
from Bio.SeqRecord import SeqRecord

from mambadna.data import DataWarning, Genome, bundled_genomes
import mambadna.data.genome as genome_module


@pytest.mark.parametrize("name", ["lambda", "mt_human", "mt_orang", "hg19_chr17_part", "great_apes_human"])
def test_bundled_fasta_reads_like_a_plain_parser(name, copy_bundled, read_fasta):
    path = copy_bundled(name)
    ref = read_fasta(path)
    g = Genome(path)
    assert dict(g.contigs) == {k: len(v) for k, v in ref.items()}
    for contig, seq in ref.items():
        for start, end in [(0, 1), (0, 61), (59, 121), (len(seq) - 100, len(seq)), (1234, 5678)]:
            assert g.fetch(contig, start, end) == seq[start:end].encode()


def test_stats_count_n_and_soft_masking_and_are_cached(copy_bundled, read_fasta, private_cache, monkeypatch):
    path = copy_bundled("great_apes_gorilla")
    seq = read_fasta(path)["chr22_epo"]
    stats = Genome(path).stats["chr22_epo"]
    assert stats.length_bp == len(seq)
    assert stats.soft_masked_bp == sum(c.islower() for c in seq) > 0
    assert stats.n_bp == sum(c in "Nn" for c in seq)
    sidecars = list((private_cache / "stats").glob("*.json"))
    assert len(sidecars) == 1

    def no_rescan(self, name):
        raise AssertionError("the sidecar JSON should have been used")

    monkeypatch.setattr(Genome, "_scan_contig", no_rescan)
    assert Genome(path).stats["chr22_epo"] == stats


def test_plain_gzip_is_converted_into_the_cache_with_a_message(copy_bundled, read_fasta, private_cache):
    src = copy_bundled("lambda")
    gz = src.with_suffix(".fa.gz")
    with open(src, "rb") as fin, gzip.open(gz, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    before = gz.read_bytes()
    with pytest.warns(DataWarning, match="plain gzip, not bgzip"):
        g = Genome(gz)
    assert g.fasta_path.is_relative_to(private_cache)
    assert gz.read_bytes() == before
    assert not gz.with_name(gz.name + ".fai").exists()
    contig, seq = next(iter(read_fasta(src).items()))
    assert g.fetch(contig, 1000, 1100) == seq[1000:1100].encode()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the cached conversion is reused silently
        Genome(gz)


def test_bgzip_is_indexed_in_place_with_gzi(copy_bundled, read_fasta):
    src = copy_bundled("mt_human")
    bgz = src.with_suffix(".fa.gz")
    with open(src, "rb") as fin, bgzf.BgzfWriter(str(bgz), "wb") as fout:
        fout.write(fin.read())
    g = Genome(bgz)
    assert g.compressed and g.fasta_path == bgz
    assert bgz.with_name(bgz.name + ".gzi").exists()
    seq = read_fasta(src)["MT_human"]
    assert g.fetch("MT_human", 16000, 16569) == seq[16000:].encode()


@pytest.mark.parametrize("fmt", ["genbank", "embl"])
def test_genbank_and_embl_go_through_biopython(fmt, copy_bundled, read_fasta, tmp_path):
    seq = read_fasta(copy_bundled("lambda"))["gi|9626243|ref|NC_001416.1|"]
    rec = SeqRecord(Seq(seq), id="NC_001416.1", name="LAMBDA", description="phage lambda",
                    annotations={"molecule_type": "DNA"})
    path = tmp_path / f"lambda.{fmt}"
    SeqIO.write([rec], path, fmt)
    g = Genome(path)
    assert g.format == fmt and dict(g.contigs) == {"NC_001416.1": len(seq)}
    assert g.fetch("NC_001416.1", 40000, 40100) == seq[40000:40100].encode()


def test_maf_rows_become_ungapped_contigs(copy_bundled, read_fasta, tmp_path):
    from Bio import AlignIO

    human = read_fasta(copy_bundled("great_apes_human"))["chr22_epo"][:300]
    chimp = read_fasta(copy_bundled("great_apes_chimpanzee"))["chr22_epo"][:300]
    chimp_gapped = chimp[:100] + "---" + chimp[103:]
    rows = [SeqRecord(Seq(human), id="Hsap.22", annotations={"start": 17443628, "size": 300, "strand": 1,
                                                              "srcSize": 51304566}),
            SeqRecord(Seq(chimp_gapped), id="Ptro.22", annotations={"start": 15821905, "size": 297, "strand": 1,
                                                                     "srcSize": 50165558})]
    path = tmp_path / "two.maf"
    AlignIO.write([MultipleSeqAlignment(rows)], path, "maf")
    g = Genome(path)
    assert dict(g.contigs) == {"Hsap.22:17443628-17443928": 300, "Ptro.22:15821905-15822202": 297}
    assert g.fetch("Ptro.22:15821905-15822202", 0, 297) == (chimp[:100] + chimp[103:]).encode()


def test_crlf_fasta_is_read_correctly(copy_bundled, read_fasta, tmp_path):
    src = copy_bundled("mt_orang")
    crlf = tmp_path / "crlf.fa"
    crlf.write_bytes(src.read_bytes().replace(b"\n", b"\r\n"))
    seq = read_fasta(src)["MT_orang"]
    assert Genome(crlf).fetch("MT_orang", 55, 300) == seq[55:300].encode()


def test_read_only_folder_gets_its_index_in_the_cache(copy_bundled, private_cache, monkeypatch):
    path = copy_bundled("hg19_chr17_part")
    monkeypatch.setattr(genome_module, "is_writable_dir", lambda folder: False)
    g = Genome(path)
    assert g.fai_path.is_relative_to(private_cache) and g.fai_path.exists()
    assert not path.with_name(path.name + ".fai").exists()
    assert len(g.fetch("chr17", 0, 40000)) == 40000


def test_genome_pickles_without_its_handle_and_reopens(copy_bundled):
    g = Genome(copy_bundled("lambda"))
    contig = next(iter(g.contigs))
    first = g.fetch(contig, 0, 50)
    clone = pickle.loads(pickle.dumps(g))
    assert clone._handle is None
    assert clone.fetch(contig, 0, 50) == first


def test_bundled_genomes_are_all_there_and_small():
    paths = bundled_genomes()
    assert {"lambda", "mt_human", "mt_orang", "hg19_chr17_part", "great_apes"} <= set(paths)
    folder = paths["lambda"].parent
    total = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and f.suffix != ".fai")
    assert total < 8 * 1024 * 1024


def test_bgzip_written_by_biopython_reads_at_a_full_blocks_end(tmp_path):
    """Biopython fills BGZF blocks to 65,536 bytes; a read starting exactly at such a block's end was refused as a
    damaged file (Bio.bgzf will not address offset 65,536 inside a block)."""
    rng = np.random.default_rng(0)
    seq = rng.choice(np.frombuffer(b"ACGT", dtype=np.uint8), size=200_000).tobytes()
    path = tmp_path / "edge.fa.gz"
    writer = bgzf.BgzfWriter(str(path), "wb")
    writer.write(b">x\n" + b"".join(seq[i:i + 60] + b"\n" for i in range(0, len(seq), 60)))
    writer.close()
    start = (65536 - 3) // 61 * 60 + (65536 - 3) % 61  # the base at uncompressed offset 65,536 (header ">x\n")
    assert Genome(path).fetch("x", start, start + 11) == seq[start:start + 11]
    assert Genome(path).fetch("x", 0, 200_000) == seq
