"""transformers' Mamba both ways: `export` loads in MambaForCausalLM / AutoTokenizer with mambadna's logits and ids,
transformers folders load back into mambadna, and Hub ids resolve from an offline cache (no network)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mambadna import cli, hf
from mambadna.checkpoint import load
from mambadna.commands.export import export_model
from mambadna.config import tiny
from mambadna.model import MambaClassifier, MambaLM
from mambadna.tokenizer import ByteTokenizer, NucleotideTokenizer

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("single_thread")
REPO = Path(__file__).resolve().parents[1]


def _lm(seed=0, **overrides) -> MambaLM:
    """A tiny model whose every parameter is moved off its init (A_log, D, norms, biases), so a misplaced or
    re-initialised weight shows in the logits."""
    torch.manual_seed(seed)
    model = MambaLM(tiny(d_model=32, d_state=8, **overrides)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _load_transformers(folder):
    """MambaForCausalLM.from_pretrained, failing on any missing / unexpected / mismatched weight or load warning."""
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                records.append(record.getMessage())

    handler = Keep()
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        model, info = transformers.MambaForCausalLM.from_pretrained(str(folder), output_loading_info=True)
    finally:
        logger.removeHandler(handler)
    assert {k: list(v) for k, v in info.items()} == {"missing_keys": [], "unexpected_keys": [],
                                                     "mismatched_keys": [], "error_msgs": []}
    weight_warnings = [m for m in records if "weight" in m.lower() or "initialized" in m.lower()]
    assert not weight_warnings, weight_warnings
    return model.eval()


def _rel(a, b) -> float:
    return float((a - b).abs().max() / a.abs().max())


@pytest.mark.parametrize("overrides", [
    {},
    {"tie_embeddings": False, "bias": True, "conv_bias": False, "dt_rank": 3, "d_conv": 3, "expand": 3,
     "norm_eps": 1e-6},
    {"scan_kernel": "v2", "scan_backend": "chunked", "conv_backend": "auto", "norm_backend": "auto"},
], ids=["default", "untied-biases-shapes", "how-it-runs"])
def test_export_loads_in_transformers_with_the_same_logits(tmp_path, real_dna, overrides):
    model = _lm(**overrides)
    model.save_pretrained(tmp_path / "m")
    files = export_model(tmp_path / "m", tmp_path / "hf")
    assert set(files) == {"config", "weights", "tokenizer", "tokenizer_config"}
    exported = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert not {"scan_kernel", "scan_backend", "norm_backend", "pad_vocab_multiple"} & set(exported)  # our settings
    assert exported["conv_kernel"] == model.config.d_conv  # transformers' name for the conv width, not the setting
    theirs = _load_transformers(tmp_path / "hf")
    ids = torch.from_numpy(NucleotideTokenizer().encode(real_dna[:300]))[None]  # (1, 300)
    with torch.no_grad():
        for length in (1, 37, 300):
            assert _rel(model(ids[:, :length]), theirs(ids[:, :length]).logits) <= 1e-5, length
        greedy_ours = model.generate(ids[:, :20], max_new_tokens=12, temperature=0)
        # mambadna samples only the real bases (A C G T N); tell transformers' generate the same
        lo, hi = NucleotideTokenizer.sampleable_ids
        others = [i for i in range(model.config.vocab_size) if not lo <= i < hi]
        greedy_theirs = theirs.generate(ids[:, :20], max_new_tokens=12, do_sample=False, suppress_tokens=others)
    assert torch.equal(greedy_ours, greedy_theirs)


def test_exported_tokenizer_gives_nucleotide_ids(tmp_path, real_dna):
    _lm().save_pretrained(tmp_path / "m")
    export_model(tmp_path / "m", tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    ours = NucleotideTokenizer(lenient=True)
    soft_masked = real_dna[:100].lower() + real_dna[100:200] + "RYKMSWBDHVnU-x"
    for seq in (real_dna, soft_masked, "A", "acgtn"):
        assert tok(seq)["input_ids"] == ours.encode(seq).tolist(), seq[:20]
    batch = tok([real_dna[:10], real_dna[:25]], padding=True, return_tensors="pt")
    expect = ours.batch_encode([real_dna[:10], real_dna[:25]])
    assert torch.equal(batch["input_ids"], expect["input_ids"])
    assert torch.equal(batch["attention_mask"].bool(), expect["attention_mask"])
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.mask_token_id, tok.unk_token_id) == \
        (ours.pad_id, ours.bos_id, ours.eos_id, ours.mask_id, ours.unk_id)
    assert tok.decode(ours.encode(real_dna[:50])) == real_dna[:50]


def test_byte_tokenizer_model_exports_too(tmp_path):
    model = _lm(vocab_size=264, tokenizer="byte")
    model.save_pretrained(tmp_path / "m")
    export_model(tmp_path / "m", tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    text = "ACGT acgt\tNNN é ☃\n"
    assert tok(text)["input_ids"] == ByteTokenizer().encode(text).tolist()
    assert tok.decode(ByteTokenizer().encode(text)) == text
    ids = torch.tensor(ByteTokenizer().encode(text))[None]
    with torch.no_grad():
        assert _rel(model(ids), _load_transformers(tmp_path / "hf")(ids).logits) <= 1e-5
    assert load(tmp_path / "hf").config.tokenizer == "byte"


def test_transformers_folder_imports_back(tmp_path, real_dna):
    """A folder written by transformers itself (its save_pretrained, its tokenizer save) loads as a MambaLM with
    the same logits, through every entry point: from_pretrained, checkpoint.load, a classifier's backbone."""
    model = _lm(tie_embeddings=False)
    model.save_pretrained(tmp_path / "m")
    export_model(tmp_path / "m", tmp_path / "hf")
    theirs = _load_transformers(tmp_path / "hf")
    theirs.save_pretrained(tmp_path / "resaved")
    transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf")).save_pretrained(tmp_path / "resaved")
    ids = torch.from_numpy(NucleotideTokenizer().encode(real_dna[:200]))[None]
    back = MambaLM.from_pretrained(tmp_path / "resaved").eval()
    assert back.config == model.config
    with torch.no_grad():
        assert torch.equal(back(ids), model(ids))
        assert torch.equal(load(tmp_path / "resaved")(ids), model(ids))
    clf = MambaClassifier.from_pretrained_backbone(tmp_path / "resaved", num_classes=3)
    assert torch.equal(clf.backbone.embedding.weight, model.embedding.weight)


def test_transformers_made_model_without_tokenizer_reads_as_nucleotide(tmp_path):
    """A MambaForCausalLM drawn by transformers (its own init, tied, vocab 16) and saved with no tokenizer files."""
    torch.manual_seed(0)
    config = transformers.MambaConfig(vocab_size=16, hidden_size=24, num_hidden_layers=2, state_size=4,
                                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    theirs = transformers.MambaForCausalLM(config).eval()
    theirs.save_pretrained(tmp_path / "t")
    ours = MambaLM.from_pretrained(tmp_path / "t").eval()
    assert (ours.config.tokenizer, ours.config.d_model, ours.config.dt_rank_resolved) == ("nucleotide", 24, 2)
    assert ours.lm_head.weight is ours.embedding.weight
    ids = torch.randint(5, 10, (2, 50))
    with torch.no_grad():
        assert _rel(theirs(ids).logits, ours(ids)) <= 1e-5
    # and through the CLI's converter, back out to transformers
    assert cli.main(["export", str(tmp_path / "t"), str(tmp_path / "again")]) == 0
    with torch.no_grad():
        assert _rel(theirs(ids).logits, _load_transformers(tmp_path / "again")(ids).logits) <= 1e-5


def test_what_cannot_be_exported_or_imported_is_refused(tmp_path, monkeypatch, capsys):
    MambaClassifier(tiny(d_model=32), num_classes=2).save_pretrained(tmp_path / "clf")
    assert cli.main(["export", str(tmp_path / "clf"), str(tmp_path / "out")]) == 2
    assert "has no sequence-classification class; export its language model with --backbone" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert cli.main(["export", str(tmp_path / "clf"), str(tmp_path / "out"), "--backbone"]) == 0
    assert load(tmp_path / "out").config.d_model == 32

    # a MambaConfig setting with no transformers key (as a future one would be) and a non-default value
    monkeypatch.setattr(hf, "FIELDS", {k: v for k, v in hf.FIELDS.items() if k != "residual_in_fp32"})
    with pytest.raises(ValueError, match=r"no equivalent of MambaConfig residual_in_fp32=False"):
        hf.config_to_transformers(tiny(d_model=32, residual_in_fp32=False))
    hf.config_to_transformers(tiny(d_model=32))  # at its default it says nothing transformers does not assume
    monkeypatch.undo()

    folder = tmp_path / "out"
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_act": "gelu"}))
    with pytest.raises(ValueError, match="hidden_act 'gelu'; mambadna's Mamba uses silu only"):
        MambaLM.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config))
    vocab = json.loads((folder / "tokenizer.json").read_text())
    vocab["model"]["vocab"]["X"] = 10
    (folder / "tokenizer.json").write_text(json.dumps(vocab))
    (folder / "tokenizer_config.json").unlink()
    with pytest.raises(ValueError, match=r"its tokenizer \(11 tokens\) is not one of mambadna's"):
        MambaLM.from_pretrained(folder)
    (folder / "tokenizer.json").unlink()
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="a pickle, which can run code"):
        MambaLM.from_pretrained(folder)
    assert cli.main(["export", str(tmp_path / "m"), str(tmp_path / "x"), "--format", "onnx"]) == 2
    assert "invalid choice: 'onnx'" in capsys.readouterr().err


def _fake_hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """`folder` as huggingface_hub caches a downloaded model repo: blobs named by content hash, a snapshot of
    symlinks to them under a commit hash, and refs/main naming that commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for path in folder.iterdir():
        blob = repo / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
        blob.write_bytes(path.read_bytes())
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def test_hub_ids_resolve_offline_from_the_cache(tmp_path, real_dna):
    """A Hub id in Python and on the CLI, with HF_HUB_OFFLINE=1 and the cache in tmp_path: no network at all.
    Run in a subprocess because huggingface_hub reads HF_HOME / HF_HUB_OFFLINE once, at import."""
    pytest.importorskip("huggingface_hub")
    model = _lm()
    model.save_pretrained(tmp_path / "m")
    export_model(tmp_path / "m", tmp_path / "hf")
    hub = tmp_path / "hf_home" / "hub"
    _fake_hub_cache(hub, "someone/tiny-dna-mamba", tmp_path / "hf")  # transformers format
    _fake_hub_cache(hub, "someone/tiny-dna-mambadna", tmp_path / "m")  # mambadna's own format
    ids = NucleotideTokenizer().encode(real_dna[:64])
    with torch.no_grad():
        np.save(tmp_path / "expected.npy", model(torch.from_numpy(ids)[None]).numpy())
    (tmp_path / "seqs.fa").write_text(f">one\n{real_dna[:64]}\n>two\n{real_dna[64:128]}\n")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("HF_HUB_CACHE", None)
    # one subprocess for all of it: each start imports torch, transformers and Lightning again
    script = f"""
import contextlib, io
import numpy as np, torch, transformers
from mambadna import cli
from mambadna.model import MambaLM
ids = torch.from_numpy(np.array({ids.tolist()}))[None]
expected = torch.from_numpy(np.load({str(tmp_path / 'expected.npy')!r}))
for repo in ("someone/tiny-dna-mamba", "someone/tiny-dna-mambadna"):
    with torch.no_grad():
        got = MambaLM.from_pretrained(repo).eval()(ids)
    assert float((got - expected).abs().max()) <= 1e-5 * float(expected.abs().max()), repo
theirs = transformers.MambaForCausalLM.from_pretrained("someone/tiny-dna-mamba")  # the cache is a real one
with torch.no_grad():
    assert float((theirs(ids).logits - expected).abs().max()) <= 1e-5 * float(expected.abs().max())
assert cli.main(["embed", "someone/tiny-dna-mamba", {str(tmp_path / 'seqs.fa')!r}, "--out", "emb"]) == 0
err = io.StringIO()
with contextlib.redirect_stderr(err):
    assert cli.main(["generate", "someone/not-cached", "--out", "g.fa"]) == 2
print(err.getvalue())
"""
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert np.load(tmp_path / "emb" / "embeddings.npy").shape == (2, 32)
    assert run.stdout.strip().splitlines()[-1].startswith(
        "error: someone/not-cached is neither a local folder nor a Hub model that could be fetched"), run.stdout


def test_cli_commands_take_a_transformers_folder(tmp_path, capsys):
    """finetune --pretrained, evaluate and generate on a folder transformers wrote (embed: the Hub test above)."""
    _lm().save_pretrained(tmp_path / "m")
    export_model(tmp_path / "m", tmp_path / "hf")
    _load_transformers(tmp_path / "hf").save_pretrained(tmp_path / "theirs")
    folder = str(tmp_path / "theirs")  # no tokenizer files: read as nucleotide from its vocabulary of 16
    small = ["--window-bp", "64", "--batch-size", "8", "--set", "data.val_windows=8", "--set", "data.test_windows=16",
             "--no-progress"]
    assert cli.main(["finetune", "--pretrained", folder, "--out", str(tmp_path / "ft"), "--steps", "2", *small]) == 0
    clf = load(tmp_path / "ft" / "model")
    assert isinstance(clf, MambaClassifier) and clf.config.d_model == 32
    assert cli.main(["evaluate", folder, "--window-bp", "64", "--out", str(tmp_path / "ev")]) == 0
    assert 0 < json.loads((tmp_path / "ev" / "evaluation.json").read_text())["test/bits_per_base"] < 8
    assert cli.main(["generate", folder, "--prompt", "GATTACA", "--length-bp", "20",
                     "--out", str(tmp_path / "g.fa")]) == 0
    assert "".join((tmp_path / "g.fa").read_text().splitlines()[1:]).startswith("GATTACA")
