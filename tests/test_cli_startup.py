"""The command line answers before torch loads, and its help says what each flag does, once.

Speed itself is measured by experiments/bench_cli_latency.py (no timed tests); what makes it fast is checked here:
`--help` and argument errors never import torch, Lightning or Triton (sys.modules of a fresh process)."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "pytorch_lightning", "lightning", "triton")
PROBE = """import json, sys
from mambadna import cli
code = None
if sys.argv[1:]:
    code = cli.main(sys.argv[1:])
else:
    cli.build_parser()
print(json.dumps({"code": code, "heavy": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def fresh(*argv: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "stderr": proc.stderr}


@pytest.mark.parametrize("argv", [
    (),  # import mambadna.cli and build every subcommand's parser
    ("finetune", "--help"),
    ("embed", "--help"),
    ("pretrain", "--bogus"),
    ("embed",),
    ("finetune", "--set", "train.max_stepz=3"),
    ("evaluate", "model", "--set", "data.test_windows=0"),
    ("generate", "model", "--temperature", "nan"),
    ("finetune", "--val", "v.csv"),
    ("pretrain", "--genome", "no/such/genome.fa"),
    ("embed", "model", "no/such/seqs.fa"),
], ids=lambda a: " ".join(a) or "import+parser")
def test_help_and_argument_errors_never_import_torch(argv):
    result = fresh(*argv)
    assert result["heavy"] == [], result
    if argv and "--help" not in argv:
        assert result["code"] == 2 and result["stderr"].strip().splitlines()[-1].startswith("error: ")


def test_the_check_sees_torch_when_a_command_runs(tmp_path):
    """Control: the probe does see torch once a command gets past its arguments."""
    fasta = tmp_path / "a.fa"
    fasta.write_text(">a\nACGT\n")
    result = fresh("normalize", str(fasta), str(fasta))  # the arguments are fine; the command refuses
    assert result["code"] == 2 and "torch" in result["heavy"] and "never overwrites" in result["stderr"]


def _subparsers():
    from mambadna import cli

    parser = cli.build_parser()
    return {name: p for a in parser._actions if isinstance(a, argparse._SubParsersAction)
            for name, p in a.choices.items()}


def test_help_lists_each_flag_once_and_says_what_it_does():
    for name, p in _subparsers().items():
        listed = [s for a in p._actions if a.help != argparse.SUPPRESS for s in a.option_strings]
        assert len(listed) == len(set(listed)), (name, sorted(s for s in listed if listed.count(s) > 1))
        text = p.format_help()
        assert "(default: )" not in text, name
        for action in p._actions:
            if action.help and action.help != argparse.SUPPRESS:
                assert action.help.count("default") <= 1 or "(default:" not in action.help, (name, action.help)
    finetune = _subparsers()["finetune"].format_help()
    for flag in ("--pretrained", "--pooling", "--freeze-backbone"):
        assert len(re.findall(rf"^\s+{flag}\b", finetune, flags=re.M)) == 1, flag
    for name in ("pretrain", "finetune", "demo"):
        help_text = next(a.help for a in _subparsers()[name]._actions if "--no-progress" in a.option_strings)
        assert help_text.startswith("hide"), (name, help_text)
    genome = next(a.help for a in _subparsers()["pretrain"]._actions if "--genome" in a.option_strings)
    assert genome.count("default") == 1 and "(default: )" not in genome


def test_evaluate_embed_and_pretrain_take_the_same_runtime_flags():
    parsers = _subparsers()
    flags = {name: {s for a in parsers[name]._actions for s in a.option_strings} for name in parsers}
    runtime = {"--accelerator", "--devices", "--precision", "--set", "--recipe"}
    for name in ("pretrain", "finetune", "evaluate", "embed"):
        assert runtime <= flags[name], (name, runtime - flags[name])
    assert "--resume" in flags["pretrain"] and "--resume" not in flags["evaluate"]


def test_settings_that_moved_keep_their_old_names():
    """train.accelerator / devices / strategy / precision / num_nodes are runtime.* now: the old flags, --set keys
    and recipe keys still work."""
    from mambadna import cli

    args = cli.build_parser().parse_args(["pretrain", "--train.precision", "bf16-mixed", "--set", "train.devices=2"])
    runtime = cli.settings_from_args(args).runtime
    assert (runtime.precision, runtime.devices) == ("bf16-mixed", "2")


def test_latency_benchmark_cpu_smoke(tmp_path):
    """The benchmark script runs (its timings are its business, not a test's) and sees no torch in the answers."""
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "bench_cli_latency.py"), "--cpu-smoke", "--out",
                           str(tmp_path / "lat.txt")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split("\t") for line in (tmp_path / "lat.txt").read_text().splitlines() if not line.startswith("#")]
    assert rows[0][:4] == ["best_s", "median_s", "exit", "heavy_imports"] and len(rows) == 3
    assert [r[3] for r in rows[1:]] == ["none", "none"] and [r[2] for r in rows[1:]] == ["0", "2"]
