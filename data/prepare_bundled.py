"""Rebuild the small FASTAs bundled in mambadna/data/dna/ (shipped in the wheel) and data/great_apes/ (checkout
only) from their public sources (see data/README.md).

  python data/prepare_bundled.py --out mambadna/data/dna    # needs apt (Debian bookworm) and pip; root for apt

- MT-human.fa, MT-orang.fa: minimap2's test/ folder, from Debian's ``minimap2`` source package
  (``apt-get source --download-only minimap2``; the PyPI ``mappy`` 2.31 sdist does not include test/).
- lambda_phage.fa: phage lambda NC_001416.1 from Debian's ``bowtie2-examples`` (reference/lambda_virus.fa.gz).
- chr17.hg19.part.fa: the 40 kb hg19 chr17 piece in pyfaidx's sdist (tests/data/).
- great_apes/: ``python data/prepare_great_apes.py --every 72 --out data/great_apes``.
Files are copied byte for byte (lambda is gunzipped).
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

BOOKWORM_SRC = "deb-src http://deb.debian.org/debian bookworm main\n"


def _apt_source(pkg: str, workdir: Path) -> Path:
    """Download a Debian source package without touching the system's apt configuration."""
    lists = workdir / "lists"
    (lists / "partial").mkdir(parents=True)
    src = workdir / "sources.list"
    src.write_text(BOOKWORM_SRC)
    opts = ["-o", f"Dir::Etc::sourcelist={src}", "-o", "Dir::Etc::sourceparts=-", "-o", f"Dir::State::Lists={lists}"]
    subprocess.run(["apt-get", *opts, "update"], check=True)
    subprocess.run(["apt-get", *opts, "source", "--download-only", pkg], cwd=workdir, check=True)
    return next(workdir.glob(f"{pkg}_*.orig.tar.*"))


def minimap2_mt(out: Path, workdir: Path) -> None:
    with tarfile.open(_apt_source("minimap2", workdir)) as tar:
        for member in tar.getmembers():
            if member.name.endswith(("test/MT-human.fa", "test/MT-orang.fa")):
                with tar.extractfile(member) as src, open(out / Path(member.name).name, "wb") as dst:
                    shutil.copyfileobj(src, dst)


def lambda_phage(out: Path, workdir: Path) -> None:
    subprocess.run(["apt-get", "download", "bowtie2-examples"], cwd=workdir, check=True)
    deb = next(workdir.glob("bowtie2-examples_*.deb"))
    subprocess.run(["dpkg", "-x", str(deb), str(workdir / "bt2")], check=True)
    gz = workdir / "bt2/usr/share/doc/bowtie2/examples/reference/lambda_virus.fa.gz"
    with gzip.open(gz, "rb") as src, open(out / "lambda_phage.fa", "wb") as dst:
        shutil.copyfileobj(src, dst)


def pyfaidx_chr17(out: Path, workdir: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "pyfaidx",
                    "-d", str(workdir)], check=True)
    with tarfile.open(next(workdir.glob("pyfaidx-*.tar.gz"))) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("tests/data/chr17.hg19.part.fa"))
        with tar.extractfile(member) as src, open(out / "chr17.hg19.part.fa", "wb") as dst:
            shutil.copyfileobj(src, dst)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for step in (minimap2_mt, lambda_phage, pyfaidx_chr17):
        with tempfile.TemporaryDirectory() as tmp:
            step(args.out, Path(tmp))
    print(f"wrote MT-human.fa, MT-orang.fa, lambda_phage.fa, chr17.hg19.part.fa to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
