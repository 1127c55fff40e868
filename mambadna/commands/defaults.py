"""The embedded default data: what pretrain / finetune / demo use when given no data arguments.

Four small real genomes ship with the repository (data/README.md). The default classification task is
"which genome does this window come from" among them: human mtDNA, orangutan mtDNA, phage lambda and a piece of
human chr17. It is learnable by a tiny model in a CPU minute, unlike the great-apes task (~99% identical
sequences), which belongs to a GPU recipe.
"""

from __future__ import annotations

from pathlib import Path

from mambadna.data import bundled_path
from mambadna.files import write_text

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
