"""Lightning modules (pretraining, classification) and their callbacks; nothing else.

The model (mambadna.model) never imports Lightning. The run-level operations the `mambadna` CLI calls (train,
evaluate, embed, generate, probe, demo) live in mambadna.commands; the DataModules in mambadna.data.
"""
