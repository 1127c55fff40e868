"""Masked-LM pretraining of the non-causal models through the task, the run config and the CLI: the loss and
its metrics (bits per masked base, masked-token accuracy), the objective a model can learn, the refused
combinations, and embeddings and fine-tuning from an MLM-pretrained bidirectional RC-equivariant model."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mambadna import cli
from mambadna import run_config as rc
from mambadna.config import tiny
from mambadna.model import MambaClassifier
from mambadna.tasks.classify import ClassifyTask
from mambadna.tasks.lm import LMTask
from mambadna.tokenizer import IGNORE_INDEX, MASK_ID

TINY = ["--set", "model.d_model=16", "--set", "model.d_state=4", "--window-bp", "64", "--batch-size", "8",
        "--set", "train.log_every_n_steps=1", "--set", "data.val_windows=8", "--set", "data.test_windows=16",
        "--no-progress"]
CADUCEUS = ["--bidirectional", "--rc-equivariant", "--objective", "mlm"]


def _mlm_batch(b=3, l=21, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 9, (b, l), generator=g)
    chosen = torch.rand(b, l, generator=g) < 0.3
    return {"input_ids": torch.where(chosen, torch.full_like(ids, MASK_ID), ids),
            "targets": torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))}


def test_mlm_loss_and_accuracy_are_over_the_masked_bases():
    torch.manual_seed(0)
    task = LMTask(tiny(d_model=16, d_state=4, bidirectional=True, rc_equivariant=True), rc.OptimSpec(),
                  objective="mlm")
    batch = _mlm_batch()
    loss, n_tokens, n_correct = task.scores(batch)
    logits = task.model(batch["input_ids"])  # (b, l, V)
    scored = batch["targets"] != IGNORE_INDEX
    want = F.cross_entropy(logits[scored], batch["targets"][scored])
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)
    assert int(n_tokens) == int(scored.sum())
    assert int(n_correct) == int((logits.argmax(-1)[scored] == batch["targets"][scored]).sum())


def test_objective_must_suit_the_model():
    bidirectional = tiny(bidirectional=True)
    with pytest.raises(ValueError, match=r"next-base prediction \(--objective clm\) needs a causal model"):
        LMTask(bidirectional, rc.OptimSpec())
    with pytest.raises(ValueError, match="objective must be one of"):
        LMTask(tiny(), rc.OptimSpec(), objective="mask")
    LMTask(tiny(), rc.OptimSpec(), objective="mlm")  # a causal model can be scored on masked bases too
    with pytest.raises(ValueError, match="needs objective 'clm'"):
        LMTask(tiny(), rc.OptimSpec(), tbptt=True, objective="mlm")
    with pytest.raises(ValueError, match="needs a causal model"):
        LMTask(bidirectional, rc.OptimSpec(), chunk_bp=16, objective="mlm")
    with pytest.raises(ValueError, match="needs a causal model"):
        ClassifyTask(MambaClassifier(tiny(rc_equivariant=True), 2), rc.OptimSpec(), ["a", "b"], chunk_bp=16)


@pytest.mark.parametrize("sets, message", [
    (["model.bidirectional=true"], r"--objective clm\) needs a causal model: a bidirectional model"),
    (["model.rc_equivariant=true", "objective=mlm", "train.tbptt=true"], "train.tbptt .* needs a causal model"),
    (["model.bidirectional=true", "objective=mlm", "train.chunk_bp=64"], r"chunk_bp \(--chunk-bp\) needs a causal"),
    (["objective=mlm", "masking.rate=0"], "masking.rate must be a positive number"),
    (["objective=mlm", "masking.mask_fraction=0.9", "masking.random_fraction=0.2"], "mask_fraction \\+ random"),
])
def test_run_config_refuses(sets, message):
    with pytest.raises(ValueError, match=message):
        rc.apply_overrides(rc.PretrainConfig(), sets)


def test_finetune_config_refuses_chunks_for_a_non_causal_model_from_scratch():
    with pytest.raises(ValueError, match="needs a causal model"):
        rc.apply_overrides(rc.FinetuneConfig(), ["model.rc_equivariant=true", "train.chunk_bp=32"])


def _metrics(run_dir) -> list[dict]:
    with open(run_dir / "logs" / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _error(capsys, argv) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    return err[-1]


def test_mlm_pretrain_finetune_embed_evaluate_through_the_cli(tmp_path, capsys):
    pre = tmp_path / "pre"
    assert cli.main(["pretrain", "--out", str(pre), "--steps", "8", "--lr", "1e-2", *CADUCEUS, "--mask-rate",
                     "0.2", "--set", "train.val_every_n_steps=8", *TINY]) == 0
    rows = _metrics(pre)
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 8 and np.mean(losses[-2:]) < losses[0]
    val = [r for r in rows if r.get("val/masked_accuracy")]
    assert len(val) == 1 and 0 <= float(val[0]["val/masked_accuracy"]) <= 1
    assert math.isclose(float(val[0]["val/bits_per_masked_base"]), float(val[0]["val/loss"]) / math.log(2),
                        rel_tol=1e-5)
    saved = json.loads((pre / "model" / "config.json").read_text())["config"]
    assert saved["bidirectional"] and saved["rc_equivariant"] and saved["bidirectional_weight_tie"]
    assert json.loads((pre / "run_config.json").read_text())["masking"]["rate"] == 0.2

    ft = tmp_path / "ft"
    assert cli.main(["finetune", "--pretrained", str(pre / "model"), "--out", str(ft), "--steps", "3",
                     "--pooling", "mean", *TINY[4:]]) == 0
    assert 0 <= json.loads((ft / "summary.json").read_text())["test/accuracy"] <= 1

    table = tmp_path / "seqs.tsv"
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), 30 + 3 * i)) for i in range(5)]
    rc_seqs = [s[::-1].translate(str.maketrans("ACGT", "TGCA")) for s in seqs]
    table.write_text("name\tsequence\n" + "".join(f"s{i}\t{s}\n" for i, s in enumerate(seqs + rc_seqs)))
    emb = tmp_path / "emb"
    assert cli.main(["embed", str(pre / "model"), str(table), "--out", str(emb), "--per-position"]) == 0
    vectors = np.load(emb / "embeddings.npy")
    assert vectors.shape == (10, 16) and np.isfinite(vectors).all()
    # an RC-equivariant model embeds a sequence and its reverse complement alike, padded in a batch or not
    np.testing.assert_allclose(vectors[:5], vectors[5:], rtol=1e-5, atol=1e-6)
    per_position = np.load(emb / "per_position.npy")
    assert per_position.shape == (2 * sum(30 + 3 * i for i in range(5)), 16)

    assert cli.main(["evaluate", str(pre / "model"), "--window-bp", "64", "--out", str(tmp_path / "ev")]) == 0
    evaluation = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert 0 < evaluation["test/bits_per_masked_base"] and 0 <= evaluation["test/masked_accuracy"] <= 1

    assert "needs a causal model" in _error(capsys, ["embed", str(pre / "model"), str(table), "--out",
                                                     str(tmp_path / "emb_chunked"), "--chunk-bp", "16"])
    assert "needs a causal model" in _error(capsys, ["generate", str(pre / "model"), "--out", str(tmp_path / "g.fa")])
    assert "--objective mlm" in _error(capsys, ["pretrain", "--out", str(tmp_path / "x"), "--bidirectional", *TINY])
