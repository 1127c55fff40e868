"""How long `mambadna` takes to answer `--help` and argument errors, each a fresh process as a user runs it.

Run: python experiments/bench_cli_latency.py [--repeats 5]
     python experiments/bench_cli_latency.py --cpu-smoke --out /tmp/x.txt    # two cases, one run each (CI)
     python experiments/bench_cli_latency.py --root ../other-checkout --out /tmp/before.txt   # another version
Prints one row per command line (best and median wall seconds over --repeats fresh processes, the exit code, and
whether torch was imported before the answer) and writes them, with the machine, date, commit and load average,
to experiments/results/bench_cli_latency.txt. The target (issue #23) is under 1.5 s on a 2-core machine: the
answer must come before torch, Lightning or Triton are imported, which takes seconds. A run that imported torch
is marked, whatever its time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results" / "bench_cli_latency.txt"
TARGET_S = 1.5
# what a new user types first: help pages, a mistyped flag, a missing argument, a bad value, an unknown setting
CASES = [
    ["--help"],
    ["pretrain", "--help"],
    ["finetune", "--help"],
    ["evaluate", "--help"],
    ["embed", "--help"],
    ["pretrain", "--bogus"],
    ["embed"],
    ["finetune", "--set", "train.max_stepz=3"],
    ["pretrain", "--steps", "0"],
    ["evaluate", "model", "--set", "data.test_windows=0"],
    ["probe", "emb", "--folds", "1"],
    ["generate", "model", "--temperature", "nan"],
]
SMOKE_CASES = [["finetune", "--help"], ["pretrain", "--bogus"]]
# the same entry point as `python -m mambadna`, then a report of the heavy modules imported by the time it answered
PROBE = ("import sys\nfrom mambadna.cli import main\ncode = main(sys.argv[1:])\n"
         "heavy = [m for m in ('torch', 'pytorch_lightning', 'lightning', 'triton') if m in sys.modules]\n"
         "print('HEAVY=' + ','.join(heavy), file=sys.stderr)\nsys.exit(code)\n")


def run_once(argv: list[str], root: Path = ROOT) -> tuple[float, int, str]:
    """(wall seconds, exit code, heavy modules imported) of one fresh `mambadna ARGV` process of the checkout at
    `root`."""
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env, cwd=root,
                          timeout=300)
    seconds = time.perf_counter() - start
    heavy = next((line[6:] for line in proc.stderr.splitlines() if line.startswith("HEAVY=")), "?")
    return seconds, proc.returncode, heavy


def commit(root: Path = ROOT) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="fresh processes per command line")
    p.add_argument("--cpu-smoke", action="store_true", help="two command lines, one process each (seconds; CI)")
    p.add_argument("--out", type=Path, default=RESULTS, help="where to write the table")
    p.add_argument("--root", type=Path, default=ROOT, help="the mambadna checkout to measure (default: this one)")
    a = p.parse_args(argv)
    root = a.root.resolve()
    cases, repeats = (SMOKE_CASES, 1) if a.cpu_smoke else (CASES, a.repeats)
    try:
        import torch  # noqa: F401  (only its version, for the header; the timed processes are fresh)

        torch_version = sys.modules["torch"].__version__
    except ImportError:
        torch_version = "absent"
    lines = [f"# bench_cli_latency: seconds until `mambadna ARGS` answers, best / median of {repeats} fresh processes",
             f"# {platform.machine()}, {os.cpu_count()} CPU cores, python {platform.python_version()}, torch "
             f"{torch_version}, load average {os.getloadavg()[0]:.2f}",
             f"# {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}, {root.name} at commit "
             f"{commit(root)}, target < "
             f"{TARGET_S} s before torch is imported",
             "best_s\tmedian_s\texit\theavy_imports\targs"]
    print("\n".join(lines), flush=True)
    slow = 0
    for argv_ in cases:
        runs = [run_once(argv_, root) for _ in range(repeats)]
        times = [r[0] for r in runs]
        heavy = ",".join(sorted({r[2] for r in runs if r[2]})) or "none"
        slow += heavy != "none" or min(times) >= TARGET_S
        row = f"{min(times):.2f}\t{statistics.median(times):.2f}\t{runs[0][1]}\t{heavy}\t{' '.join(argv_)}"
        lines.append(row)
        print(row, flush=True)
    lines.append(f"# {len(cases) - slow} of {len(cases)} command lines answered under {TARGET_S} s without torch")
    print(lines[-1])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
