"""The small real genomes that ship with mambadna (see data/README.md for provenance and licences).

Two places, by licence: the four FASTAs the demo uses (MIT, BSD-3 and NCBI-record terms, which allow shipping
them) are package data in ``mambadna/data/dna/``, so a plain ``pip install mambadna`` runs ``mambadna demo``
anywhere; the great-apes subset (CeCILL, copyleft) stays in the repository's top-level ``data/great_apes/`` and is
found only from a source checkout. ``$MAMBADNA_DATA`` (a folder laid out like ``mambadna/data/dna/`` plus
``great_apes/``) is looked in first.

They are also the default data of pretrain / finetune / evaluate / demo (`default_species_manifest`,
`default_pretrain_genome`). The default classification task is "which genome does this window come from" among the
four packaged genomes: human mtDNA, orangutan mtDNA, phage lambda and a piece of human chr17. It is learnable by a
tiny model in a CPU minute, unlike the great-apes task (~99% identical sequences), which belongs to a GPU recipe.
"""

from __future__ import annotations

import os
from pathlib import Path

from mambadna.data.errors import DataError
from mambadna.files import write_text

PACKAGED_DIR = Path(__file__).resolve().parent / "dna"
CHECKOUT_DIR = Path(__file__).resolve().parents[2] / "data"  # exists only in a source checkout

# short name -> file, relative to the folder it lives in
PACKAGED = {
    "lambda": "lambda_phage.fa",
    "mt_human": "MT-human.fa",
    "mt_orang": "MT-orang.fa",
    "hg19_chr17_part": "chr17.hg19.part.fa",
}
CHECKOUT_ONLY = {
    "great_apes": "great_apes/manifest.tsv",
    "great_apes_human": "great_apes/human.fa",
    "great_apes_chimpanzee": "great_apes/chimpanzee.fa",
    "great_apes_gorilla": "great_apes/gorilla.fa",
    "great_apes_orangutan": "great_apes/orangutan.fa",
}
BUNDLED = {**PACKAGED, **CHECKOUT_ONLY}


def data_dir() -> Path:
    """The folder of the shipped FASTAs: $MAMBADNA_DATA if set, else the package's ``data/dna``."""
    folder = Path(os.environ.get("MAMBADNA_DATA") or PACKAGED_DIR)
    if not folder.is_dir():
        raise DataError(f"bundled data folder {folder} does not exist; unset MAMBADNA_DATA or point it at a copy of "
                        "mambadna/data/dna")
    return folder


def bundled_path(name: str) -> Path:
    """Path of one bundled file by short name (see ``bundled_genomes()``)."""
    if name not in BUNDLED:
        raise DataError(f"no bundled data named {name!r}; available: {', '.join(BUNDLED)}")
    home = PACKAGED_DIR if name in PACKAGED else CHECKOUT_DIR
    places = [Path(os.environ["MAMBADNA_DATA"])] if os.environ.get("MAMBADNA_DATA") else []
    for folder in places + [home]:
        if (folder / BUNDLED[name]).is_file():
            return folder / BUNDLED[name]
    if name in CHECKOUT_ONLY:
        raise DataError(f"bundled data {name!r} is not installed with the package (its CeCILL licence is copyleft, "
                        "see data/README.md): use a source checkout of mambadna, or set MAMBADNA_DATA to a folder "
                        f"holding {BUNDLED[name]}")
    looked = ", ".join(str(p / BUNDLED[name]) for p in places + [home])
    raise DataError(f"bundled file {BUNDLED[name]} is missing (looked at {looked}); see data/README.md to rebuild it")


def bundled_genomes() -> dict[str, Path]:
    """{short name: path} of every bundled FASTA (and the great-apes species manifest) that is installed here."""
    out = {}
    for name in BUNDLED:
        try:
            out[name] = bundled_path(name)
        except DataError:
            if name in PACKAGED:
                raise
    return out


# class name -> bundled_path name
DEFAULT_SPECIES = {
    "human_chr17": "hg19_chr17_part",
    "human_mt": "mt_human",
    "orangutan_mt": "mt_orang",
    "phage_lambda": "lambda",
}


def default_species_manifest(out_dir: str | Path) -> Path:
    """Write `<out_dir>/data/species.tsv` pointing at the bundled genomes (absolute paths)."""
    folder = Path(out_dir) / "data"
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "species.tsv"
    lines = ["species\tfasta"] + [f"{name}\t{bundled_path(key).resolve()}" for name, key in DEFAULT_SPECIES.items()]
    if not manifest.is_file() or manifest.read_text() != "\n".join(lines) + "\n":
        write_text(manifest, "\n".join(lines) + "\n")
    return manifest


def default_pretrain_genome(out_dir: str | Path) -> Path:
    """Write `<out_dir>/data/bundled_pretrain.fa`: the same four genomes as contigs of one FASTA. Its block split
    (train, then val, then test block of every contig) matches the species split, so pretraining never sees the
    classifier's test windows."""
    folder = Path(out_dir) / "data"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "bundled_pretrain.fa"
    parts = []
    for key in DEFAULT_SPECIES.values():
        text = bundled_path(key).read_text()
        parts.append(text if text.endswith("\n") else text + "\n")
    content = "".join(parts)
    if not target.is_file() or target.read_text() != content:
        write_text(target, content)
        stale_index = target.with_suffix(".fa.fai")
        if stale_index.exists():
            stale_index.unlink()
    return target
