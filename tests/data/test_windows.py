"""Pretraining windows on real DNA: determinism, workers, splits, DDP ranks, N skipping, RC, BED."""

import torch
from torch.utils.data import DataLoader

from mambadna.data import Genome, GenomeWindowDataset, bundled_path
from mambadna.tokenizer import NucleotideTokenizer

TOK = NucleotideTokenizer()


def _windows(ds):
    return [ds.window(i)[:2] for i in range(len(ds))]


def _multi_contig_genome(copy_bundled, tmp_path):
    """All bundled single-genome FASTAs in one file: 5 real contigs of very different lengths."""
    path = tmp_path / "multi.fa"
    path.write_bytes(b"".join(copy_bundled(n).read_bytes() for n in
                              ["lambda", "mt_human", "mt_orang", "hg19_chr17_part", "great_apes_human"]))
    return path


def test_items_are_token_ids_of_the_genome(copy_bundled):
    g = Genome(copy_bundled("hg19_chr17_part"))
    ds = GenomeWindowDataset(g, 256, seed=3)
    contig, start, raw, _ = ds.window(5)
    item = ds[5]
    assert item["input_ids"].dtype == torch.long and item["input_ids"].shape == (256,)
    assert torch.equal(item["input_ids"], torch.from_numpy(TOK.encode(g.fetch(contig, start, start + 256))))


def test_same_seed_and_epoch_give_same_windows_other_epochs_differ(copy_bundled):
    path = copy_bundled("lambda")
    a, b = GenomeWindowDataset(path, 512, seed=7), GenomeWindowDataset(path, 512, seed=7)
    assert _windows(a) == _windows(b)
    a.set_epoch(1)
    assert _windows(a) != _windows(b)
    b.set_epoch(1)
    assert [torch.equal(a[i]["input_ids"], b[i]["input_ids"]) for i in range(len(a))] == [True] * len(a)
    assert _windows(GenomeWindowDataset(path, 512, seed=8)) != _windows(b)


def test_windows_in_one_epoch_never_repeat(copy_bundled):
    ds = GenomeWindowDataset(copy_bundled("lambda"), 128, seed=0)
    starts = _windows(ds)
    assert len(set(starts)) == len(starts) == 48502 * 8 // 10 // 128


def test_two_workers_give_the_same_batches_as_none(copy_bundled):
    ds = GenomeWindowDataset(copy_bundled("great_apes_orangutan"), 1024, seed=1, reverse_complement=True)
    ds.set_epoch(2)
    serial = [b["input_ids"] for b in DataLoader(ds, batch_size=8)]
    parallel = [b["input_ids"] for b in DataLoader(ds, batch_size=8, num_workers=2)]
    assert len(serial) == len(parallel) > 10
    assert all(torch.equal(x, y) for x, y in zip(serial, parallel))


def _covered(ds):
    return {(c, s, s + ds.window_bp) for c, s in _windows(ds)}


def _overlap(a, b):
    return any(ca == cb and sa < eb and sb < ea for ca, sa, ea in a for cb, sb, eb in b)


def test_block_split_of_a_single_contig_never_overlaps(copy_bundled):
    path = copy_bundled("lambda")
    parts = {s: GenomeWindowDataset(path, 1000, split=s, num_windows=200, seed=s == "val") for s in
             ("train", "val", "test")}
    cov = {s: _covered(ds) for s, ds in parts.items()}
    assert not _overlap(cov["train"], cov["val"]) and not _overlap(cov["train"], cov["test"])
    assert not _overlap(cov["val"], cov["test"])
    n = 48502
    assert all(e <= round(n * 0.8) for _, _, e in cov["train"])
    assert all(round(n * 0.8) <= s and e <= round(n * 0.9) for _, s, e in cov["val"])


def test_contig_split_by_name(copy_bundled, tmp_path):
    path = _multi_contig_genome(copy_bundled, tmp_path)
    kw = dict(val_contigs=["MT_human"], test_contigs=["MT_orang"], num_windows=300)
    contigs = {s: {c for c, _ in _windows(GenomeWindowDataset(path, 500, split=s, **kw))} for s in
               ("train", "val", "test")}
    assert contigs["val"] == {"MT_human"} and contigs["test"] == {"MT_orang"}
    assert not contigs["train"] & {"MT_human", "MT_orang"}


def test_windows_are_length_weighted_over_contigs(copy_bundled, tmp_path):
    g = Genome(_multi_contig_genome(copy_bundled, tmp_path))
    ds = GenomeWindowDataset(g, 100, split="all", num_windows=4000)
    counts = {c: 0 for c in g.contigs}
    for c, _ in _windows(ds):
        counts[c] += 1
    starts = {c: n - 99 for c, n in g.contigs.items()}
    total = sum(starts.values())
    for c, n in counts.items():
        assert abs(n / 4000 - starts[c] / total) < 0.01, (c, n)


def test_two_ranks_never_draw_the_same_window(copy_bundled):
    path = copy_bundled("mt_human")
    ranks = [GenomeWindowDataset(path, 64, seed=5, rank=r, world_size=2) for r in range(2)]
    for ds in ranks:
        ds.set_epoch(3)
    a, b = set(_windows(ranks[0])), set(_windows(ranks[1]))
    assert len(a) == len(ranks[0]) and len(b) == len(ranks[1])
    assert not a & b
    whole = GenomeWindowDataset(path, 64, seed=5)
    whole.set_epoch(3)
    assert a | b == set(_windows(whole))


def test_windows_with_too_many_n_are_redrawn(copy_bundled, read_fasta, tmp_path):
    seq = read_fasta(copy_bundled("lambda"))["gi|9626243|ref|NC_001416.1|"]
    masked = seq[:10000] + "N" * 20000 + seq[30000:]
    path = tmp_path / "masked.fa"
    path.write_text(">lambda_masked\n" + "\n".join(masked[i:i + 70] for i in range(0, len(masked), 70)) + "\n")
    ds = GenomeWindowDataset(path, 1000, split="all", max_n_fraction=0.05, num_windows=100, seed=2)
    for i in range(len(ds)):
        assert (ds[i]["input_ids"] == 9).float().mean() <= 0.05
    loose = GenomeWindowDataset(path, 1000, split="all", max_n_fraction=1.0, num_windows=100, seed=2)
    assert any((loose[i]["input_ids"] == 9).all() for i in range(len(loose)))


def test_reverse_complement_augmentation(copy_bundled):
    path = copy_bundled("mt_orang")
    plain = GenomeWindowDataset(path, 300, seed=4)
    aug = GenomeWindowDataset(path, 300, seed=4, reverse_complement=True)
    flipped = 0
    for i in range(len(plain)):
        # the whole window read (inputs and the one target past them): the augmented one is its reverse complement
        x, y = (torch.cat([ds[i]["input_ids"], ds[i]["targets"][-1:]]) for ds in (plain, aug))
        assert torch.equal(plain[i]["targets"][:-1], plain[i]["input_ids"][1:])
        if not torch.equal(x, y):
            assert torch.equal(torch.as_tensor(TOK.reverse_complement(x.numpy())), y)
            flipped += 1
    assert 0.3 < flipped / len(plain) < 0.7


def test_bed_restricts_windows_to_its_intervals(copy_bundled):
    path = copy_bundled("great_apes_human")
    bed = bundled_path("great_apes_human").with_name("human.blocks.bed")
    blocks = [tuple(int(x) for x in line.split("\t")[1:3]) for line in bed.read_text().splitlines()]
    ds = GenomeWindowDataset(path, 2048, split="all", bed=bed, num_windows=300)
    for _, start in _windows(ds):
        assert any(lo <= start and start + 2048 <= hi for lo, hi in blocks)
