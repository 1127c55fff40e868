"""Start-up cost of a genome of many small contigs (issue #22: a million contigs took 70 s and 1.4 GB before a
2-step run): opening the Genome (index, its check, the per-contig counts), the train/val/test split and the
datasets a pretraining run builds, cold (fresh cache) and warm (second open).

  python experiments/bench_many_contigs.py [--contigs 1000000] [--contig-bp 64] [--out results.txt]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_fasta(path: Path, contigs: int, contig_bp: int) -> None:
    rng = np.random.default_rng(0)
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)
    with open(path, "wb") as fh:
        for lo in range(0, contigs, 100_000):
            n = min(100_000, contigs - lo)
            seqs = letters[rng.integers(0, 4, size=(n, contig_bp))]
            fh.write(b"".join(b">c%d\n%s\n" % (lo + i, seqs[i].tobytes()) for i in range(n)))


def measure(fasta: Path) -> dict[str, float]:
    from mambadna.data import GenomeDataModule

    times = {}
    start = time.perf_counter()
    datamodule = GenomeDataModule(fasta, window_bp=32, batch_size=4, val_windows=4, test_windows=4)
    times["open"] = time.perf_counter() - start
    start = time.perf_counter()
    for split in ("val", "test"):
        datamodule.check_split(split)
    datamodule.train_windows_per_epoch()
    datamodule.train_dataloader()
    times["splits + datasets"] = time.perf_counter() - start
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contigs", type=int, default=1_000_000)
    parser.add_argument("--contig-bp", type=int, default=64)
    parser.add_argument("--out", help="also write the table here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MAMBADNA_CACHE"] = str(Path(tmp) / "cache")
        fasta = Path(tmp) / "many.fa"
        write_fasta(fasta, args.contigs, args.contig_bp)
        rows = [f"{args.contigs:,} contigs of {args.contig_bp} bp ({fasta.stat().st_size / 2**20:.0f} MiB)"]
        for run in ("cold", "warm"):
            times = measure(fasta)
            rows.append(f"{run}\t" + "\t".join(f"{k} {v:.1f} s" for k, v in times.items()))
        rows.append(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")
    text = "\n".join(rows) + "\n"
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    sys.exit(main())
