"""Bad input ends with one `error: ...` line and exit code 2 (or a warning), never a traceback."""

from __future__ import annotations

import json

import pytest
import torch

from mambadna import cli
from mambadna.config import tiny
from mambadna.model import MambaLM

TINY = ["--set", "model.d_model=16", "--set", "model.d_state=4", "--window-bp", "64", "--batch-size", "4",
        "--set", "data.val_windows=4", "--set", "data.test_windows=8", "--no-progress"]


def run_error(capsys, argv) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    assert "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("lm") / "model"
    MambaLM(tiny(d_model=16, d_state=4)).save_pretrained(directory)
    (directory / "training.json").write_text(json.dumps({"window_bp": 64}))
    return directory


def test_unknown_subcommand_and_flag(capsys):
    assert "invalid choice" in run_error(capsys, ["fly"])
    assert "unrecognized arguments: --bogus" in run_error(capsys, ["pretrain", "--bogus"])


def test_unknown_set_key_lists_valid_keys(capsys):
    msg = run_error(capsys, ["pretrain", "--set", "train.max_stepz=3"])
    assert "max_stepz" in msg and "valid keys: max_steps" in msg


def test_missing_and_unreadable_data(capsys, tmp_path):
    assert "no such" in run_error(capsys, ["pretrain", "--genome", str(tmp_path / "nope.fa"), *TINY]).lower()
    bad = tmp_path / "bad.fa"
    bad.write_bytes(b"\x00\x01 this is not a fasta\n")
    run_error(capsys, ["pretrain", "--genome", str(bad), "--out", str(tmp_path / "o"), *TINY])
    assert "no such" in run_error(capsys, ["finetune", "--manifest", str(tmp_path / "m.tsv"), *TINY]).lower()
    run_error(capsys, ["embed", str(tmp_path / "nodir"), str(bad)])
    assert "recipe" in run_error(capsys, ["pretrain", "--recipe", str(tmp_path / "r.toml")])


def test_checkpoint_of_other_vocabulary_or_shape(capsys, tmp_path, lm_dir):
    byte_dir = tmp_path / "byte"
    MambaLM(tiny(d_model=16, d_state=4, tokenizer="byte", vocab_size=264)).save_pretrained(byte_dir)
    msg = run_error(capsys, ["finetune", "--pretrained", str(byte_dir), "--out", str(tmp_path / "a"), *TINY[4:]])
    assert "'byte' tokenizer" in msg and "model.tokenizer=byte" in msg
    msg = run_error(capsys, ["finetune", "--pretrained", str(lm_dir), "--set", "model.d_model=32",
                             "--out", str(tmp_path / "b"), *TINY[4:]])
    assert "d_model: checkpoint 16 vs run 32" in msg
    # weights that do not fit the config (another model shape saved under this config.json)
    broken = tmp_path / "broken"
    MambaLM(tiny(d_model=32, d_state=4)).save_pretrained(broken)
    meta = json.loads((broken / "config.json").read_text())
    meta["config"]["d_model"] = 16
    (broken / "config.json").write_text(json.dumps(meta))
    assert "shape mismatches" in run_error(capsys, ["generate", str(broken)])


def test_finetune_with_one_class(capsys, tmp_path):
    table = tmp_path / "one.csv"
    table.write_text("sequence,label\n" + "".join(f"ACGTACGTAC{'G' * i},x\n" for i in range(6)))
    msg = run_error(capsys, ["finetune", "--train", str(table), "--out", str(tmp_path / "o"), *TINY])
    assert "at least 2 classes" in msg


def test_window_longer_than_pretraining_warns(tmp_path, lm_dir):
    from mambadna.commands.train import TaskWarning, load_backbone

    with pytest.warns(TaskWarning, match="longer than the 64 bp windows"):
        load_backbone(lm_dir, tiny(), window_bp=128)


def test_out_of_memory_names_the_knobs(capsys, tmp_path, monkeypatch):
    def oom(self, batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("mambadna.tasks.lm.LMTask.loss", oom)
    msg = run_error(capsys, ["pretrain", "--out", str(tmp_path), "--steps", "2", *TINY])
    for knob in ("data.batch_size", "data.window_bp", "activation_checkpointing", "bf16-mixed"):
        assert knob in msg


def test_nan_loss_stops_with_step(capsys, tmp_path):
    msg = run_error(capsys, ["pretrain", "--out", str(tmp_path), "--steps", "3", "--lr", "1e30",
                             "--set", "optim.grad_clip=0", "--set", "optim.warmup_steps=0", *TINY])
    assert "loss became nan at step" in msg and "checkpoint" in msg


def test_resume_without_checkpoint(capsys, tmp_path):
    assert "holds no run to continue" in run_error(capsys, ["pretrain", "--resume", "--out", str(tmp_path), *TINY])
