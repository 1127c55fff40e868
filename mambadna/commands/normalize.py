"""`mambadna normalize`: a FASTA pyfaidx cannot index (ragged or blank lines, mixed line endings, gzip) rewritten
as a clean plain copy; the input is never changed."""

from __future__ import annotations

from pathlib import Path

from mambadna.commands.configs import NormalizeConfig


def run(cfg: NormalizeConfig) -> dict:
    from mambadna.data import normalize_fasta

    source, target = Path(cfg.input), Path(cfg.output)
    if target.exists() and source.exists() and target.resolve() == source.resolve():
        raise ValueError(f"{target} is the input itself; normalize never overwrites a file, give a new name")
    lengths = normalize_fasta(source, cfg.output)  # as typed: a trailing / says "a folder"
    print(f"wrote {target}: {len(lengths)} contig(s), {sum(lengths.values())} bp, 60 bases per line")
    return {"output": str(target), "contigs": len(lengths), "bases": sum(lengths.values())}
