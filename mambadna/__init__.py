"""mambadna: Mamba selective state space models for long DNA sequences."""

__version__ = "0.1.0"

from mambadna.config import MambaConfig  # noqa: E402  (after __version__, which checkpoint.py imports)
from mambadna.model import MambaClassifier, MambaLM  # noqa: E402
from mambadna.tokenizer import ByteTokenizer, NucleotideTokenizer, reverse_complement, tokenizer_from_name  # noqa: E402

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
