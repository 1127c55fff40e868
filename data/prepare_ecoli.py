"""E. coli 536 (NC_008253.1, 4.94 Mb) from Debian's ``bowtie-examples`` package, for the loader benchmark.

It lives at usr/share/doc/bowtie/examples/genomes/NC_008253.fna.gz in that package (plain gzip). Written to
``<out>/ecoli_536.fa`` (plain FASTA, 60 bases a line; not bundled: too big).

  python data/prepare_ecoli.py --out /tmp/ecoli                  # apt-get download + dpkg -x
  python data/prepare_ecoli.py --deb bowtie-examples_1.3.1-1_all.deb --out /tmp/ecoli
With internet and no Debian: NCBI nuccore NC_008253.1 ("Send to: FASTA").
"""

from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
import tempfile
from pathlib import Path

IN_DEB = "usr/share/doc/bowtie/examples/genomes/NC_008253.fna.gz"
LINE_BP = 60


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--deb", type=Path, help="an already downloaded bowtie-examples .deb")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        deb = args.deb
        if deb is None:
            subprocess.run(["apt-get", "download", "bowtie-examples"], cwd=tmp, check=True)
            deb = next(tmp.glob("bowtie-examples_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(tmp / "x")], check=True)
        header, seq = None, []
        with gzip.open(tmp / "x" / IN_DEB, "rt") as fh:
            for line in fh:
                if line.startswith(">"):
                    header = line.strip()
                else:
                    seq.append(line.strip())
    seq = "".join(seq)
    dst = args.out / "ecoli_536.fa"
    with open(dst, "w") as fa:
        fa.write(f"{header}\n")
        for i in range(0, len(seq), LINE_BP):
            fa.write(seq[i : i + LINE_BP] + "\n")
    print(f"{dst}: {len(seq)} bp")
    return 0


if __name__ == "__main__":
    sys.exit(main())
