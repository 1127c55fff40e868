"""Bad input through the CLI, second round (issue #22): each row is an argv, the exit code and a phrase of the one
`error:` line; no traceback, and every file that existed before is unchanged afterwards (hashed before and after)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from mambadna import cli
from mambadna.config import tiny
from mambadna.model import MambaClassifier, MambaLM

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def world(saved_models):
    """Every input the rows below need, made once: tiny models, a fake run folder, small FASTAs."""
    w = dict(saved_models)
    root = w["root"]
    (w["clf"] / "training.json").write_text('{"window_bp": 64}\n')
    w["ckpt"] = root / "run" / "checkpoints" / "step-00000002.ckpt"
    w["ckpt"].parent.mkdir(parents=True)
    w["ckpt"].write_bytes(b"not read")
    w["gpt2"] = root / "gpt2"
    w["gpt2"].mkdir()
    (w["gpt2"] / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    w["small"] = root / "small.fa"
    w["small"].write_text(">a\n" + "ACGT" * 100 + "\n>b\n" + "GATTACA" * 40 + "\n")
    w["afile"] = root / "afile.txt"
    w["afile"].write_text("a file, not a folder\n")
    genomes = root / "genomes"
    genomes.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        seq = "".join(rng.choice(list("ACGT"), 3000))
        (genomes / f"{name}.fa").write_text(f">{name}1\n{seq[:1800]}\n>{name}2\n{seq[1800:]}\n")
    # a copy of a.fa: other contig names, other line length, contigs in another order, gzip
    text = (genomes / "a.fa").read_text().split("\n")
    with gzip.open(genomes / "a_copy.fa.gz", "wt") as fh:
        fh.write(f">x\n{text[3][:600]}\n{text[3][600:]}\n>y\n{text[1]}\n")
    manifests = {"path_two_splits": "a\ta.fa\ttrain\nb\tb.fa\ttrain\na\ta.fa\ttest\n",
                 "path_two_species": "a\ta.fa\nb\tb.fa\nc\t./a.fa\n",
                 "copy_two_species": "a\ta.fa\nb\tb.fa\nc\ta_copy.fa.gz\n",
                 "copy_two_splits": "a\ta.fa\ttrain\nb\tb.fa\ttrain\na\ta_copy.fa.gz\ttest\n"}
    for name, rows in manifests.items():
        w[name] = genomes / f"{name}.tsv"
        w[name].write_text("species\tfasta\tsplit\n" + rows)
    from Bio import SeqIO
    from Bio.Seq import Seq
    from Bio.SeqRecord import SeqRecord

    records = [SeqRecord(Seq("".join(rng.choice(list("ACGT"), 2000))), id=f"r{i}", name=f"r{i}", description="test",
                         annotations={"molecule_type": "DNA"}) for i in range(2)]
    for fmt, suffix in (("genbank", "gb"), ("embl", "embl")):
        whole = root / f"whole.{suffix}"
        SeqIO.write(records, str(whole), fmt)
        text = whole.read_text()
        (root / f"cut.{suffix}").write_text(text[: text.rindex("//") - 300])  # mid-sequence, no closing //
        (root / f"no_end.{suffix}").write_text(text[: text.rindex("//")])  # every base there, the // missing
    text = (root / "whole.gb").read_text()
    (root / "long_locus.gb").write_text(text.replace("2000 bp", "2400 bp", 1))
    w["h5ad_run"] = root / "h5ad_run"
    assert cli.main(["embed", str(w["lm"]), str(w["small"]), "--out", str(w["h5ad_run"]), "--format", "h5ad"]) == 0
    w["stopped"] = root / "stopped"  # a run stopped at step 2 before its final save (no summary.json)
    assert cli.main(["pretrain", "--genome", str(genomes / "a.fa"), "--out", str(w["stopped"]), "--steps", "2",
                     *FT, "--set", "data.val_windows=2", "--set", "data.test_windows=2", "--no-progress"]) == 0
    (w["stopped"] / "summary.json").unlink()
    w["bidir"] = root / "bidir"
    MambaLM(tiny(d_model=16, d_state=4, bidirectional=True)).save_pretrained(w["bidir"])
    (root / "zero.bed").write_text("a\t10\t10\tempty_one\n")
    (root / "recipe.yaml").write_text("train:\n  max_steps: 5\n")
    (root / "latin1.csv").write_bytes("sequence,label\nACGTACGT,caf\u00e9\n".encode("latin-1"))
    (root / "bad_state").mkdir()
    (root / "bad_state" / "state.json").write_text("{not json")
    (root / "bad_arrow").mkdir()
    (root / "bad_arrow" / "state.json").write_text('{"_data_files": [{"filename": "data-00000.arrow"}]}')
    (root / "bad_arrow" / "data-00000.arrow").write_bytes(b"not arrow at all")
    (root / "short_contigs.fa").write_text("".join(f">s{i}\n{'ACGT' * 12}\n" for i in range(25)))
    w["hf"] = root / "hf"
    assert cli.main(["export", str(w["lm"]), str(w["hf"])]) == 0
    return w


# (id, argv from the fixture paths, exit code, phrase of the error line)
FT = ["--window-bp", "64", "--batch-size", "2", "--set", "model.d_model=16", "--set", "model.d_state=4"]
ROWS = [
    ("a bidirectional --pretrained, one model setting given", lambda w: [
        "finetune", "--pretrained", w["bidir"], "--out", w["root"] / "o18", "--set", "model.d_model=32",
        "--window-bp", "64", "--batch-size", "2"], 2, "another model shape than the run config (d_model: checkpoint 16 "
     "vs run 32);"),
    ("a zero-length BED region", lambda w: ["embed", w["lm"], w["small"], "--regions", w["root"] / "zero.bed",
                                            "--out", w["root"] / "o11"], 2,
     "zero.bed: region 'empty_one' (a:10-10) has no bases (start = end)"),
    ("a YAML recipe", lambda w: ["pretrain", "--recipe", w["root"] / "recipe.yaml", "--out", w["root"] / "o12"], 2,
     "is YAML, which mambadna does not read; write it as TOML"),
    ("a latin-1 table", lambda w: ["evaluate", w["clf"], "--test", w["root"] / "latin1.csv", "--out",
                                   w["root"] / "o13"], 2, "latin1.csv: not UTF-8 text"),
    ("a datasets folder with a bad state.json", lambda w: ["evaluate", w["clf"], "--test", w["root"] / "bad_state",
                                                           "--out", w["root"] / "o14"], 2,
     "bad_state/state.json: not a readable datasets state file"),
    ("a datasets folder with a damaged Arrow file", lambda w: ["evaluate", w["clf"], "--test",
                                                               w["root"] / "bad_arrow", "--out", w["root"] / "o15"],
     2, "data-00000.arrow: not a readable Arrow file"),
    ("windows longer than every contig", lambda w: ["pretrain", "--genome", w["root"] / "short_contigs.fa", "--out",
                                                    w["root"] / "o16", *FT], 2,
     "no contig of the whole genome is that long either (the longest is 48 bp): no split helps"),
    ("--chunk-bp on a bidirectional model", lambda w: ["embed", w["bidir"], w["small"], "--chunk-bp", "64", "--out",
                                                       w["root"] / "o17"], 2, "lower --batch-size"),
    ("--resume --steps below the checkpoint", lambda w: ["pretrain", "--out", w["stopped"], "--resume", "--steps",
                                                         "1"], 2, "is at step 2, past train.max_steps 1"),
    ("a failed run leaves no new --out", lambda w: ["pretrain", "--genome", w["root"] / "genomes" / "a.fa", "--out", w["root"] / "new",
                                                    *FT, "--batch-size", "64"], 2, "nothing would train"),
    ("generate from a classifier", lambda w: ["generate", w["clf"], "--out", w["root"] / "gen" / "g.fa"], 2,
     "holds a fine-tuned classifier, not a language model"),
    ("normalize into a missing dir/", lambda w: ["normalize", w["small"], f"{w['root'] / 'newdir'}/"], 2,
     "names a folder, which does not exist; give the new FASTA's file name"),
    ("normalize onto a folder", lambda w: ["normalize", w["small"], w["gpt2"]], 2, "names a folder; give"),
    ("normalize under a missing folder", lambda w: ["normalize", w["small"], w["root"] / "nodir" / "x.fa"], 2,
     "the folder " ),
    ("npy into another run's h5ad", lambda w: ["embed", w["lm"], w["small"], "--out", w["h5ad_run"]], 2,
     "embeddings.h5ad already exists"),
    *[(f"{name} {fmt} record", lambda w, f=f"{name}.{fmt}": ["pretrain", "--genome", w["root"] / f, "--out",
                                                              w["root"] / "o9", *FT], 2, phrase)
      for name, phrase in (("cut", "is cut short"), ("no_end", "is cut short")) for fmt in ("gb", "embl")],
    ("LOCUS longer than the sequence", lambda w: ["pretrain", "--genome", w["root"] / "long_locus.gb", "--out",
                                                  w["root"] / "o10", *FT], 2,
     "record 'r0' is cut short (Expected sequence length 2400, found 2000"),
    ("same FASTA in train and test", lambda w: ["finetune", "--manifest", w["path_two_splits"], "--out",
                                                w["root"] / "o4", *FT], 2,
     "line 2: a.fa (species 'a', split train) and line 4: a.fa (species 'a', split test) are the same file"),
    ("same FASTA under two species", lambda w: ["finetune", "--manifest", w["path_two_species"], "--out",
                                                w["root"] / "o5", *FT], 2, "are the same file"),
    ("a copy under two species", lambda w: ["finetune", "--manifest", w["copy_two_species"], "--out",
                                            w["root"] / "o6", *FT], 2,
     "a.fa (species 'a') and line 4: a_copy.fa.gz (species 'c') hold the same sequences"),
    ("a copy in train and test", lambda w: ["finetune", "--manifest", w["copy_two_splits"], "--out",
                                            w["root"] / "o7", *FT], 2, "hold the same sequences"),
    ("evaluate on a leaking manifest", lambda w: ["evaluate", w["clf"], "--manifest", w["copy_two_species"],
                                                  "--out", w["root"] / "o8"], 2, "hold the same sequences"),
    ("export over an earlier export", lambda w: ["export", w["lm"], w["hf"]], 2, "already holds a model"),
    ("export over a classifier's model", lambda w: ["export", w["lm"], w["clf"]], 2, "add --overwrite"),
    ("export to a file", lambda w: ["export", w["lm"], w["afile"]], 2, "is a file; give a folder"),
    ("export a .ckpt", lambda w: ["export", w["ckpt"], w["root"] / "o1"], 2, "a Lightning training checkpoint"),
    ("evaluate a .ckpt", lambda w: ["evaluate", w["ckpt"], "--out", w["root"] / "o2"], 2, "give the run's model/"),
    ("a GPT-2 folder", lambda w: ["embed", w["gpt2"], w["small"], "--out", w["root"] / "o3"], 2,
     "transformers 'gpt2' model, not a Mamba model"),
    ("a mistyped model path", lambda w: ["generate", w["root"] / "lm_typo", "--out", w["root"] / "g.fa"], 2,
     "no such model folder"),
]


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink() and "cache" not in p.parts}


def run_row(argv, code: int, phrase: str, root: Path, capsys) -> str:
    """Run one CLI call; check the exit code, the one error line, no traceback, nothing changed or left behind."""
    before = _hashes(root)
    folders = {p for p in root.rglob("*") if p.is_dir()}
    capsys.readouterr()
    assert cli.main([str(a) for a in argv]) == code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and phrase in errors[0], err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == errors[0]
    after = _hashes(root)
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    assert not changed, f"{changed} changed"
    assert not [p for p in root.rglob(".*.tmp*")], "a temporary file was left behind"
    new = {p for p in root.rglob("*") if p.is_dir() and "cache" not in p.parts} - folders
    assert not new, f"the refused command left {sorted(map(str, new))}"
    print(errors[0])  # shown by pytest -rP: the wording each case gets
    return errors[0]


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_error_line_and_changes_no_file(row, world, capsys):
    _, make_argv, code, phrase = row
    run_row(make_argv(world), code, phrase, world["root"], capsys)


def test_export_overwrite_replaces_the_whole_model_with_umask_permissions(world, tmp_path):
    target = tmp_path / "clf"
    shutil.copytree(world["clf"], target)
    assert cli.main(["export", str(world["lm"]), str(target), "--overwrite"]) == 0
    names = sorted(p.name for p in target.iterdir())
    assert names == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"], names
    umask = os.umask(0)
    os.umask(umask)
    for path in target.iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    assert json.loads((target / "config.json").read_text())["model_type"] == "mamba"


def test_evaluate_uses_the_training_window_records_it_and_says_what_it_cuts(world, tmp_path, capsys):
    table = tmp_path / "long.csv"
    rng = np.random.default_rng(1)
    lengths = [40, 64, 100, 300]
    table.write_text("sequence,label\n" + "".join(f"{''.join(rng.choice(list('ACGT'), n))},{'abc'[i % 3]}\n"
                                                  for i, n in enumerate(lengths)))
    assert cli.main(["evaluate", str(world["clf"]), "--test", str(table), "--out", str(tmp_path / "ev")]) == 0
    err = capsys.readouterr().err
    assert "warning: 2 of 4 test sequences are longer than the 64 bp window (the longest 300 bp)" in err, err
    result = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert result["window_bp"] == 64 and result["window_from"] == "the model's training.json"
    assert cli.main(["evaluate", str(world["clf"]), "--test", str(table), "--out", str(tmp_path / "ev2"),
                     "--window-bp", "300"]) == 0
    assert "longer than" not in capsys.readouterr().err
    result = json.loads((tmp_path / "ev2" / "evaluation.json").read_text())
    assert result["window_bp"] == 300 and result["window_from"] == "--window-bp"


def test_a_language_model_is_evaluated_on_its_training_window(world, tmp_path, capsys):
    lm = tmp_path / "lm"
    shutil.copytree(world["lm"], lm)
    (lm / "training.json").write_text('{"window_bp": 48}\n')
    genome = world["root"] / "genomes" / "a.fa"
    assert cli.main(["evaluate", str(lm), "--genome", str(genome), "--out", str(tmp_path / "ev")]) == 0
    result = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert result["window_bp"] == 48 and result["window_from"] == "the model's training.json"
    assert cli.main(["evaluate", str(lm), "--genome", str(genome), "--out", str(tmp_path / "ev2"), "--window-bp",
                     "100"]) == 0
    result = json.loads((tmp_path / "ev2" / "evaluation.json").read_text())
    assert result["window_bp"] == 100 and result["window_from"] == "--window-bp"
    # a model without training.json: the default 256 bp, longer than this genome's test blocks
    assert cli.main(["evaluate", str(world["lm"]), "--genome", str(genome), "--out", str(tmp_path / "ev3")]) == 2
    assert "window_bp 256 is longer than" in capsys.readouterr().err


def test_normalize_writes_what_the_name_says(world, tmp_path):
    from mambadna.data import Genome

    ragged = tmp_path / "ragged.fa"
    ragged.write_text(">r one\nACGTACGT\nACG\n\nACGTAC\n>s\nGG\r\nTT\n")
    assert cli.main(["normalize", str(ragged), str(tmp_path / "clean.fa.gz")]) == 0
    data = (tmp_path / "clean.fa.gz").read_bytes()
    assert data[:2] == b"\x1f\x8b" and gzip.decompress(data) == b">r one\nACGTACGTACGACGTAC\n>s\nGGTT\n"
    genome = Genome(tmp_path / "clean.fa.gz")  # bgzip: indexed in place
    assert genome.fetch("s", 0, 4) == b"GGTT"


def test_embed_overwrite_in_another_format_leaves_only_the_new_files(world, tmp_path):
    out = tmp_path / "emb"
    lm, small = str(world["lm"]), str(world["small"])
    assert cli.main(["embed", lm, small, "--out", str(out), "--per-position"]) == 0
    assert cli.main(["embed", lm, small, "--out", str(out), "--format", "parquet", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["embeddings.parquet", "source.json"]  # what probe reads back


def test_generate_samples_a_classifier_backbone_only_when_asked(world, tmp_path):
    out = tmp_path / "g.fa"
    assert cli.main(["generate", str(world["clf"]), "--backbone", "--out", str(out), "--length-bp", "5"]) == 0
    assert out.read_text().startswith(">generated_0")


def test_a_table_with_a_byte_order_mark_reads(world, tmp_path):
    table = tmp_path / "bom.csv"
    table.write_bytes("sequence,label\nACGTACGTAC,a\nGGGGCCCCAA,b\n".encode("utf-8-sig"))
    assert cli.main(["evaluate", str(world["clf"]), "--test", str(table), "--out", str(tmp_path / "ev")]) == 0


def test_a_resumed_run_whose_classes_changed_is_told_so(world):
    from mambadna.commands.run_dir import check_checkpoint_fits

    saved = MambaClassifier.from_pretrained(world["clf"])  # classes a, b, c
    ckpt = {"state_dict": {f"model.{k}": v for k, v in saved.state_dict().items()},
            "mambadna": {"model_class": "MambaClassifier", "config": saved.config.to_dict(), "init_kwargs": {}}}
    now = MambaClassifier(saved.config, 2, "mean", ["a", "b"])
    with pytest.raises(ValueError, match="predicts another number of classes .*the data's classes changed"):
        check_checkpoint_fits(Path("x.ckpt"), ckpt, now, ["a", "b"])
    ckpt["mambadna"]["init_kwargs"] = {"class_names": ["a", "b", "c"]}
    with pytest.raises(ValueError, match=r"trained on classes \['a', 'b', 'c'\] but the data now has \['a', 'b'\]"):
        check_checkpoint_fits(Path("x.ckpt"), ckpt, now, ["a", "b"])


def test_a_full_cache_is_not_blamed_on_the_input(world, tmp_path, monkeypatch, capsys):
    import errno

    from mambadna.data import genome as genome_module

    def full(src, dst, *args):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(genome_module, "normalize_fasta", full)
    ragged = tmp_path / "ragged.fa"
    ragged.write_text(">r\nACGTACGT\nACG\nACGTACGT\n")
    assert cli.main(["embed", str(world["lm"]), str(ragged), "--out", str(tmp_path / "emb")]) == 2
    err = capsys.readouterr().err
    assert "cannot write the normalised copy of" in err and "the input is fine" in err and "MAMBADNA_CACHE" in err
