"""Loaded by pytest before any test module: on a machine without CUDA, Triton kernels run in its CPU interpreter.

TRITON_INTERPRET must be set before triton is first imported, and pytorch_lightning imports triton, so this cannot
wait for the kernel tests' own module.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
