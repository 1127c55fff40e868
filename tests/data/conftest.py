"""Shared fixtures for the data tests: a private cache folder, and copies of the bundled real DNA in tmp_path
(tests that write indexes or edit files must never touch the repository's data/ folder)."""

import shutil
from pathlib import Path

import pytest

from mambadna.data import bundled_path

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("MAMBADNA_CACHE", str(cache))
    return cache


@pytest.fixture
def copy_bundled(tmp_path):
    def copy(name: str, dest_name: str | None = None) -> Path:
        src = bundled_path(name)
        dst = tmp_path / "genomes" / (dest_name or src.name)
        dst.parent.mkdir(exist_ok=True)
        shutil.copyfile(src, dst)
        return dst

    return copy


@pytest.fixture
def fixture_copy(tmp_path):
    def copy(name: str) -> Path:
        dst = tmp_path / "fixtures" / name
        dst.parent.mkdir(exist_ok=True)
        shutil.copyfile(FIXTURES / name, dst)
        return dst

    return copy


def _read_fasta(path: Path) -> dict[str, str]:
    out, name = {}, None
    for line in Path(path).read_text().splitlines():
        if line.startswith(">"):
            name = line[1:].split()[0]
            out[name] = []
        elif line.strip():
            out[name].append(line.strip())
    return {k: "".join(v) for k, v in out.items()}


@pytest.fixture
def read_fasta():
    """A plain reference reader for comparisons (independent of pyfaidx and of mambadna)."""
    return _read_fasta
