"""`mambadna pretrain`: a MambaLM learns next-base (or masked-base) prediction on a genome.

The run itself (Trainer, checkpoints, resume, summary) is mambadna/commands/train.py's, shared with fine-tuning.
"""

from __future__ import annotations

from mambadna.commands.train import run_pretrain
from mambadna.run_config import PretrainConfig


def run(cfg: PretrainConfig) -> dict:
    """Pretrain as `cfg` says (cfg.resume / resume_from continue a run, cfg.overwrite replaces one); -> the summary,
    also written to <out_dir>/summary.json."""
    return run_pretrain(cfg)
