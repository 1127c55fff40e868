"""Smoke tests of every `mambadna` subcommand on the bundled DNA: a few steps of a tiny model, in-process."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mambadna import __version__, cli

TINY = ["--set", "model.d_model=16", "--set", "model.d_state=4", "--window-bp", "64", "--batch-size", "8",
        "--set", "train.log_every_n_steps=1", "--set", "data.val_windows=8", "--set", "data.test_windows=16",
        "--no-progress"]


def train_losses(run_dir):
    with open(run_dir / "logs" / "metrics.csv", newline="") as fh:
        return [float(r["train/loss_step"] if "train/loss_step" in r else r["train/loss"]) for r in csv.DictReader(fh)
                if (r.get("train/loss_step") or r.get("train/loss"))]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "pre"
    code = cli.main(["pretrain", "--out", str(out), "--steps", "8", "--lr", "1e-2", *TINY])
    assert code == 0
    return out


def test_pretrain_writes_run_and_loss_falls(pretrained):
    for name in ("run_config.json", "summary.json", "curves.png", "model/config.json", "model/model.safetensors",
                 "checkpoints/last.ckpt"):
        assert (pretrained / name).is_file(), name
    losses = train_losses(pretrained)
    assert len(losses) >= 6
    assert np.mean(losses[-2:]) < losses[0] - 0.3
    resolved = json.loads((pretrained / "run_config.json").read_text())
    assert resolved["model"]["d_model"] == 16 and resolved["train"]["max_steps"] == 8


def test_finetune_evaluate_embed_probe_generate(pretrained, tmp_path, capsys):
    ft = tmp_path / "ft"
    code = cli.main(["finetune", "--pretrained", str(pretrained / "model"), "--out", str(ft), "--steps", "4",
                     "--pooling", "mean", *TINY[4:]])
    assert code == 0
    summary = json.loads((ft / "summary.json").read_text())
    assert summary["classes"] == ["human_chr17", "human_mt", "orangutan_mt", "phage_lambda"]
    assert 0 <= summary["test/accuracy"] <= 1
    matrix = np.array(summary["confusion_matrix"])
    assert matrix.shape == (4, 4) and matrix.sum() == 16
    for name in ("confusion_matrix.png", "confusion_matrix.csv", "curves.png", "model/model.safetensors"):
        assert (ft / name).is_file(), name

    assert cli.main(["evaluate", str(ft / "model"), "--window-bp", "64", "--out", str(tmp_path / "ev")]) == 0
    evaluation = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert evaluation["model_class"] == "MambaClassifier" and "test/accuracy" in evaluation
    # how many test windows is a setting like any other (the run's data section), from a flag or a recipe
    assert cli.main(["evaluate", str(ft / "model"), "--window-bp", "64", "--set", "data.test_windows=12",
                     "--accelerator", "cpu", "--out", str(tmp_path / "ev12")]) == 0
    assert np.array(json.loads((tmp_path / "ev12" / "evaluation.json").read_text())["confusion_matrix"]).sum() == 12
    recipe = tmp_path / "evaluate.toml"
    recipe.write_text(f'checkpoint = "{ft / "model"}"\n[data]\nwindow_bp = 64\ntest_windows = 20\n')
    assert cli.main(["evaluate", str(ft / "model"), "--recipe", str(recipe), "--out", str(tmp_path / "ev20")]) == 0
    assert np.array(json.loads((tmp_path / "ev20" / "evaluation.json").read_text())["confusion_matrix"]).sum() == 20

    table = tmp_path / "seqs.tsv"
    rng = np.random.default_rng(0)
    rows = ["name\tsequence\tlabel"] + [
        f"s{i}\t{''.join(rng.choice(list('ACGT' if i % 2 else 'AT'), 40 + i))}\t{'mixed' if i % 2 else 'at_rich'}"
        for i in range(12)]
    table.write_text("\n".join(rows) + "\n")
    emb = tmp_path / "emb"
    assert cli.main(["embed", str(pretrained / "model"), str(table), "--out", str(emb), "--per-position"]) == 0
    vectors = np.load(emb / "embeddings.npy")
    assert vectors.shape == (12, 16) and np.isfinite(vectors).all()
    per_position = np.load(emb / "per_position.npy")
    assert per_position.shape == (sum(40 + i for i in range(12)), 16)
    with open(emb / "index.tsv", newline="") as fh:
        index = list(csv.DictReader(fh, delimiter="\t"))
    assert [int(r["length_bp"]) for r in index] == [40 + i for i in range(12)]
    assert int(index[-1]["pos_end"]) == per_position.shape[0]

    assert cli.main(["probe", str(emb), "--folds", "3"]) == 0
    probe = json.loads((emb / "probe.json").read_text())
    assert probe["folds"] == 3 and 0 <= probe["accuracy"] <= 1
    assert (emb / "pca.png").is_file()

    fasta = tmp_path / "gen.fa"
    assert cli.main(["generate", str(pretrained / "model"), "--prompt", "GATTACA", "--num", "2", "--length-bp", "30",
                     "--out", str(fasta)]) == 0
    records = fasta.read_text().split(">")[1:]
    assert len(records) == 2
    seq = "".join(records[0].splitlines()[1:])
    assert seq.startswith("GATTACA") and len(seq) == 37 and set(seq) <= set("ACGTN")
    assert "wrote 2 sequence(s)" in capsys.readouterr().out


def write_table(path, n, seed, length_bp=48):
    """AT-only vs GC-only sequences: separable from base composition, so a few steps must lower the loss."""
    rng = np.random.default_rng(seed)
    rows = ["sequence,label"] + [f"{''.join(rng.choice(list('AT' if i % 2 else 'GC'), length_bp))},"
                                 f"{'at' if i % 2 else 'gc'}" for i in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_finetune_labelled_table_from_scratch_loss_falls(tmp_path):
    train, val = write_table(tmp_path / "train.csv", 64, 0), write_table(tmp_path / "val.csv", 16, 1)
    out = tmp_path / "ft"
    code = cli.main(["finetune", "--train", str(train), "--val", str(val), "--test", str(val), "--out", str(out),
                     "--steps", "12", "--lr", "1e-2", "--pooling", "mean", *TINY[:4], "--batch-size", "16",
                     "--set", "train.log_every_n_steps=1", "--no-progress"])
    assert code == 0
    losses = train_losses(out)
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == ["at", "gc"] and summary["test/accuracy"] > 0.8


def test_finetune_trains_from_parquet_and_a_datasets_folder(tmp_path):
    """The labelled-table formats the data layer reads (one list of suffixes, mambadna/data/tables.py) train."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("AT" if i % 2 else "GC"), 48)) for i in range(32)]
    pq.write_table(pa.table({"sequence": seqs, "label": ["at" if i % 2 else "gc" for i in range(32)]}),
                   tmp_path / "train.parquet")
    folder = Path(__file__).resolve().parent / "data" / "fixtures" / "hf_datasets" / "ds"
    for name, train, classes in (("pq", tmp_path / "train.parquet", ["at", "gc"]),
                                 ("ds", folder, ["enhancer", "other", "promoter"])):
        out = tmp_path / name
        assert cli.main(["finetune", "--train", str(train), "--out", str(out), "--steps", "2", *TINY[:4],
                         "--window-bp", "32", "--batch-size", "4", "--no-progress"]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["steps"] == 2 and summary["classes"] == classes


def test_a_recipe_chains_steps(tmp_path, capsys):
    """One recipe file, three commands: pretrain -> finetune from it -> evaluate the classifier."""
    tiny = "model = { d_model = 16, d_state = 4 }\n"
    data = "data = { window_bp = 64, batch_size = 8, val_windows = 8, test_windows = 16 }\n"
    recipe = tmp_path / "chain.toml"
    recipe.write_text(
        f'[[step]]\ncommand = "pretrain"\nout_dir = "{tmp_path / "pre"}"\n{tiny}{data}'
        'train = { max_steps = 2, progress_bar = false }\n'
        f'[[step]]\ncommand = "finetune"\nout_dir = "{tmp_path / "ft"}"\npretrained = "{tmp_path / "pre" / "model"}"\n'
        f'{data}train = {{ max_steps = 2, progress_bar = false }}\n'
        f'[[step]]\ncommand = "evaluate"\ncheckpoint = "{tmp_path / "ft" / "model"}"\nout_dir = "{tmp_path / "ev"}"\n'
        '[step.data]\nwindow_bp = 64\ntest_windows = 12\n')
    assert cli.main(["run", str(recipe)]) == 0
    evaluation = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert evaluation["model_class"] == "MambaClassifier" and np.array(evaluation["confusion_matrix"]).sum() == 12
    assert "[step 3/3] evaluate" in capsys.readouterr().out
    # every step is checked before the first runs: a typo in the last step leaves nothing behind
    bad = tmp_path / "bad.toml"
    bad.write_text(recipe.read_text().replace(str(tmp_path / "pre"), str(tmp_path / "pre2"))
                   .replace("test_windows = 12", "test_windowz = 12"))
    assert cli.main(["run", str(bad)]) == 2
    assert "step 3 (evaluate): unknown setting 'data.test_windowz'" in capsys.readouterr().err
    assert not (tmp_path / "pre2").exists()


def test_evaluate_language_model(pretrained, tmp_path):
    assert cli.main(["evaluate", str(pretrained / "model"), "--window-bp", "64", "--out", str(tmp_path)]) == 0
    evaluation = json.loads((tmp_path / "evaluation.json").read_text())
    assert 0 < evaluation["test/bits_per_base"] < 4


def test_demo_quick(tmp_path, capsys):
    assert cli.main(["demo", "--quick", "--no-progress", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "k-mer (k=4..6) counts + logistic regression" in out and "Mamba fine-tuned classifier" in out
    for name in ("pca.png", "summary.json", "finetune/confusion_matrix.png", "pretrain/curves.png",
                 "embed/embeddings.npy"):
        assert (tmp_path / name).is_file(), name


def test_console_script_version():
    result = subprocess.run([sys.executable, "-m", "mambadna", "--version"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == f"mambadna {__version__}"


def test_every_flag_has_help():
    parser = cli.build_parser()
    parsers = [parser] + [p for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"
                          for p in a.choices.values()]
    for p in parsers:
        for action in p._actions:
            if action.option_strings or action.dest not in ("command",):
                assert action.help, f"{p.prog}: {action.option_strings or action.dest} has no help"
