"""ContigStreams: consecutive windows per stream, every base once, resets exactly at piece starts."""

import random

import pytest
import torch
from torch.utils.data import DataLoader

from mambadna.data import DataError
from mambadna.data.streams import ContigStreams
from mambadna.tokenizer import NucleotideTokenizer

CONTIGS = {"chrA": 250, "chrB": 97, "chrC": 40, "chrD": 1}


@pytest.fixture
def fasta(tmp_path):
    rng = random.Random(0)
    seqs = {name: "".join(rng.choice("ACGTN") for _ in range(n)) for name, n in CONTIGS.items()}
    path = tmp_path / "toy.fa"
    path.write_text("".join(f">{name}\n" + "\n".join(s[i : i + 60] for i in range(0, len(s), 60)) + "\n"
                            for name, s in seqs.items()))
    return path, seqs


def _walk(ds):
    """Per stream: a list of pieces, each the (inputs, targets, start_bp) of its windows in order."""
    streams = [[] for _ in range(ds.batch_size)]
    for step in range(len(ds)):
        batch = ds[step]
        for s in range(ds.batch_size):
            if batch["start_bp"][s] < 0:
                assert bool(batch["reset"][s]) and bool((batch["targets"][s] == -100).all())
                continue
            if batch["reset"][s]:
                streams[s].append([])
            streams[s][-1].append((batch["input_ids"][s], batch["targets"][s], int(batch["start_bp"][s])))
    return streams


@pytest.mark.parametrize("window_bp, batch_size, piece_bp", [(16, 2, None), (7, 3, 50), (300, 1, None)])
def test_each_stream_walks_its_pieces_consecutively_and_covers_every_base_once(fasta, window_bp, batch_size,
                                                                               piece_bp):
    path, seqs = fasta
    tok = NucleotideTokenizer()
    ds = ContigStreams(path, window_bp, batch_size, split="all", piece_bp=piece_bp)
    covered = {name: [0] * len(s) for name, s in seqs.items()}
    for groups, (pieces, _) in zip(_walk(ds), ds._streams):
        assert len(groups) == len(pieces)
        for windows, piece in zip(groups, pieces):
            start, n = piece.start_bp, piece.length_bp - 1
            assert [w[2] for w in windows] == [start + j * window_bp for j in range(len(windows))]
            inputs = torch.cat([w[0] for w in windows])  # (n_windows * window_bp,)
            targets = torch.cat([w[1] for w in windows])
            want = torch.from_numpy(tok.encode(seqs[piece.contig][start : piece.end_bp]))
            assert torch.equal(inputs[:n], want[:-1]) and torch.equal(targets[:n], want[1:])
            assert bool((targets[n:] == -100).all()) and bool((inputs[n:] == tok.pad_id).all())
            assert len(inputs) - n < window_bp
            for i in range(start, piece.end_bp):
                covered[piece.contig][i] += 1
    # every base of every contig that has a next base is in exactly one piece; a 1-bp contig predicts nothing
    assert all(c == 1 for name, cov in covered.items() if name != "chrD" for c in cov)
    assert covered["chrD"] == [0]


def test_streams_are_balanced_and_pieces_bounded(fasta):
    path, _ = fasta
    ds = ContigStreams(path, 10, 4, split="all")
    assert all(p.length_bp <= ds.piece_bp for p in ds.pieces)
    loads = [sum(p.length_bp for p in pieces) for pieces, _ in ds._streams]
    assert max(loads) - min(loads) <= ds.piece_bp
    assert len(ds) == max(int(cum[-1]) for _, cum in ds._streams)


def test_ddp_ranks_get_disjoint_streams_and_the_same_number_of_steps(fasta):
    path, _ = fasta
    ranks = [ContigStreams(path, 8, 2, split="all", rank=r, world_size=2, seed=3) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1])
    pieces = [{p for pieces, _ in ds._streams for p in pieces} for ds in ranks]
    assert not pieces[0] & pieces[1]
    assert pieces[0] | pieces[1] == set(ranks[0].pieces)


def test_shuffle_is_a_function_of_seed_and_epoch(fasta):
    path, _ = fasta
    a = ContigStreams(path, 8, 3, split="all", piece_bp=24, seed=5)
    b = ContigStreams(path, 8, 3, split="all", piece_bp=24, seed=5)
    deals = []
    for epoch in range(4):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        deals.append([tuple(p) for p, _ in a._streams])
        assert deals[-1] == [tuple(p) for p, _ in b._streams]
    assert len(set(map(tuple, deals))) > 1


def test_dataloader_keeps_the_order(fasta):
    path, _ = fasta
    ds = ContigStreams(path, 16, 2, split="all")
    for step, batch in enumerate(DataLoader(ds, batch_size=None, shuffle=False)):
        assert torch.equal(batch["input_ids"], ds[step]["input_ids"])
    assert step == len(ds) - 1


@pytest.mark.parametrize("kwargs, match", [
    (dict(window_bp=0, batch_size=2), "window_bp must be a positive integer"),
    (dict(window_bp=8, batch_size=0), "batch_size must be a positive integer"),
    (dict(window_bp=8, batch_size=2, piece_bp=-1), "piece_bp must be a positive integer"),
    (dict(window_bp=8, batch_size=2, rank=2, world_size=2), "rank"),
])
def test_bad_arguments_are_rejected(fasta, kwargs, match):
    with pytest.raises(DataError, match=match):
        ContigStreams(fasta[0], split="all", **kwargs)


def test_step_out_of_range(fasta):
    ds = ContigStreams(fasta[0], 16, 2, split="all")
    with pytest.raises(IndexError):
        ds[len(ds)]
