"""Bad input through the CLI, as a table: each row is an argv, the exit code, a phrase of the one `error:` line,
and every file that existed before is unchanged afterwards (hashed before and after)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mambadna import cli
from mambadna.config import tiny
from mambadna.data import bundled_path
from mambadna.model import MambaClassifier, MambaLM

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = ["--set", "model.d_model=16", "--set", "model.d_state=4", "--window-bp", "64", "--batch-size", "4",
        "--set", "data.val_windows=4", "--set", "data.test_windows=8", "--no-progress"]


def _bgzip(src: Path, dst: Path) -> None:
    from Bio import bgzf

    with bgzf.BgzfWriter(str(dst), "wb") as fh:
        fh.write(src.read_bytes())


@pytest.fixture(scope="module")
def world(saved_models):
    """Every input the rows below need, made once: models, runs, genomes, tables."""
    w = dict(saved_models)
    root = w["root"]
    for name, damage in (("truncated", lambda b: b[:300]), ("pickled", None)):
        folder = root / name
        shutil.copytree(w["lm"], folder)
        weights = folder / "model.safetensors"
        if damage is None:
            torch.save(MambaLM(tiny(d_model=16, d_state=4)).state_dict(), weights)
        else:
            weights.write_bytes(damage(weights.read_bytes()))
        w[name] = folder
    lam = root / "lambda.fa"
    shutil.copyfile(bundled_path("lambda"), lam)
    w["lambda"] = lam
    w["small"] = root / "small.fa"
    w["small"].write_text(">a\n" + "ACGT" * 250 + "\n")
    _bgzip(lam, root / "lambda.fa.gz")
    data = (root / "lambda.fa.gz").read_bytes()
    w["cut_gz"] = root / "cut.fa.gz"
    w["cut_gz"].write_bytes(data[: len(data) // 2])
    rng = np.random.default_rng(0)
    rows = [f"{''.join(rng.choice(list('ACGT'), 80))},{'' if i == 3 else 'xy'[i % 2]}" for i in range(12)]
    w["missing_label"] = root / "missing_label.csv"
    w["missing_label"].write_text("sequence,label\n" + "\n".join(rows) + "\n")
    w["labelled_fa"] = root / "labelled.fa"
    w["labelled_fa"].write_text("".join(f">s{i} label={'xy'[i % 2]}\nACGTACGTTT\n" for i in range(6)))
    w["unseen"] = root / "unseen.csv"
    w["unseen"].write_text("sequence,label\nACGTACGTAC,a\nACGTACGGGG,martian\n")
    w["afile"] = root / "afile.txt"
    w["afile"].write_text("a file, not a folder\n")
    w["existing"] = root / "existing.fa"
    w["existing"].write_text(">keep\nACGT\n")
    w["emb"] = root / "emb"
    assert cli.main(["embed", str(w["lm"]), str(w["small"]), "--out", str(w["emb"])]) == 0
    w["eval_out"] = root / "eval_out"
    w["eval_out"].mkdir()
    (w["eval_out"] / "evaluation.json").write_text("{}\n")
    w["run"] = root / "run"
    assert cli.main(["pretrain", "--genome", str(lam), "--out", str(w["run"]), "--steps", "2", *TINY]) == 0
    w["ckpt"] = w["run"] / "checkpoints" / "step-00000002.ckpt"
    w["damaged_run"] = root / "damaged_run"
    shutil.copytree(w["run"], w["damaged_run"], symlinks=True)
    damaged = w["damaged_run"] / "checkpoints" / "step-00000002.ckpt"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    return w


def P(*args):
    return ["pretrain", *TINY, *args]  # the row's flags last, so they win


# (id, argv from the fixture paths, exit code, phrase of the error line)
ROWS = [
    ("reused --out", lambda w: P("--out", w["run"], "--genome", w["lambda"]), 2, "already holds a run"),
    ("--resume with --overwrite", lambda w: P("--out", w["run"], "--resume", "--overwrite"), 2, "give one"),
    ("--resume, another model shape", lambda w: P("--out", w["run"], "--resume", "--set", "model.d_model=32"), 2,
     "another model shape (model.d_model 16 -> 32)"),
    ("--resume, truncated checkpoint", lambda w: P("--out", w["damaged_run"], "--resume"), 2, "cannot be read"),
    ("--resume, run finished", lambda w: P("--out", w["run"], "--resume", "--genome", w["lambda"], "--steps", "2"), 2,
     "already finished at step 2"),
    ("--resume, run finished, other scan and norm kernels (not a shape change)",
     lambda w: P("--out", w["run"], "--resume", "--genome", w["lambda"], "--steps", "2", "--set",
                 "model.scan_kernel=v1", "--set", "model.norm_backend=auto"), 2, "already finished at step 2"),
    ("--resume, no run", lambda w: P("--out", w["root"] / "no_run", "--resume"), 2, "holds no run to continue"),
    ("--resume-from, missing file", lambda w: P("--out", w["root"] / "new", "--resume-from", w["root"] / "x.ckpt"),
     2, "no such checkpoint file"),
    ("--resume-from into another run", lambda w: P("--out", w["damaged_run"], "--resume-from", w["ckpt"]), 2,
     "holds another run"),
    ("--resume-from, another shape", lambda w: P("--out", w["root"] / "branch", "--resume-from", w["ckpt"],
                                                  "--set", "model.d_model=32"), 2, "another model shape"),
    ("--lr nan", lambda w: P("--out", w["root"] / "o1", "--lr", "nan"), 2, "optim.lr must be a positive number"),
    ("batch larger than an epoch", lambda w: P("--out", w["root"] / "o2", "--genome", w["small"], "--batch-size",
                                               "64"), 2, "nothing would train; lower data.batch_size"),
    ("window longer than val blocks", lambda w: P("--out", w["root"] / "o3", "--genome", w["lambda"],
                                                  "--window-bp", "8000"), 2, "raise data.val_fraction to 0.17"),
    ("species window longer than val", lambda w: ["finetune", "--out", str(w["root"] / "o4"), "--window-bp", "8000",
                                                  *TINY[:4], "--batch-size", "2"], 2, "manifest's split column"),
    ("missing label", lambda w: ["finetune", "--train", w["missing_label"], "--out", w["root"] / "o5", *TINY], 2,
     "line 5: no label in column 'label'"),
    ("FASTA labels, no setting", lambda w: ["finetune", "--train", w["labelled_fa"], "--out", w["root"] / "o6",
                                            *TINY], 2, "data.label_key"),
    ("--val without --train", lambda w: ["finetune", "--val", w["missing_label"], "--out", w["root"] / "o7", *TINY],
     2, "go with data.train"),
    ("bad --label-regex", lambda w: ["embed", w["lm"], w["labelled_fa"], "--out", w["root"] / "o8",
                                     "--label-regex", "label=("], 2, "not a valid regular expression"),
    ("--label-regex without a group", lambda w: ["embed", w["lm"], w["labelled_fa"], "--out", w["root"] / "o9",
                                                 "--label-regex", "label=x"], 2, "exactly one (group)"),
    ("truncated safetensors", lambda w: ["generate", w["truncated"], "--out", w["root"] / "g.fa"], 2,
     "not a readable safetensors file"),
    ("pickle named .safetensors", lambda w: ["evaluate", w["pickled"], "--out", w["root"] / "o10"], 2,
     "not a readable safetensors file"),
    ("truncated --pretrained", lambda w: ["finetune", "--pretrained", w["truncated"], "--out", w["root"] / "o11",
                                          *TINY[4:]], 2, "not a readable safetensors file"),
    ("bgzip cut mid-block", lambda w: P("--out", w["root"] / "o12", "--genome", w["cut_gz"]), 2,
     "bgzip file is truncated or damaged"),
    ("--out under a file", lambda w: P("--out", w["afile"] / "sub"), 2, "cannot write to --out"),
    ("--out is a file", lambda w: P("--out", w["afile"]), 2, "is a file, not a folder"),
    ("generate over the model", lambda w: ["generate", w["lm"], "--out", w["lm"] / "config.json"], 2,
     "inside the model folder"),
    ("generate over a file", lambda w: ["generate", w["lm"], "--out", w["existing"]], 2, "add --overwrite"),
    ("embed over embeddings", lambda w: ["embed", w["lm"], w["small"], "--out", w["emb"]], 2, "add --overwrite"),
    ("evaluate over results", lambda w: ["evaluate", w["lm"], "--out", w["eval_out"]], 2, "add --overwrite"),
    ("evaluate, unseen label", lambda w: ["evaluate", w["clf"], "--test", w["unseen"], "--out", w["root"] / "o13"],
     2, "label(s) ['martian']"),
    ("evaluate LM with --manifest", lambda w: ["evaluate", w["lm"], "--manifest", w["missing_label"], "--out",
                                               w["root"] / "o14"], 2, "are for classifiers"),
    ("embed --batch-size 0", lambda w: ["embed", w["lm"], w["small"], "--batch-size", "0"], 2,
     "must be a positive integer"),
    ("probe without labels", lambda w: ["probe", w["emb"], "--out", w["root"] / "o17"], 2, "index.tsv has none"),
    ("probe --folds 1", lambda w: ["probe", w["emb"], "--folds", "1"], 2, "must be at least 2"),
    ("generate --temperature nan", lambda w: ["generate", w["lm"], "--temperature", "nan"], 2, "finite number"),
    ("normalize over its input", lambda w: ["normalize", w["small"], w["small"]], 2, "never overwrites"),
    ("normalize over a file", lambda w: ["normalize", w["small"], w["existing"]], 2, "already exists"),
    ("cache under a file", lambda w: ["embed", w["lm"], w["lambda"], "--out", w["root"] / "o15",
                                      "--env", f"MAMBADNA_CACHE={w['afile'] / 'cache'}"], 2,
     "cannot create the mambadna cache folder"),
]
if not torch.cuda.is_available():
    ROWS.append(("--accelerator gpu, no GPU", lambda w: P("--out", w["root"] / "o16", "--accelerator", "gpu"), 2,
                 "no GPU is visible"))


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink() and "cache" not in p.parts}


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_error_line_and_changes_no_file(row, world, capsys, monkeypatch):
    _, make_argv, code, phrase = row
    argv = [str(a) for a in make_argv(world)]
    if "--env" in argv:
        key, value = argv.pop(argv.index("--env") + 1).split("=", 1)
        argv.remove("--env")
        monkeypatch.setenv(key, value)
    before = _hashes(world["root"])
    capsys.readouterr()
    assert cli.main(argv) == code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and phrase in errors[0], err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == errors[0]
    after = _hashes(world["root"])
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    assert not changed, f"{changed} changed"
    assert not [p for p in world["root"].rglob(".*.tmp*")], "a temporary file was left behind"


def test_debug_shows_the_traceback(world, capsys, monkeypatch):
    argv = ["generate", str(world["truncated"]), "--out", str(world["root"] / "g.fa")]
    assert cli.main([*argv, "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")
    monkeypatch.setenv("MAMBADNA_DEBUG", "1")
    assert cli.main(argv) == 2
    assert "Traceback" in capsys.readouterr().err


def test_evaluate_maps_classes_by_name_and_accepts_a_subset(world, tmp_path, capsys):
    # a classifier that always says "c": correct on every "c" row whatever order the data lists its classes in
    model = MambaClassifier.from_pretrained(world["clf"])
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([0.0, 0.0, 50.0]))
    model.save_pretrained(tmp_path / "says_c")
    table = tmp_path / "subset.csv"
    table.write_text("sequence,label\n" + "ACGTACGTAC,c\n" * 3 + "GGGGCCCCAA,a\n")
    assert cli.main(["evaluate", str(tmp_path / "says_c"), "--test", str(table), "--out", str(tmp_path / "ev")]) == 0
    result = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    # by position the data's classes [a, c] would be read as the model's [a, b]: accuracy 0
    assert result["test/accuracy"] == pytest.approx(0.75)
    assert result["classes"] == ["a", "b", "c"] and result["test_classes"] == ["a", "c"]


def test_an_index_that_hides_contigs_is_not_used(tmp_path, capsys, world):
    fasta = tmp_path / "two.fa"
    fasta.write_text(">c1\n" + "ACGT" * 15 + "\n>c2\n" + "GATTACA" * 9 + "\n")
    (tmp_path / "two.fa.fai").write_text("c1\t60\t4\t60\t61\n")  # newer than the FASTA, silent about c2
    assert cli.main(["embed", str(world["lm"]), str(fasta), "--out", str(tmp_path / "emb")]) == 0
    assert "lists fewer contigs than the FASTA" in capsys.readouterr().err
    rows = (tmp_path / "emb" / "index.tsv").read_text().splitlines()[1:]
    assert [r.split("\t")[1] for r in rows] == ["c1", "c2"]


def test_normalize_writes_a_clean_copy_and_overwrite_replaces_results(world, tmp_path, capsys):
    ragged = tmp_path / "ragged.fa"
    ragged.write_text(">r one\nACGTACGT\nACG\n\nACGTAC\n>s\nGG\r\nTT\n")
    before = ragged.read_bytes()
    assert cli.main(["normalize", str(ragged), str(tmp_path / "clean.fa")]) == 0
    assert (tmp_path / "clean.fa").read_text() == ">r one\nACGTACGTACGACGTAC\n>s\nGGTT\n"
    assert ragged.read_bytes() == before and "2 contig(s), 21 bp" in capsys.readouterr().out
    out = tmp_path / "gen.fa"
    out.write_text(">old\nA\n")
    assert cli.main(["generate", str(world["lm"]), "--out", str(out), "--length-bp", "5", "--overwrite"]) == 0
    assert out.read_text().startswith(">generated_0")
    assert cli.main(["embed", str(world["lm"]), str(world["small"]), "--out", str(world["emb"]), "--overwrite"]) == 0
