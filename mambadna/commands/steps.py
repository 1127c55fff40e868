"""`mambadna run RECIPE`: the steps of a chained recipe file, in order, each by its command's `run(cfg)`.

    [[step]]
    command = "pretrain"
    out_dir = "runs/chain/pretrain"
    train = { max_steps = 300 }

    [[step]]
    command = "finetune"
    out_dir = "runs/chain/finetune"
    pretrained = "runs/chain/pretrain/model"

    [[step]]
    command = "evaluate"
    checkpoint = "runs/chain/finetune/model"
    out_dir = "runs/chain/evaluate"

Every step's settings are read and checked before the first step runs (mambadna/commands/configs.py,
`step_configs`); a failing step stops the chain with its one-line error.
"""

from __future__ import annotations

import dataclasses
import importlib

from mambadna.commands.configs import COMMANDS, StepsConfig, step_configs
from mambadna.commands.summary import print_summary


def run(cfg: StepsConfig) -> dict:
    """-> {"step N (command)": that step's summary} of every step."""
    steps = step_configs(cfg.recipe)
    out = {}
    for i, (name, step) in enumerate(steps, 1):
        print(f"[step {i}/{len(steps)}] {name}", flush=True)
        _, module, _, title = COMMANDS[name]
        summary = importlib.import_module(module).run(step)
        if title and summary:
            print_summary(title.format(**{**dataclasses.asdict(step), **summary}), summary)
        out[f"step {i} ({name})"] = summary
    return out
