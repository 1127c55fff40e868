"""Loader throughput: windows/s and bases/s from a ~5 Mb genome (E. coli 536) through a DataLoader.

  python experiments/bench_loader.py [--fasta ecoli_536.fa] [--out experiments/results/bench_loader.txt]

Without --fasta the genome is built with data/prepare_ecoli.py (Debian bowtie-examples) in a temp folder.
Each setting iterates a full DataLoader over GenomeWindowDataset (train split, max_n_fraction 0.1, reverse-
complement augmentation on) after one warm-up batch; per-worker throughput divides by max(1, num_workers).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from mambadna.data import Genome, GenomeWindowDataset

REPO = Path(__file__).resolve().parents[1]
SETTINGS = [(1 << 10, 64, 20000), (1 << 17, 4, 400)]  # (window_bp, batch_size, windows per run)


def measure(genome: Genome, window_bp: int, batch_size: int, n_windows: int, workers: int) -> tuple[float, float]:
    ds = GenomeWindowDataset(genome, window_bp, num_windows=n_windows + batch_size, reverse_complement=True)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers)
    it = iter(loader)
    next(it)  # worker start-up is not loader throughput
    t0, n = time.perf_counter(), 0
    for batch in it:
        n += batch["input_ids"].shape[0]
    dt = time.perf_counter() - t0
    return n / dt, n * window_bp / dt


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fasta", type=Path)
    parser.add_argument("--out", type=Path, default=REPO / "experiments/results/bench_loader.txt")
    parser.add_argument("--cpu-smoke", action="store_true", help="the bundled lambda genome, tiny runs (CI)")
    args = parser.parse_args(argv)
    settings = [(256, 8, 64)] if args.cpu_smoke else SETTINGS
    with tempfile.TemporaryDirectory() as tmp:
        fasta = args.fasta
        if args.cpu_smoke and fasta is None:
            from mambadna.data import bundled_path

            fasta = bundled_path("lambda")
        if fasta is None:
            subprocess.run([sys.executable, str(REPO / "data/prepare_ecoli.py"), "--out", tmp], check=True)
            fasta = Path(tmp) / "ecoli_536.fa"
        genome = Genome(fasta)
        lines = [f"# bench_loader: {genome.name}, {genome.total_bp} bp, {len(genome.contigs)} contig(s)",
                 f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch "
                 f"{torch.__version__}, python {platform.python_version()}",
                 "window_bp\tbatch\tworkers\twindows/s\tbases/s\tbases/s/worker"]
        for window_bp, batch_size, n_windows in settings:
            for workers in (0, 2):
                wps, bps = measure(genome, window_bp, batch_size, n_windows, workers)
                lines.append(f"{window_bp}\t{batch_size}\t{workers}\t{wps:.0f}\t{bps:.3e}\t{bps / max(1, workers):.3e}")
                print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
