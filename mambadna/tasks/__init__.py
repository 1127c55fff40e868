"""Lightning tasks (pretraining, classification) and the run-level operations the `mambadna` CLI calls.

The model (mambadna.model) never imports Lightning; everything Lightning lives here and in mambadna.data's
DataModules.
"""
