"""The long-context features through the training task and the CLI: `pretrain --chunk-bp`, `pretrain --tbptt`,
`embed --chunk-bp`, and the settings that cannot go together."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from mambadna import cli
from mambadna.config import tiny
from mambadna.model import MambaLM
from mambadna import run_config as rc
from mambadna.objective import next_token_targets
from mambadna.tasks.lm import LMTask
from mambadna.tokenizer import IGNORE_INDEX, PAD_ID

TINY = ["--set", "model.d_model=16", "--set", "model.d_state=4", "--window-bp", "64", "--batch-size", "8",
        "--set", "train.log_every_n_steps=1", "--set", "data.val_windows=8", "--no-progress"]
RUN_FILES = ("run_config.json", "summary.json", "model/config.json", "model/model.safetensors",
             "checkpoints/last.ckpt", "logs/metrics.csv")


def metrics(run_dir) -> list[dict]:
    with open(run_dir / "logs" / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def run_error(capsys, argv) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err), err
    return err[-1]


def test_pretrain_chunk_bp_runs_and_writes_the_run(tmp_path):
    out = tmp_path / "chunked"
    assert cli.main(["pretrain", "--out", str(out), "--steps", "2", "--chunk-bp", "64", *TINY]) == 0
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    losses = [float(r["train/loss"]) for r in metrics(out) if r.get("train/loss")]
    assert len(losses) == 2 and np.isfinite(losses).all()


def test_chunked_task_loss_equals_plain_task_loss_with_padding():
    torch.manual_seed(0)
    config = tiny(d_model=16, d_state=4)
    plain = LMTask(config, rc.OptimSpec())
    chunked = LMTask(config, rc.OptimSpec(), model=MambaLM(config), chunk_bp=16)
    chunked.model.load_state_dict(plain.model.state_dict())
    input_ids = torch.randint(5, 9, (3, 50), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.ones(3, 50, dtype=torch.bool)
    attention_mask[1, 37:] = False  # right padding, as PadCollate gives
    input_ids[1, 37:] = PAD_ID
    input_ids[2, 20] = PAD_ID  # a pad id inside a window is not a target either
    inputs, targets = next_token_targets(input_ids, attention_mask, PAD_ID)
    assert int((targets == IGNORE_INDEX).sum()) == (50 - 37) + 1  # row 1: ids 37..49; row 2: id 20
    batch = {"input_ids": inputs, "targets": targets}
    want, got = plain.loss(batch), chunked.loss(batch)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    want.backward()
    got.backward()
    for (name, a), (_, b) in zip(plain.model.named_parameters(), chunked.model.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_pretrain_tbptt_runs_validates_and_writes_the_run(tmp_path):
    out = tmp_path / "tbptt"
    assert cli.main(["pretrain", "--out", str(out), "--steps", "2", "--tbptt", "--chunk-bp", "32", *TINY,
                     "--set", "train.val_every_n_steps=2"]) == 0
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    rows = metrics(out)
    assert len([r for r in rows if r.get("train/loss")]) == 2
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert len(val) == 1 and 0 < val[0] < 4


def test_incompatible_long_context_settings_are_clear_errors(capsys):
    msg = run_error(capsys, ["pretrain", "--chunk-bp", "64", "--activation-checkpointing"])
    assert "--activation-checkpointing" in msg and "--chunk-bp" in msg and "mutually exclusive" in msg
    msg = run_error(capsys, ["pretrain", "--tbptt", "--activation-checkpointing"])
    assert "--tbptt" in msg and "--chunk-bp" in msg
    assert "positive" in run_error(capsys, ["pretrain", "--chunk-bp", "0"])
    assert "pretraining only" in run_error(capsys, ["finetune", "--set", "train.tbptt=true"])
    assert "seqlen_warmup" in run_error(capsys, ["pretrain", "--tbptt", "--set", "train.seqlen_warmup_from_bp=32"])
    with pytest.raises(ValueError, match="does not combine"):
        LMTask(tiny(d_model=16, d_state=4), rc.OptimSpec(), activation_checkpointing=True, chunk_bp=64)


def test_embed_chunk_bp_equals_unchunked_embed(tmp_path, capsys):
    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    MambaLM(tiny(d_model=16, d_state=4)).save_pretrained(model_dir)
    rng = np.random.default_rng(0)
    table = tmp_path / "seqs.tsv"
    lengths = [150, 97, 203, 64, 181]
    table.write_text("name\tsequence\n" + "".join(f"s{i}\t{''.join(rng.choice(list('ACGT'), n))}\n"
                                                  for i, n in enumerate(lengths)))
    outputs = {}
    for name, extra in (("plain", []), ("chunked", ["--chunk-bp", "32"])):
        assert cli.main(["embed", str(model_dir), str(table), "--out", str(tmp_path / name), "--per-position",
                         "--per-position-dtype", "float32", "--batch-size", "2", *extra]) == 0
        outputs[name] = {f: np.load(tmp_path / name / f"{f}.npy") for f in ("embeddings", "per_position")}
    assert outputs["chunked"]["per_position"].shape == (sum(lengths), 16)
    for f in ("embeddings", "per_position"):
        np.testing.assert_allclose(outputs["chunked"][f], outputs["plain"][f], rtol=1e-4, atol=1e-5, err_msg=f)
    assert "chunk_bp must be a positive int" in run_error(
        capsys, ["embed", str(model_dir), str(table), "--out", str(tmp_path / "bad"), "--chunk-bp", "0"])
