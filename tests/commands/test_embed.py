"""`mambadna embed` at any length: chunked and streamed output equal the plain computation; layer choice, reverse-
complement averaging and BED regions do what they say; bad arguments end in one error line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mambadna import cli
from mambadna.commands import embed
from mambadna.commands.configs import EmbedConfig
from mambadna.commands.embed import Record, embed_records, read_records
from mambadna.config import tiny
from mambadna.model import MambaLM, pool
from mambadna.tokenizer import NucleotideTokenizer, reverse_complement_bytes

TOK = NucleotideTokenizer()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("embed") / "model"
    MambaLM(tiny(d_model=16, d_state=4, n_layer=3)).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def records():
    rng = np.random.default_rng(0)
    return [Record(f"s{i}", "".join(rng.choice(list("ACGT"), n)).encode(), "ab"[i % 2])
            for i, n in enumerate([150, 97, 203, 64, 181])]


def _plain_hidden(model, seq: bytes, layer=None):
    ids = torch.from_numpy(TOK.encode(seq))[None]  # (1, l)
    with torch.no_grad():
        if layer is None:
            return model.hidden_states(ids)[0]
        return model.trunk(ids, n_layers=layer + 1)[0][0]  # (l, d), the residual after block `layer`


@pytest.mark.parametrize("pooling", ["mean", "last", "cls"])
def test_chunked_pooling_equals_unchunked_for_every_mode(model_dir, records, pooling):
    model = MambaLM.from_pretrained(model_dir)
    plain, _ = embed_records(model, records, pooling, batch_size=2)
    chunked, _ = embed_records(model, records, pooling, batch_size=2, chunk_bp=17)
    np.testing.assert_allclose(chunked, plain, rtol=1e-4, atol=1e-5)
    want = pool(_plain_hidden(model, records[1].sequence)[None], None, pooling)[0].numpy()
    np.testing.assert_allclose(plain[1], want, rtol=1e-4, atol=1e-5)


def test_layer_choice_and_reverse_complement_average(model_dir, records):
    model = MambaLM.from_pretrained(model_dir)
    pooled, positions = embed_records(model, records, "mean", per_position=True, batch_size=3, layer=0)
    np.testing.assert_allclose(positions[2], _plain_hidden(model, records[2].sequence, layer=0).numpy(),
                               rtol=1e-4, atol=1e-5)
    final, _ = embed_records(model, records, "mean", batch_size=3)
    assert not np.allclose(pooled, final)  # control: block 0 is not the final output
    both, pos_both = embed_records(model, records, "mean", per_position=True, batch_size=2, rc_average=True,
                                   chunk_bp=50)
    seq = records[0].sequence
    fwd, rc = _plain_hidden(model, seq), _plain_hidden(model, reverse_complement_bytes(seq))
    np.testing.assert_allclose(both[0], ((fwd.mean(0) + rc.mean(0)) / 2).numpy(), rtol=1e-4, atol=1e-5)
    # the reverse strand's position t is the forward strand's l - 1 - t
    np.testing.assert_allclose(pos_both[0], ((fwd + rc.flip(0)) / 2).numpy(), rtol=1e-4, atol=1e-5)


def test_streamed_float16_per_position_file_and_throughput(model_dir, records, tmp_path):
    table = tmp_path / "seqs.tsv"
    table.write_text("name\tsequence\tlabel\n" + "".join(f"{r.name}\t{r.sequence.decode()}\t{r.label}\n"
                                                          for r in records))
    out = embed.run(EmbedConfig(checkpoint=str(model_dir), input=str(table), out_dir=str(tmp_path / "out"),
                                per_position=True, chunk_bp=40, batch_size=2))
    stream = np.load(tmp_path / "out" / "per_position.npy")
    assert stream.dtype == np.float16 and stream.shape == (sum(len(r.sequence) for r in records), 16)
    _, positions = embed_records(MambaLM.from_pretrained(model_dir), records, per_position=True, batch_size=2)
    np.testing.assert_allclose(stream.astype(np.float32), np.concatenate(positions), rtol=2e-3, atol=2e-3)
    assert out["bases"] == stream.shape[0] and out["bases_per_s"] > 0 and out["device"] == "cpu"


def test_bed_regions_of_a_reference(tmp_path, model_dir):
    fasta = tmp_path / "ref.fa"
    fasta.write_text(">chrA\nACGTACGTTTGGCCAAACGT\n>chrB\nGGGGCCCCAAAATTTT\n")
    bed = tmp_path / "r.bed"
    bed.write_text("chrA\t2\t10\tregion1_label=x\t0\t+\nchrB\t0\t6\tregion2_label=y\t0\t-\nchrA\t0\t4\n")
    got = read_records(fasta, label_regex=r"label=(\w)", regions=bed)
    assert [(r.name, r.sequence, r.label) for r in got] == [
        ("region1_label=x", b"GTACGTTT", "x"), ("region2_label=y", b"GGCCCC", "y"), ("chrA:0-4", b"ACGT", "")]
    assert cli.main(["embed", str(model_dir), str(fasta), "--regions", str(bed), "--out", str(tmp_path / "o")]) == 0
    assert np.load(tmp_path / "o" / "embeddings.npy").shape == (3, 16)


def test_bad_embed_arguments_are_one_line_errors(model_dir, records, tmp_path, capsys):
    table = tmp_path / "t.tsv"
    table.write_text("sequence\nACGTACGT\n")

    def error(*extra) -> str:
        assert cli.main(["embed", str(model_dir), str(table), "--out", str(tmp_path / "o"), *extra]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines and lines[-1].startswith("error: ")
        return lines[-1]

    assert "blocks 0..2" in error("--layer", "3")
    assert "not a valid regular expression" in error("--label-regex", "label=(")
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in error("--device", "cuda")
    assert "expected auto, cpu, cuda" in error("--device", "tpu")


@pytest.mark.timeout(300)
def test_two_processes_through_lightnings_predict_loop_equal_one(model_dir, records, tmp_path):
    """`--devices 2` (here two CPU processes on gloo, as it would be two GPUs) deals the batches out; every process
    writes its rows of the shared files, and the result equals a one-process run row for row."""
    import os
    import subprocess
    import sys

    table = tmp_path / "seqs.tsv"
    table.write_text("name\tsequence\tlabel\n" + "".join(f"{r.name}\t{r.sequence.decode()}\t{r.label}\n"
                                                          for r in records))
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "MASTER_ADDR": "127.0.0.1"}
    outs = {}
    for name, extra in (("one", []), ("two", ["--devices", "2"])):
        out = tmp_path / name
        proc = subprocess.run([sys.executable, "-m", "mambadna", "embed", str(model_dir), str(table), "--out", str(out),
                               "--device", "cpu", "--per-position", "--per-position-dtype", "float32",
                               "--batch-size", "2", *extra], capture_output=True, text=True, cwd=repo, env=env,
                              stdin=subprocess.DEVNULL, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[name] = {f: np.load(out / f"{f}.npy") for f in ("embeddings", "per_position")}
        assert not list(out.glob(".*")), list(out.glob(".*"))  # no partial files left
    for f in ("embeddings", "per_position"):
        np.testing.assert_allclose(outs["two"][f], outs["one"][f], rtol=1e-5, atol=1e-6, err_msg=f)
    assert np.abs(outs["one"]["embeddings"]).sum() > 0
