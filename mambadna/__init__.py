"""mambadna: Mamba selective state space models for long DNA sequences."""

from mambadna.config import MambaConfig
from mambadna.model import MambaClassifier, MambaLM
from mambadna.tokenizer import ByteTokenizer, NucleotideTokenizer, reverse_complement, tokenizer_from_name
from mambadna.version import __version__

__all__ = [
    "__version__",
    "MambaConfig",
    "MambaLM",
    "MambaClassifier",
    "NucleotideTokenizer",
    "ByteTokenizer",
    "reverse_complement",
    "tokenizer_from_name",
]
