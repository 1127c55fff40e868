"""CPU training runs side by side: does a second run on the machine slow each one down by 2x (a fair share) or
far more (thread oversubscription)?

Each scenario starts `runs` copies of the same small `mambadna pretrain` at once (tiny model, bundled genomes),
each with its own environment (OMP_NUM_THREADS, OMP_WAIT_POLICY), and records every run's training time (its
summary.json's train_time_s, which leaves out the interpreter's start) and wall time. "default" passes no thread
setting, so it measures what a user gets: before mambadna set its threads that was torch's own default, after it
is mambadna's choice (mambadna/commands/threads.py).

    python experiments/cpu_threads.py [--steps 60] [--out experiments/results/cpu_threads]
    python experiments/cpu_threads.py --scenarios "two at once, default"   (one scenario)
    python experiments/cpu_threads.py --cpu-smoke --out /tmp/x   (CI: 3 steps, two scenarios)

Writes results.json (raw numbers, machine, date, commit) and table.md into --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results" / "cpu_threads"
PRESSURE = Path("/proc/pressure/cpu")
# (name, parallel runs, environment added to each run's)
SCENARIOS = [
    ("alone, default", 1, {}),
    ("alone, 2 threads", 1, {"OMP_NUM_THREADS": "2"}),
    ("alone, 2 threads, passive wait", 1, {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}),
    ("alone, 1 thread", 1, {"OMP_NUM_THREADS": "1"}),
    ("two at once, default", 2, {}),
    ("two at once, 2 threads each", 2, {"OMP_NUM_THREADS": "2"}),
    ("two at once, 2 threads, passive wait", 2, {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}),
    ("two at once, 1 thread each", 2, {"OMP_NUM_THREADS": "1"}),
]
SMOKE = [SCENARIOS[0], SCENARIOS[7]]


def cpu_pressure() -> str:
    """Linux PSI 'some avg10': the share of time runnable tasks waited for a CPU (other users of the machine)."""
    return PRESSURE.read_text().split()[1].split("=")[1] + "%" if PRESSURE.is_file() else "n/a"


def commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def pretrain_command(out: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "mambadna", "pretrain", "--out", str(out), "--steps", str(steps),
            "--window-bp", "256", "--batch-size", "16", "--model.d_model", "32", "--model.n_layer", "2",
            "--model.d_state", "8", "--no-progress", "--set", "data.val_windows=16",
            "--set", f"train.ckpt_every_n_steps={steps}", "--set", f"train.val_every_n_steps={steps}"]


def run_scenario(name: str, runs: int, extra_env: dict, steps: int, work: Path) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}
    base["PYTHONPATH"] = str(REPO) + os.pathsep + base.get("PYTHONPATH", "")
    pressure = cpu_pressure()
    procs = []
    start = time.perf_counter()
    for i in range(runs):
        out = work / f"{name.replace(' ', '_').replace(',', '')}-{i}"
        procs.append((out, subprocess.Popen(pretrain_command(out, steps), env={**base, **extra_env}, cwd=REPO,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)))
    rows = []
    for out, proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"{name}: a run failed ({proc.returncode}): {err[-2000:]}")
        summary = json.loads((out / "summary.json").read_text())
        rows.append({"train_time_s": summary["train_time_s"], "wall_time_s": summary["wall_time_s"],
                     "bases_per_s": summary["bases_per_s"]})
    return {"scenario": name, "runs": runs, "env": extra_env, "cpu_pressure_before": pressure,
            "elapsed_s": round(time.perf_counter() - start, 2), "per_run": rows}


def table(results: list[dict]) -> str:
    lines = ["| scenario | runs | train time per run (s) | bases/s per run | elapsed (s) | CPU pressure before |",
             "|---|---|---|---|---|---|"]
    for r in results:
        times = ", ".join(f"{x['train_time_s']:.1f}" for x in r["per_run"])
        speed = ", ".join(f"{x['bases_per_s']:,.0f}" for x in r["per_run"])
        lines.append(f"| {r['scenario']} | {r['runs']} | {times} | {speed} | {r['elapsed_s']:.1f} | "
                     f"{r['cpu_pressure_before']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--cpu-smoke", action="store_true", help="3 steps, two scenarios (CI)")
    parser.add_argument("--scenarios", nargs="+", metavar="NAME", help="run only these scenarios (by name)")
    args = parser.parse_args(argv)
    steps, scenarios = (3, SMOKE) if args.cpu_smoke else (args.steps, SCENARIOS)
    if args.scenarios:
        scenarios = [s for s in scenarios if s[0] in args.scenarios]
    results = []
    with tempfile.TemporaryDirectory(prefix="cpu_threads-") as work:
        for name, runs, env in scenarios:
            results.append(run_scenario(name, runs, env, steps, Path(work)))
            print(table(results[-1:]).splitlines()[-1], flush=True)
    meta = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}",
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": commit(), "steps": steps, "python": platform.python_version()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({**meta, "results": results}, indent=1) + "\n")
    header = (f"# CPU training runs side by side\n\n{meta['date']}, commit {meta['commit']}, {meta['cpus']} CPUs "
              f"({meta['machine']}), {steps} steps of a 2-layer d_model 32 LM, 256 bp x 16 windows per step.\n\n")
    (args.out / "table.md").write_text(header + table(results))
    print(table(results))


if __name__ == "__main__":
    main()
