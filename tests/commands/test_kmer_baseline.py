"""The k-mer + logistic-regression baseline beside the model: `probe` (on the embedded sequences, read again from
source.json, with the embedding probe's folds) and `evaluate` (cross-validated on the test windows)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from mambadna import cli
from mambadna.commands.probe import KMER_TRAIN_WINDOWS, kmer_cross_validated, markov_bits_per_base, probe_embeddings
from mambadna.config import tiny
from mambadna.model import MambaClassifier, MambaLM

DNA = Path(__file__).resolve().parents[2] / "mambadna" / "data" / "dna"


def _sequences(n: int = 12, length_bp: int = 60, seed: int = 0) -> tuple[list[str], list[str]]:
    """AT-only vs GC-only sequences: k-mer counts separate them perfectly, random embeddings hardly."""
    rng = np.random.default_rng(seed)
    seqs = ["".join(rng.choice(list("AT" if i % 2 else "GC"), length_bp)) for i in range(n)]
    return seqs, ["at" if i % 2 else "gc" for i in range(n)]


def test_kmer_cross_validated_uses_the_probes_folds():
    seqs, labels = _sequences()
    kmer = kmer_cross_validated(seqs, labels, folds=3)
    assert kmer["kmer_baseline/accuracy"] == 1.0 and kmer["kmer_baseline/folds"] == 3
    assert kmer["kmer_baseline/k"] == "4,5,6"
    assert probe_embeddings(np.random.default_rng(0).normal(size=(12, 4)), labels, folds=3)["folds"] == 3


def test_probe_prints_the_kmer_baseline_of_the_embedded_fasta(tmp_path, capsys):
    MambaLM(tiny(d_model=16, d_state=4)).save_pretrained(tmp_path / "m")
    seqs, labels = _sequences()
    fasta = tmp_path / "seqs.fa"
    fasta.write_text("".join(f">s{i} class={lab}\n{seq}\n" for i, (seq, lab) in enumerate(zip(seqs, labels))))
    emb = tmp_path / "emb"
    assert cli.main(["embed", str(tmp_path / "m"), str(fasta), "--out", str(emb), "--label-regex", r"class=(\w+)",
                     "--max-length-bp", "40"]) == 0
    assert json.loads((emb / "source.json").read_text())["input"] == str(fasta.resolve())
    assert cli.main(["probe", str(emb), "--folds", "3"]) == 0
    result = json.loads((emb / "probe.json").read_text())
    assert result["kmer_baseline/accuracy"] == 1.0 and result["kmer_baseline/folds"] == result["folds"] == 3
    out = capsys.readouterr().out
    assert "  accuracy: " in out and "  kmer_baseline/accuracy: 1.0000" in out

    fasta.unlink()  # the sequences are gone: the probe still runs and says why there is no baseline
    assert cli.main(["probe", str(emb), "--folds", "3", "--overwrite"]) == 0
    assert json.loads((emb / "probe.json").read_text())["kmer_baseline"].startswith("not computed: the embedded")


def test_evaluate_prints_the_kmer_baseline_on_the_test_windows(tmp_path, capsys):
    model = MambaClassifier(tiny(d_model=16, d_state=4), 2, "mean", ["at", "gc"])
    model.save_pretrained(tmp_path / "clf")
    seqs, labels = _sequences(n=20)
    table = tmp_path / "test.tsv"
    table.write_text("sequence\tlabel\n" + "".join(f"{s}\t{lab}\n" for s, lab in zip(seqs, labels)))
    assert cli.main(["evaluate", str(tmp_path / "clf"), "--test", str(table), "--window-bp", "32",
                     "--out", str(tmp_path / "ev")]) == 0
    evaluation = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert "test/accuracy" in evaluation and evaluation["kmer_baseline/accuracy"] == 1.0
    assert evaluation["kmer_baseline/fitted_on"] == "the test sequences, cross-validated"  # no training file here
    assert "kmer_baseline/accuracy: 1.0000" in capsys.readouterr().out


def test_evaluate_on_species_windows_fits_the_baseline_on_training_windows(tmp_path):
    genomes = tmp_path / "genomes"
    genomes.mkdir()
    for source in sorted(DNA.glob("*.fa")):
        shutil.copy(source, genomes / source.name)
    classes = sorted(p.stem for p in genomes.glob("*.fa"))
    MambaClassifier(tiny(d_model=16, d_state=4), len(classes), "mean", classes).save_pretrained(tmp_path / "clf")
    assert cli.main(["evaluate", str(tmp_path / "clf"), "--manifest", str(genomes), "--window-bp", "64",
                     "--out", str(tmp_path / "ev")]) == 0
    evaluation = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    # held-out blocks' windows overlap: the baseline learns from the training split, as the classifier did
    assert evaluation["kmer_baseline/fitted_on"] == f"{KMER_TRAIN_WINDOWS} training windows"
    assert 1 / len(classes) < evaluation["kmer_baseline/accuracy"] <= 1


def test_markov_baseline_bits_per_base():
    rng = np.random.default_rng(0)
    periodic = "ACGGT" * 200  # the next base is fixed by the 3 before it
    assert markov_bits_per_base([periodic], [periodic]) < 0.05
    uniform = ["".join(rng.choice(list("ACGT"), 4000)) for _ in range(2)]
    assert 1.9 < markov_bits_per_base(uniform[:1], uniform[1:], order=2) <= 2.05


def test_evaluate_puts_a_markov_chain_beside_a_language_model(tmp_path, capsys):
    MambaLM(tiny(d_model=16, d_state=4)).save_pretrained(tmp_path / "lm")
    assert cli.main(["evaluate", str(tmp_path / "lm"), "--genome", str(DNA / "lambda_phage.fa"), "--window-bp", "64",
                     "--out", str(tmp_path / "ev")]) == 0
    evaluation = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert 1.5 < evaluation["kmer_baseline/bits_per_base"] < 2.0 < evaluation["test/bits_per_base"]  # untrained
    assert evaluation["kmer_baseline/fitted_on"].startswith("order-3 Markov chain")
    assert "kmer_baseline/bits_per_base: 1." in capsys.readouterr().out
