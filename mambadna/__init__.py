"""mambadna: Mamba selective state space models for long DNA sequences."""

from mambadna.threads import prefer_passive_wait

prefer_passive_wait()  # before torch loads OpenMP: idle threads sleep instead of spinning (mambadna/threads.py)

from mambadna.config import MambaConfig  # noqa: E402
from mambadna.model import MambaClassifier, MambaLM  # noqa: E402
from mambadna.tokenizer import ByteTokenizer, NucleotideTokenizer, reverse_complement, tokenizer_from_name  # noqa: E402
from mambadna.version import __version__  # noqa: E402

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
