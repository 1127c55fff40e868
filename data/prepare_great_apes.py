"""Great-ape chr22 FASTAs for species classification, from the Ensembl Compara EPO alignment in Debian's
``maffilter-examples`` package (human, chimpanzee, gorilla, orangutan; ~9,600 orthologous blocks of human chr22,
~21.6 Mb per species, repeats soft-masked in lowercase).

Output (in --out):
  <species>.fa          one contig per species, ``chr22_epo``: the ungapped blocks concatenated in human chr22
                        order. One contig (not one per block) so long windows fit; block edges are in the BED.
  <species>.blocks.bed  block boundaries in that contig (name: block index and the human chr22 source interval);
                        pass it as ``bed=`` to keep windows inside single orthologous blocks.
  manifest.tsv          ``species<TAB>fasta`` ready for mambadna.data.SpeciesWindowDataset.
Rows on the '-' strand are written as the MAF gives them (reverse-complemented relative to that species'
assembly), i.e. always in human orientation. ``--every N`` keeps every N-th block (the bundled subset is
``--every 72``, a few hundred kb per species spread over chr22).

Usage:
  python data/prepare_great_apes.py --out great_apes_full            # apt-get download + dpkg -x (Debian)
  python data/prepare_great_apes.py --maf path/to/alignment.maf.gz --out great_apes_full
With internet and no Debian: download the same kind of alignment from Ensembl
(https://ftp.ensembl.org/pub/current_maf/ensembl-compara/multiple_alignments/, an EPO primates collection; one
MAF per human chromosome), and pass each file with --maf and --species-map mapping its species prefixes
(e.g. homo_sapiens=human) to names. For whole genomes instead of alignments, skip this script: download each
assembly FASTA (e.g. hg38, panTro6, gorGor6, ponAbe3 from UCSC) and list them in a manifest
``species<TAB>fasta``; SpeciesWindowDataset samples a species, then a contig by length, then a window.
"""

from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
import tempfile
from pathlib import Path

DEB_MAF = "usr/share/doc/maffilter/examples/Gorilla/Compara.epo_5_catarrhini_hsap-projected.chr22.subset.nogap.cleaned_aln.maf.gz"
DEFAULT_SPECIES = {"Hsap": "human", "Ptro": "chimpanzee", "Ggor": "gorilla", "Ppyg": "orangutan"}
CONTIG = "chr22_epo"
LINE_BP = 60


def fetch_debian_maf(workdir: Path) -> Path:
    """``apt-get download maffilter-examples`` and ``dpkg -x`` it into workdir; returns the MAF path."""
    subprocess.run(["apt-get", "download", "maffilter-examples"], cwd=workdir, check=True)
    deb = next(workdir.glob("maffilter-examples_*.deb"))
    subprocess.run(["dpkg", "-x", str(deb), str(workdir / "x")], check=True)
    return workdir / "x" / DEB_MAF


def parse_species_map(text: str | None) -> dict[str, str]:
    if not text:
        return dict(DEFAULT_SPECIES)
    return dict(item.split("=", 1) for item in text.split(","))


def convert(maf: Path, out: Path, species: dict[str, str], every: int = 1) -> dict[str, int]:
    """Write the FASTAs, BEDs and manifest; returns {species name: bases written}."""
    from Bio import AlignIO
    from tqdm import tqdm

    seqs = {name: [] for name in species.values()}
    beds = {name: [] for name in species.values()}
    pos = dict.fromkeys(species.values(), 0)
    opener = gzip.open if maf.name.endswith(".gz") else open
    kept = 0
    with opener(maf, "rt") as fh:
        for i, block in enumerate(tqdm(AlignIO.parse(fh, "maf"), desc="MAF blocks", unit="block")):
            if i % every:
                continue
            rows = {rec.id.split(".")[0]: rec for rec in block}
            if not all(prefix in rows for prefix in species):
                continue  # a block missing a species would give that species a different set of regions
            ref = rows[next(iter(species))]
            ref_start = ref.annotations["start"]
            label = f"block{i}_{ref.id}:{ref_start}-{ref_start + ref.annotations['size']}"
            for prefix, name in species.items():
                seq = str(rows[prefix].seq).replace("-", "")
                beds[name].append(f"{CONTIG}\t{pos[name]}\t{pos[name] + len(seq)}\t{label}\n")
                seqs[name].append(seq)
                pos[name] += len(seq)
            kept += 1
    if not kept:
        raise SystemExit(f"{maf}: no block has all of {', '.join(species)}")
    out.mkdir(parents=True, exist_ok=True)
    manifest = ["species\tfasta\n"]
    for name in species.values():
        seq = "".join(seqs[name])
        with open(out / f"{name}.fa", "w") as fa:
            fa.write(f">{CONTIG} {name} chr22 EPO blocks concatenated in human order\n")
            for j in range(0, len(seq), LINE_BP):
                fa.write(seq[j : j + LINE_BP] + "\n")
        (out / f"{name}.blocks.bed").write_text("".join(beds[name]))
        manifest.append(f"{name}\t{name}.fa\n")
    (out / "manifest.tsv").write_text("".join(manifest))
    return pos


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--maf", type=Path, help="MAF(.gz) to use instead of downloading maffilter-examples")
    parser.add_argument("--every", type=int, default=1, help="keep every N-th block (default 1: all)")
    parser.add_argument("--species-map", help="prefix=name,... (default Hsap=human,Ptro=chimpanzee,...)")
    args = parser.parse_args(argv)
    if args.every < 1:
        parser.error("--every must be >= 1")
    with tempfile.TemporaryDirectory() as tmp:
        maf = args.maf if args.maf else fetch_debian_maf(Path(tmp))
        if not maf.is_file():
            parser.error(f"{maf}: no such file")
        written = convert(maf, args.out, parse_species_map(args.species_map), args.every)
    for name, n_bp in written.items():
        print(f"{name}\t{n_bp} bp\t{args.out / (name + '.fa')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
