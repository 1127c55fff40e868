"""mambadna: Mamba selective state space models for long DNA sequences.

The public names load on first use (PEP 562), so `import mambadna.cli` does not import torch: the command line
answers `--help` and argument errors before the seconds torch takes to import.
"""

from mambadna.version import __version__

_LAZY = {
    "MambaConfig": "mambadna.config",
    "MambaLM": "mambadna.model",
    "MambaClassifier": "mambadna.model",
    "NucleotideTokenizer": "mambadna.tokenizer",
    "ByteTokenizer": "mambadna.tokenizer",
    "reverse_complement": "mambadna.tokenizer",
    "tokenizer_from_name": "mambadna.tokenizer",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mambadna' has no attribute {name!r}")
