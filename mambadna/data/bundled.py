"""The small real genomes shipped in the repository's top-level ``data/`` folder (see data/README.md).

``data/`` lives beside the package, not inside it, so it is found from the source checkout: this works for
``pip install -e .`` from the repository (the demo's case); a wheel install has no ``data/`` and gets a DataError
saying so. ``$MAMBADNA_DATA`` points elsewhere (a copy of ``data/``) if needed.
"""

from __future__ import annotations

import os
from pathlib import Path

from mambadna.data.errors import DataError

BUNDLED = {
    "lambda": "lambda_phage.fa",
    "mt_human": "MT-human.fa",
    "mt_orang": "MT-orang.fa",
    "hg19_chr17_part": "chr17.hg19.part.fa",
    "great_apes": "great_apes/manifest.tsv",
    "great_apes_human": "great_apes/human.fa",
    "great_apes_chimpanzee": "great_apes/chimpanzee.fa",
    "great_apes_gorilla": "great_apes/gorilla.fa",
    "great_apes_orangutan": "great_apes/orangutan.fa",
}


def data_dir() -> Path:
    """The bundled data folder: $MAMBADNA_DATA, else ``<repository root>/data``."""
    folder = Path(os.environ.get("MAMBADNA_DATA") or Path(__file__).resolve().parents[2] / "data")
    if not (folder / "README.md").is_file():
        raise DataError(f"bundled data not found at {folder}: it ships with the source repository, not the wheel. "
                        "Install from a checkout with `pip install -e .`, or set MAMBADNA_DATA to a copy of the "
                        "repository's data/ folder")
    return folder


def bundled_path(name: str) -> Path:
    """Path of one bundled file by short name (see ``bundled_genomes()``)."""
    if name not in BUNDLED:
        raise DataError(f"no bundled data named {name!r}; available: {', '.join(BUNDLED)}")
    path = data_dir() / BUNDLED[name]
    if not path.is_file():
        raise DataError(f"bundled file {path} is missing from the data folder; see data/README.md to rebuild it")
    return path


def bundled_genomes() -> dict[str, Path]:
    """{short name: path} of every bundled FASTA (and the great-apes species manifest)."""
    return {name: bundled_path(name) for name in BUNDLED}
