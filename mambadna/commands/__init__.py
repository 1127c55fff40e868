"""The commands of `mambadna`: each a settings dataclass (mambadna/commands/configs.py, mambadna/run_config.py) and
a module here with `run(cfg) -> summary` (pretrain, finetune, evaluate, embed, generate, probe, export, demo,
normalize, steps). mambadna/cli.py builds the command line from the settings; experiments call `run(cfg)` directly."""
