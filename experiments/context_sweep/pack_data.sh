#!/usr/bin/env bash
# Put what gpu_run.sh needs into git-ignored folders of a checkout, to travel with the device tool's `carry`:
#   <root>/.sweepdata/great_apes/  all ~9,600 chr22 EPO blocks, 4 species, gzip FASTA + BED + manifest (~26 MB)
#   <root>/.sweepdata/bacteria/    4 bacterial genomes, BGZF FASTA + manifest (~3.4 MB)
#   <root>/.whl/                   pyfaidx and biopython wheels for the GPU image's Python 3.12
#
#   experiments/context_sweep/pack_data.sh [ROOT]        (default ROOT: this checkout; needs apt-get and pip)
# Both folders are added to ROOT's .git/info/exclude so git never picks them up.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/../.." && pwd)
ROOT=$(cd "${1:-$HERE}" && pwd)
GITDIR=$(git -C "$ROOT" rev-parse --git-dir)
case "$GITDIR" in /*) ;; *) GITDIR="$ROOT/$GITDIR" ;; esac
mkdir -p "$GITDIR/info"
for d in /.sweepdata/ /.whl/; do grep -qxF "$d" "$GITDIR/info/exclude" 2>/dev/null || echo "$d" >> "$GITDIR/info/exclude"; done

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
DATA="$ROOT/.sweepdata"
mkdir -p "$DATA"

if [ ! -f "$DATA/great_apes/manifest.tsv" ]; then
  python3 "$HERE/data/prepare_great_apes.py" --out "$TMP/great_apes"
  mkdir -p "$DATA/great_apes"
  for sp in human chimpanzee gorilla orangutan; do
    gzip -9 -c "$TMP/great_apes/$sp.fa" > "$DATA/great_apes/$sp.fa.gz"
    cp "$TMP/great_apes/$sp.blocks.bed" "$DATA/great_apes/"
  done
  sed 's/\.fa$/.fa.gz/' "$TMP/great_apes/manifest.tsv" > "$DATA/great_apes/manifest.tsv"
fi
if [ ! -f "$DATA/bacteria/manifest.tsv" ]; then
  python3 "$HERE/data/prepare_bacteria.py" --bgzip --out "$DATA/bacteria"
fi

mkdir -p "$ROOT/.whl"
for spec in pyfaidx==0.9.2.2 biopython==1.85; do
  name=${spec%%==*}
  ls "$ROOT"/.whl/"$name"-*.whl >/dev/null 2>&1 && continue
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$ROOT/.whl" "$spec"
done
du -sh "$DATA"/* "$ROOT/.whl"
echo "carry: [\".sweepdata\", \".whl\"]"
