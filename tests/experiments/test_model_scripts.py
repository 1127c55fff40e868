"""Every model-level experiment script runs at tiny CPU sizes (`--cpu-smoke`), so a broken experiment fails CI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_script(name: str, *args: str, timeout: int = 300) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / name), *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.timeout(400)
def test_bench_model_cpu_smoke(tmp_path):
    run_script("bench_model.py", "--out", str(tmp_path), "--cpu-smoke", "--budget-s", "60")
    result = json.loads((tmp_path / "bench_model.json").read_text())
    assert all(row["ok"] for row in result["exactness"])
    assert {row["model"] for row in result["training"]} >= {"mamba-base", "transformer"}


def test_bench_model_runs_one_series_per_scan_kernel(tmp_path):
    """--scan-kernels sets the model's scan_kernel per series (on the CPU the chunked scan runs whichever is set)."""
    run_script("bench_model.py", "--out", str(tmp_path), "--cpu-smoke", "--sections", "train", "--models", "base",
               "--modes", "chunked", "--scan-kernels", "v1,v2", "--log2-lengths", "8", "--json-name", "k")
    rows = json.loads((tmp_path / "k.json").read_text())["training"]
    assert [(r["model"], r["mode"], r["scan_kernel"], r["status"]) for r in rows] == [
        ("mamba-base[v1]", "chunked", "v1", "ok"), ("mamba-base[v2]", "chunked", "v2", "ok")]


def test_bench_model_runs_one_series_per_conv_backend(tmp_path):
    """--conv-backends sets the model's conv_backend per series, naming only the non-torch ones, and checks the Triton
    conv against the torch one in the exactness section (in Triton's interpreter here: root conftest.py)."""
    pytest.importorskip("triton")
    run_script("bench_model.py", "--out", str(tmp_path), "--cpu-smoke", "--models", "base", "--modes", "chunked",
               "--conv-backends", "torch,triton", "--log2-lengths", "8", "--json-name", "c")
    result = json.loads((tmp_path / "c.json").read_text())
    assert [(r["model"], r["conv_backend"], r["status"]) for r in result["training"]] == [
        ("mamba-base", "torch", "ok"), ("mamba-base[conv=triton]", "triton", "ok")]
    assert [r["comparison"] for r in result["exactness"]] == [
        "chunked vs unchunked, fp32", "chunked vs unchunked, fp32 [conv=triton]",
        "conv=triton,norm=torch vs torch, unchunked fp32"]
    assert all(r["ok"] for r in result["exactness"])


def test_bench_model_runs_one_series_per_norm_backend(tmp_path):
    """--norm-backends sets the model's norm_backend per series (inside each conv kernel's), naming only the non-torch
    ones, and the exactness section checks the Triton norm against the eager one. On the CPU the Triton kernels run
    in the interpreter (TRITON_INTERPRET=1 from the root conftest.py)."""
    pytest.importorskip("triton")
    run_script("bench_model.py", "--out", str(tmp_path), "--cpu-smoke", "--sections", "exact,train", "--models", "base",
               "--modes", "plain", "--conv-backends", "torch,triton", "--norm-backends", "torch,triton",
               "--log2-lengths", "8", "--json-name", "n")
    rows = json.loads((tmp_path / "n.json").read_text())["training"]
    assert [(r["model"], r["conv_backend"], r["norm_backend"], r["status"]) for r in rows] == [
        ("mamba-base", "torch", "torch", "ok"), ("mamba-base[norm=triton]", "torch", "triton", "ok"),
        ("mamba-base[conv=triton]", "triton", "torch", "ok"),
        ("mamba-base[conv=triton,norm=triton]", "triton", "triton", "ok")]
    exact = json.loads((tmp_path / "n.json").read_text())["exactness"]
    assert [r["comparison"] for r in exact if "vs torch" in r["comparison"]] == [
        "conv=torch,norm=triton vs torch, unchunked fp32", "conv=triton,norm=torch vs torch, unchunked fp32",
        "conv=triton,norm=triton vs torch, unchunked fp32"]
    assert all(r["ok"] for r in exact)


@pytest.mark.timeout(400)
def test_bench_serving_cpu_smoke(tmp_path):
    run_script("bench_serving.py", "--out", str(tmp_path), "--cpu-smoke")
    result = json.loads((tmp_path / "bench_serving.json").read_text())
    gen = result["generation"]
    assert [row["batch"] for row in gen] == [1, 3] and all(row["mamba_eager_tok_s"] > 0 for row in gen)
    assert all(row["transformer_eager_tok_s"] > 0 for row in gen)
    assert result["embedding"][0]["bases_per_s"] > 0
    assert {row["mode"] for row in result["finetune"]} == {"per_block_checkpointing", "chunk_bp"}
    assert "## generation" in (tmp_path / "bench_serving.md").read_text()


def test_bench_cpu_model_and_loader_cpu_smoke(tmp_path):
    out = run_script("bench_cpu_model.py", "--cpu-smoke", "--out", str(tmp_path / "cpu_model.txt"))
    assert "chunked" in out and (tmp_path / "cpu_model.txt").read_text().count("\n") >= 6
    run_script("bench_loader.py", "--cpu-smoke", "--out", str(tmp_path / "loader.txt"))
    rows = (tmp_path / "loader.txt").read_text().splitlines()[3:]
    assert len(rows) == 2 and all(float(r.split("\t")[3]) > 0 for r in rows)


def test_transformer_baseline_static_step_equals_its_step():
    """The graph-capturable static-cache step of the comparison Transformer computes what its plain step does."""
    import torch

    sys.path.insert(0, str(REPO / "experiments"))
    from transformer_baseline import TransformerConfig, TransformerLM

    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig(d_model=32, n_layer=2, n_head=2)).eval()
    cache = model.allocate_cache(2, 40, dtype=torch.float32)
    token = model.prefill(torch.randint(5, 9, (2, 20)), cache).argmax(-1)
    static = [(k.clone(), v.clone()) for k, v in cache]
    want = model.step(token, 20, cache)
    got = model.step_static(token, torch.tensor([20]), static)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_profile_model_cpu_smoke(tmp_path):
    """profile_model.py: one step's time by kernel group; every op lands in a group and the groups add up."""
    run_script("profile_model.py", "--out", str(tmp_path), "--cpu-smoke", "--chunked-log2", "10")
    row, chunked = json.loads((tmp_path / "profile_model.json").read_text())["rows"]
    assert row["l"] == 256 and row["mode"] == "plain" and row["step_ms"] > 0
    assert chunked["l"] == 1024 and chunked["mode"] == "chunked" and chunked["chunk_bp"] == 128
    for r in (row, chunked):
        assert abs(sum(r["groups"].values()) - r["kernel_ms"]) < 1e-6 * max(1.0, r["kernel_ms"])
        assert {"matmul", "scan"} <= set(r["groups"]) and len(r["top"]) > 5
    text = (tmp_path / "profile_model.md").read_text()
    assert "| group | ms a step |" in text and "## l = 2^10, chunked in 2^7:" in text
