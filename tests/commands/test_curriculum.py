"""The length curriculum through the CLI: a long window trains through shorter ones at equal bases per step,
classifier steps accumulate to see every class, validation of a long window falls back to what the held-out
region holds, and a classifier runs at windows longer than it was trained on."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mambadna import cli
from mambadna.run_config import OptimSpec
from mambadna.tasks.optim import warmup_cosine

TINY = ["--set", "model.d_model=16", "--set", "model.d_state=4", "--set", "model.n_layer=1", "--no-progress",
        "--set", "train.log_every_n_steps=1"]


def write_species(root, n_bp=100_000, seed=0):
    """Two 'species' of random DNA with different base composition (so a tiny model can tell them apart) and a
    manifest; 10% blocks of 10 kb are held out for validation and testing."""
    rng = np.random.default_rng(seed)
    rows = ["species\tfasta"]
    for name, gc in (("lowgc", 0.3), ("highgc", 0.7)):
        p = np.array([(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2])
        seq = "".join(rng.choice(list("ACGT"), size=n_bp, p=p))
        (root / f"{name}.fa").write_text(f">{name}\n" + "\n".join(seq[i:i + 60] for i in range(0, n_bp, 60)) + "\n")
        rows.append(f"{name}\t{name}.fa")
    (root / "manifest.tsv").write_text("\n".join(rows) + "\n")
    return root / "manifest.tsv"


def test_long_window_finetune_walks_the_curriculum_and_accumulates(tmp_path, capsys):
    manifest = write_species(tmp_path)
    out = tmp_path / "ft"
    argv = ["finetune", "--out", str(out), "--manifest", str(manifest), "--window-bp", "8192", "--batch-size", "1",
            "--steps", "8", "--set", "data.val_windows=2", "--set", "data.test_windows=4",
            "--set", "train.seqlen_warmup_first_fraction=0.5", *TINY]  # the default 0.9 leaves 8 steps no middle stage
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    # automatic from 1024 bp for an 8 kb window; one window of 8 kb a step, so the 4 kb and 8 kb stages accumulate
    # to two windows (two classes) and get fewer steps, every stage seeing the same bases
    line = next(x for x in printed.splitlines() if x.startswith("length curriculum: "))
    assert line.startswith("length curriculum: 1024 bp x 8 for ") and "2048 bp x 4" in line
    assert "4096 bp x 2" in line and line.endswith("8192 bp x 1 x 2 accumulated to the end")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 8 and 0 <= summary["test/accuracy"] <= 1
    # the last stage trained two windows a step: 8 steps of 8 kb would be 64 kb; more bases were seen than that
    assert summary["bases_trained"] > 8 * 8192


def test_curriculum_off_and_explicit_start(tmp_path, capsys):
    manifest = write_species(tmp_path)
    common = ["--manifest", str(manifest), "--window-bp", "8192", "--batch-size", "2", "--steps", "2",
              "--set", "data.val_windows=2", "--set", "data.test_windows=2", *TINY]
    assert cli.main(["finetune", "--out", str(tmp_path / "off"), "--set", "train.seqlen_warmup_from_bp=0",
                     *common]) == 0
    assert "length curriculum" not in capsys.readouterr().out
    assert cli.main(["finetune", "--out", str(tmp_path / "from4k"), "--set", "train.seqlen_warmup_from_bp=4096",
                     *common]) == 0
    assert "length curriculum: 4096 bp x 4 for 1 steps -> 8192 bp x 2 to the end" in capsys.readouterr().out
    assert cli.main(["finetune", "--out", str(tmp_path / "bad"), "--set", "train.seqlen_warmup_from_bp=16384",
                     *common]) == 2
    assert "longer than data.window_bp" in capsys.readouterr().err


def test_pretrain_lr_full_windows_lowers_the_rate_of_the_long_stages(tmp_path, capsys):
    # 64 bp x 4 -> 128 x 2 -> 256 x 1, two steps a stage: full rate at 4 windows a step, sqrt(2/4), sqrt(1/4)
    out = tmp_path / "pre"
    assert cli.main(["pretrain", "--out", str(out), "--window-bp", "256", "--batch-size", "1", "--steps", "6",
                     "--set", "train.seqlen_warmup_from_bp=64", "--set", "optim.lr_full_windows=4",
                     "--set", "data.val_windows=2", *TINY]) == 0
    assert ("length curriculum: 64 bp x 4 for 2 steps -> 128 bp x 2 for 2 steps at lr x 0.71 -> 256 bp x 1 to the "
            "end at lr x 0.5") in capsys.readouterr().out
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    step = ckpt["lr_schedulers"][0]["last_epoch"]
    plain = warmup_cosine(6, 0, OptimSpec().min_lr_ratio)(step)  # 10% warmup of 6 steps: none
    assert step >= 4 and math.isclose(ckpt["optimizer_states"][0]["param_groups"][0]["lr"], 8e-3 * plain * 0.5)
    assert cli.main(["pretrain", "--out", str(tmp_path / "bad"), "--set", "optim.lr_full_windows=0", *TINY]) == 2
    assert "optim.lr_full_windows must be a positive number" in capsys.readouterr().err


def test_pretrain_initial_memory_lowers_dt_min_and_a_resume_keeps_it(tmp_path, capsys):
    out = tmp_path / "pre"
    argv = ["pretrain", "--out", str(out), "--window-bp", "256", "--batch-size", "2", "--steps", "2",
            "--set", "train.init_memory_bp=5000", "--set", "data.val_windows=2", "--set", "train.ckpt_every_n_steps=1",
            *TINY]
    assert cli.main(argv) == 0
    assert ("initial memory: model.dt_min 0.001 -> 0.0002, so the slowest channels start out holding 5,000 bases"
            in capsys.readouterr().out)
    saved = json.loads((out / "model" / "config.json").read_text())["config"]
    assert saved["dt_min"] == pytest.approx(2e-4) and saved["dt_init_floor"] == pytest.approx(2e-5)
    assert json.loads((out / "run_config.json").read_text())["model"]["dt_min"] == 1e-3  # the user's setting
    argv[argv.index("--steps") + 1] = "3"
    assert cli.main([*argv, "--resume"]) == 0  # the same model config again, so the checkpoint fits
    assert json.loads((out / "summary.json").read_text())["steps"] == 3
    assert "initial memory: model.dt_min 0.001 -> 0.0002" in capsys.readouterr().out
    # the default: a tenth of the window, which dt_min 1e-3 already reaches at 256 bases but not at 16 kb
    for window, dt_min in ((256, 1e-3), (16384, 10 / 16384)):
        assert cli.main(["pretrain", "--out", str(tmp_path / f"w{window}"), "--window-bp", str(window), "--batch-size",
                         "1", "--steps", "1", "--set", "data.val_windows=1", "--set", "train.seqlen_warmup_from_bp=0",
                         *TINY]) == 0
        assert ("initial memory: model.dt_min 0.001 -> 0.00061" in capsys.readouterr().out) == (window == 16384)
        saved = json.loads((tmp_path / f"w{window}" / "model" / "config.json").read_text())["config"]
        assert saved["dt_min"] == pytest.approx(dt_min)


def test_long_window_validation_falls_back_to_the_held_out_region(tmp_path, capsys):
    # 100 kb genomes cut into train / val (10%: 10 kb, no 16 kb window) and other genomes for testing: validation
    # runs on 8 kb windows instead and says so; the test split keeps the 16 kb window
    write_species(tmp_path)
    (tmp_path / "t").mkdir()
    write_species(tmp_path / "t", seed=1)
    rows = ["species\tfasta\tsplit"] + [f"{n}\t{n}.fa\t" for n in ("lowgc", "highgc")]
    rows += [f"{n}\tt/{n}.fa\ttest" for n in ("lowgc", "highgc")]
    (tmp_path / "m.tsv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "ft"
    assert cli.main(["finetune", "--out", str(out), "--manifest", str(tmp_path / "m.tsv"), "--window-bp", "16384",
                     "--batch-size", "1", "--steps", "2", "--set", "data.val_windows=2", "--set", "data.test_windows=2",
                     *TINY]) == 0
    assert "warning: the validation region holds no 16384 bp window; validating on 8192 bp windows" in \
        capsys.readouterr().err
    assert "test/accuracy" in json.loads((out / "summary.json").read_text())


def test_classifier_runs_at_longer_windows_than_it_was_trained_on(tmp_path, capsys):
    manifest = write_species(tmp_path)
    out = tmp_path / "ft"
    assert cli.main(["finetune", "--out", str(out), "--manifest", str(manifest), "--window-bp", "256",
                     "--batch-size", "4", "--steps", "2", "--set", "data.val_windows=2", *TINY]) == 0
    for window, extra in (("4096", []), ("4096", ["--chunk-bp", "1024"])):
        ev = tmp_path / f"ev{len(extra)}"
        assert cli.main(["evaluate", str(out / "model"), "--manifest", str(manifest), "--window-bp", window,
                         "--batch-size", "8", "--out", str(ev), *extra]) == 0
        result = json.loads((ev / "evaluation.json").read_text())
        assert 0 <= result["test/accuracy"] <= 1


def test_segment_bp_adds_each_stretch_s_loss_in_training(tmp_path):
    """`finetune --segment-bp`: the first step's training loss is the window's cross-entropy plus its stretches'
    (each about ln 2 for an untrained two-class head), chunked here; validation scores whole windows only."""
    import csv

    manifest = write_species(tmp_path)
    common = ["--manifest", str(manifest), "--window-bp", "2048", "--batch-size", "2", "--steps", "1",
              "--chunk-bp", "512", "--set", "data.val_windows=2", "--set", "data.test_windows=2", *TINY]

    def first(run, key):
        rows = list(csv.DictReader(open(tmp_path / run / "logs" / "metrics.csv")))
        return float(next(r[key] for r in rows if r.get(key)))

    assert cli.main(["finetune", "--out", str(tmp_path / "plain"), *common]) == 0
    assert cli.main(["finetune", "--out", str(tmp_path / "seg"), "--segment-bp", "256", *common]) == 0
    assert json.loads((tmp_path / "seg" / "run_config.json").read_text())["segment_bp"] == 256
    plain, seg = first("plain", "train/loss"), first("seg", "train/loss")
    assert 1.6 * plain < seg < 2.4 * plain
    # the same seed and one warmup step apart: validation, whole windows only, scores both alike (not twice over)
    assert abs(first("seg", "val/loss") - first("plain", "val/loss")) < 0.1 * first("plain", "val/loss")
