"""The context-sweep recipe (experiments/context_sweep): configs, block splits, and the CPU-sized sweep end to end."""

from __future__ import annotations

import gzip
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from experiments.context_sweep import recipe as R  # noqa: E402
from experiments.context_sweep import splits as S  # noqa: E402
from mambadna import run_config as rc  # noqa: E402

APES = ROOT / "data" / "great_apes" / "manifest.tsv"


# ---- recipe ----

@pytest.mark.parametrize("scale", [R.GPU, R.CPU_SMOKE])
def test_same_bases_and_steps_at_every_length(scale):
    seen, steps = set(), set()
    for L in scale.lengths + (scale.lengths[-1] * 4,):  # and the optional longer length (2^20 for the GPU)
        cfg = R.finetune_config("great_apes", L, "scratch", scale, "m.tsv", "out")
        assert cfg.data.window_bp == L
        assert cfg.pooling == "last"
        seen.add(cfg.train.max_steps * cfg.data.batch_size * L)
        if L in scale.lengths:
            steps.add(cfg.train.max_steps)
        warm = cfg.train.seqlen_warmup_from_bp
        assert (warm > 0) == (L > scale.warmup_above_bp)
        if warm:  # every warmup stage must have whole batches: the first stage's batch divides the epoch
            assert cfg.data.train_windows % (scale.tokens_per_step // warm) == 0
    assert len(seen) == 1 and len(steps) == 1, (seen, steps)


def test_gpu_recipe_is_the_papers_finetuning_recipe():
    cfg = R.finetune_config("great_apes", 2**18, "pretrained", R.GPU, "m.tsv", "out", pretrained="pt/model")
    assert cfg.pretrained == "pt/model" and cfg.pooling == "last"
    assert cfg.optim.warmup_fraction > 0 and cfg.optim.min_lr_ratio < 1  # linear warmup, then cosine
    assert cfg.train.seqlen_warmup_from_bp == 2**14
    assert cfg.data.reverse_complement
    assert R.finetune_config("great_apes", 2**14, "scratch", R.GPU, "m", "o").train.seqlen_warmup_from_bp == 0
    assert cfg.train.chunk_bp is None
    assert R.finetune_config("great_apes", 2**20, "scratch", R.GPU, "m", "o").train.chunk_bp == 2**16
    with pytest.raises(ValueError, match="pretrained"):
        R.finetune_config("great_apes", 2**10, "pretrained", R.GPU, "m.tsv", "out")


@pytest.mark.parametrize("init", R.INITS)
def test_recipe_file_rebuilds_the_config(init, tmp_path):
    cfg = R.finetune_config("bacteria", 2**16, init, R.GPU, "d/manifest.tsv", "runs/x", pretrained="pt/model")
    line = R.write_recipe(cfg, tmp_path / "ft.json")
    assert line.startswith("mambadna finetune --recipe ")
    argv = shlex.split(line)[1:]
    rebuilt = rc.load_recipe(rc.FinetuneConfig(), argv[argv.index("--recipe") + 1])
    assert rc.to_dict(rebuilt) == rc.to_dict(cfg)
    assert (rebuilt.pretrained == "pt/model") == (init == "pretrained")
    pre = R.pretrain_config("bacteria", R.GPU, "g.fa", "pt")
    line = R.write_recipe(pre, tmp_path / "pre.json")
    assert line.startswith("mambadna pretrain ") and rc.load_recipe(rc.PretrainConfig(), tmp_path / "pre.json") == pre


def test_no_argv_builder():
    """Experiments build configs and call the commands' run(cfg); nothing turns a config back into flags."""
    for path in (ROOT / "experiments" / "context_sweep").glob("*.py"):
        text = path.read_text()
        assert "cli_main" not in text and '"--set"' not in text, path.name


# ---- splits ----

def test_apes_block_split_holds_out_the_same_blocks_in_every_species(tmp_path):
    info = S.write_block_splits(S.read_manifest(APES), R.DATASETS["great_apes"].split, tmp_path)
    blocks = info["blocks"]
    first = next(iter(blocks.values()))
    for per in blocks.values():
        assert per == first
    assert not set(first["train"]) & set(first["test"]) and not set(first["val"]) & set(first["test"])
    assert len(first["train"]) + len(first["val"]) + len(first["test"]) == 134  # every bundled block, once
    rows = (tmp_path / "manifest.tsv").read_text().splitlines()
    assert rows[0] == "species\tfasta\tsplit" and len(rows) == 1 + 4 * 3
    human = S.read_fasta(tmp_path / "human.test.fa")
    source = S.read_fasta(ROOT / "data" / "great_apes" / "human.fa")["chr22_epo"]
    for c in info["species"]["human"]["test"]["contigs"]:  # held-out contigs are the source sequence, verbatim
        assert human[c["contig"]] == source[c["start"]:c["end"]]


def test_check_disjoint_catches_overlaps_and_block_leaks(tmp_path):
    info = S.write_block_splits(S.read_manifest(APES), R.DATASETS["great_apes"].split, tmp_path)
    leaky = json.loads(json.dumps(info))
    leaky["blocks"]["gorilla"]["train"].append(leaky["blocks"]["gorilla"]["test"][0])
    with pytest.raises(AssertionError):
        S.check_disjoint(leaky)
    overlap = json.loads(json.dumps(info))
    c = overlap["species"]["human"]["test"]["contigs"][0]
    overlap["species"]["human"]["train"]["contigs"].append({**c, "contig": "x"})
    with pytest.raises(AssertionError, match="overlaps"):
        S.check_disjoint(overlap)


def test_unaligned_split_cuts_each_genome(tmp_path):
    for name, n in (("a", 1000), ("b", 1500)):
        (tmp_path / f"{name}.fa").write_text(f">{name}\n" + "ACGT" * (n // 4) + "\n")
    (tmp_path / "m.tsv").write_text("species\tfasta\na\ta.fa\nb\tb.fa\n")
    info = S.write_block_splits(S.read_manifest(tmp_path / "m.tsv"), S.SplitSpec(5, (4,), (2,)), tmp_path / "s")
    assert info["species"]["a"]["test"]["bp"] == 200 and info["species"]["b"]["train"]["bp"] == 900
    assert [c["contig"] for c in info["species"]["a"]["train"]["contigs"]] == ["a_train_runs0-1", "a_train_runs3-3"]


def test_pretrain_genome_of_every_species(tmp_path):
    from experiments.context_sweep import run

    for name, n in (("a", 1000), ("b", 1500)):
        (tmp_path / f"{name}.fa").write_text(f">{name}\n" + "ACGT" * (n // 4) + "\n")
    (tmp_path / "m.tsv").write_text("species\tfasta\na\ta.fa\nb\tb.fa\n")
    manifest, info = run.prepare_dataset("bacteria", tmp_path / "m.tsv", tmp_path / "sweep")
    genome, species = run.pretrain_genome("bacteria", manifest, tmp_path / "sweep")
    assert species == ["a", "b"]
    contigs = S.read_fasta(genome)
    assert sorted(contigs) == ["a__a_train_runs0-1", "a__a_train_runs3-3", "b__b_train_runs0-1", "b__b_train_runs3-3"]
    assert sum(map(len, contigs.values())) == info["species"]["a"]["train"]["bp"] + info["species"]["b"]["train"]["bp"]
    apes, _ = run.prepare_dataset("great_apes", APES, tmp_path / "apes")
    genome, species = run.pretrain_genome("great_apes", apes, tmp_path / "apes")
    assert species == ["human"] and genome.name == "human.train.fa"


def test_prepare_bacteria_convert(tmp_path):
    sys.path.insert(0, str(ROOT / "data"))
    import prepare_bacteria as pb

    src = tmp_path / "two.fasta.gz"
    with gzip.open(src, "wt") as fh:
        fh.write(">gi|1|ref|NC_017366.1| Helicobacter pylori F32\nACGTAC\nGT\n>gi|2|ref|NC_017371.1| other\nTTTT\n")
    written = pb.convert({"hpylori_f32": src, "hpylori_gambia94_24": src}, tmp_path / "out", check_lengths=False)
    assert written == {"hpylori_f32": 8, "hpylori_gambia94_24": 4}
    assert (tmp_path / "out" / "hpylori_f32.fa").read_text().splitlines()[1] == "ACGTACGT"
    assert (tmp_path / "out" / "manifest.tsv").read_text().startswith("species\tfasta\n")


# ---- the CPU-sized sweep, end to end ----

@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    proc = subprocess.run([sys.executable, str(ROOT / "experiments/context_sweep/run.py"), "--cpu-smoke", "--out",
                           str(out), "--fail-fast"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    return out, rows, proc.stdout


def test_smoke_has_every_row_with_its_command(smoke):
    out, rows, _ = smoke
    datasets = ("great_apes",)
    for ds in datasets:
        for L in R.CPU_SMOKE.lengths:
            for method in ("scratch", "pretrained", "kmer"):
                match = [r for r in rows if r["dataset"] == ds and r.get("window_bp") == L and r["method"] == method]
                assert len(match) == 1, (ds, L, method)
                row = match[0]
                assert row["status"] == "ok", row
                assert 0 <= row["accuracy"] <= 1 and 0 <= row["macro_f1"] <= 1
                if method != "kmer":
                    assert row["command"].startswith("mambadna finetune ")
                    assert row["bases_seen"] == R.CPU_SMOKE.steps * R.CPU_SMOKE.tokens_per_step
                    assert row["test_counts_match"] is True
                    assert row["params"] > 0
                    assert bool(_recipe(row)["pretrained"]) == (method == "pretrained")
        pre = [r for r in rows if r["dataset"] == ds and r["method"] == "pretrain"]
        assert len(pre) == 1 and pre[0]["status"] == "ok" and pre[0]["command"].startswith("mambadna pretrain ")
    # one fixed test set per (dataset, length), the same for the k-mer baseline and both models
    for ds in datasets:
        for L in R.CPU_SMOKE.lengths:
            digests = {r["test_digest"] for r in rows if r["dataset"] == ds and r.get("window_bp") == L
                       and r["method"] != "pretrain"}
            assert len(digests) == 1


def _recipe(row) -> dict:
    """The settings the row's command runs: its --recipe file."""
    argv = shlex.split(row["command"])[1:]
    return json.loads(Path(argv[argv.index("--recipe") + 1]).read_text())


def test_smoke_commands_are_what_ran(smoke):
    out, rows, _ = smoke
    for row in rows:
        if row["method"] in ("scratch", "pretrained"):
            run_dir = Path(_recipe(row)["out_dir"])
            saved = json.loads((run_dir / "run_config.json").read_text())
            saved.pop("kind")
            cfg = R.finetune_config(row["dataset"], row["window_bp"], row["method"], R.CPU_SMOKE,
                                    saved["data"]["manifest"], str(run_dir), saved["pretrained"])
            assert saved == rc.to_dict(cfg)


def test_smoke_row_reruns_from_its_command(smoke, tmp_path):
    out, rows, _ = smoke
    row = next(r for r in rows if r["method"] == "scratch" and r["dataset"] == "great_apes")
    argv = shlex.split(row["command"])[1:] + ["--out", str(tmp_path / "again")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the runner's thread count (same float summation order)
    proc = subprocess.run([sys.executable, "-m", "mambadna", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["test/accuracy"] == pytest.approx(row["accuracy"], abs=1e-6)


def test_smoke_report(smoke):
    out, rows, stdout = smoke
    text = (out / "RESULTS.md").read_text()
    assert "### great_apes" in text
    for L in R.CPU_SMOKE.lengths:
        assert f"| 2^{L.bit_length() - 1} |" in text
    assert "cpu-smoke" in text and "identical for every method at each length (token digest): yes" in text
    assert (out / "accuracy_vs_context.png").stat().st_size > 1000
    assert json.loads((out / "results.json").read_text())
    assert "mambadna finetune" in stdout  # the runner prints each row's command


def test_contig_split_holds_out_whole_chromosomes(tmp_path):
    for sp in ("human", "chimp"):
        (tmp_path / f"{sp}.fa").write_text(">chr1\nAAAA\n>chr7\nCCCC\n>chr8\nGGGG\nGG\n>chr8_KI1_alt\nTTTT\n>chrUn_x\nAC\n")
    (tmp_path / "g.tsv").write_text("species\tfasta\nhuman\thuman.fa\nchimp\tchimp.fa\n")
    info = S.write_contig_splits(S.read_manifest(tmp_path / "g.tsv"), ["chr7"], ["chr8"], tmp_path / "s")
    assert info["species"]["human"]["test"]["bp"] == 6 and info["species"]["human"]["train"]["bp"] == 6
    assert sorted(S.read_fasta(tmp_path / "s" / "chimp.train.fa")) == ["chr1", "chrUn_x"]  # the alt copy is dropped
    with pytest.raises(ValueError, match="chr9"):
        S.write_contig_splits(S.read_manifest(tmp_path / "g.tsv"), ["chr7"], ["chr9"], tmp_path / "t")
