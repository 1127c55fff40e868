"""The command-line operations (train, evaluate, embed, export, generate, probe, demo) that mambadna/cli.py runs."""
