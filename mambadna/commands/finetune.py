"""`mambadna finetune`: a sequence classifier, from scratch or from a pretrained MambaLM (cfg.pretrained).

The run itself (Trainer, checkpoints, resume, test metrics, summary) is mambadna/commands/train.py's, shared with
pretraining.
"""

from __future__ import annotations

from mambadna.commands.train import run_finetune
from mambadna.run_config import FinetuneConfig


def run(cfg: FinetuneConfig) -> dict:
    """Fine-tune as `cfg` says (cfg.resume / resume_from continue a run, cfg.overwrite replaces one); -> the summary
    with the test metrics, also written to <out_dir>/summary.json."""
    return run_finetune(cfg)
