"""A command's summary as the terminal shows it: one `key: value` line each, run statistics rounded."""

from __future__ import annotations

import sys

RUN_STATS = ("train_time_s", "wall_time_s", "bases_per_s", "peak_gpu_memory_mib")


def print_summary(title: str, summary: dict) -> None:
    if "pytorch_lightning" in sys.modules:  # only then can this be one process of several
        from mambadna.commands.run_dir import is_rank_zero

        if not is_rank_zero():  # a multi-process run reports once, from the first process
            return
    print(f"\n{title}")
    for key, value in summary.items():
        if key == "confusion_matrix":
            continue
        if key == "peak_gpu_memory_mib" and value is None:
            print(f"  {key}: none (ran on the {summary.get('device', 'cpu')}, not a GPU)")
        elif key in RUN_STATS and isinstance(value, (int, float)):
            print(f"  {key}: {value:,.1f}")
        else:
            print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")
