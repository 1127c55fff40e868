"""The comparison experiment (experiments/compare_strands.py) end to end at its --cpu-smoke size: both tasks,
all three default variants, the k-mer row, and the table it writes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "compare_strands.py"


@pytest.fixture(scope="module")
def compare_strands():
    spec = importlib.util.spec_from_file_location("compare_strands", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_smoke_runs_every_task_and_variant(compare_strands, tmp_path):
    results = compare_strands.main(["--cpu-smoke", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "runs")])
    rows = results["rows"]
    assert [(r["task"], r["variant"]) for r in rows] == [
        (task, variant) for task in ("bundled", "great_apes") for variant in ("kmer", "causal", "bidirectional",
                                                                              "caduceus")]
    for row in rows:
        assert 0 <= row["test_accuracy"] <= 1 and 0 <= row["test_macro_f1"] <= 1
        if row["variant"] != "kmer":
            assert row["pretrain_steps"] == row["finetune_steps"] == 2 and row["test_windows"] == 16
            assert row["pretrain_val_bits"] > 0
    assert set(results["throughput"]) == {"causal", "bidirectional", "caduceus"}
    assert all(rate > 0 for speeds in results["throughput"].values() for rate in speeds.values())
    models = {r["variant"]: r["model"] for r in rows if r["task"] == "bundled" and r["variant"] != "kmer"}
    assert models["caduceus"]["rc_equivariant"] and models["caduceus"]["bidirectional"]
    assert not models["causal"]["bidirectional"] and not models["causal"]["rc_equivariant"]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["mode"] == "cpu-smoke" and len(saved["rows"]) == 8
    table = (tmp_path / "out" / "table.md").read_text()
    assert "**great_apes**" in table and "RC-equivariant (BiMamba + RCPS, MLM)" in table
