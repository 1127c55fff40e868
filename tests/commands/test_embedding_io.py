"""Embedding files round-trip in every format: npy + index.tsv, parquet (pyarrow), h5ad (anndata)."""

import json
import sys

import numpy as np
import pytest

from mambadna import cli
from mambadna.commands.embed import Record
from mambadna.commands.embedding_io import EMBEDDING_FORMATS, load_embeddings, read_embeddings, write_embeddings
from mambadna.config import tiny
from mambadna.model import MambaLM

RECORDS = [Record("chr1:0-40", b"ACGT" * 10, "promoter"), Record("seq b", b"GGCCA", ""),
           Record("x\u00e9", b"ACGTN" * 3, "enhancer")]


@pytest.fixture
def vectors():
    return np.random.default_rng(0).standard_normal((3, 7)).astype(np.float32)


def _needs(fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    if fmt == "h5ad":
        pytest.importorskip("anndata")


@pytest.mark.parametrize("fmt", EMBEDDING_FORMATS)
def test_round_trip(tmp_path, vectors, fmt):
    _needs(fmt)
    files = write_embeddings(tmp_path, RECORDS, vectors, fmt=fmt)
    assert list(files) == (["embeddings", "index"] if fmt == "npy" else ["embeddings"])
    for source in (tmp_path, files["embeddings"]):  # the folder, or the file itself
        table = load_embeddings(source)
        assert np.array_equal(table.vectors, vectors) and table.vectors.dtype == np.float32
        assert table.names == [r.name for r in RECORDS]
        assert table.labels == [r.label for r in RECORDS]
        assert table.lengths_bp == [40, 5, 15]


def test_parquet_is_one_row_per_sequence_for_pandas(tmp_path, vectors):
    pytest.importorskip("pyarrow")
    pd = pytest.importorskip("pandas")
    write_embeddings(tmp_path, RECORDS, vectors, fmt="parquet")
    frame = pd.read_parquet(tmp_path / "embeddings.parquet")
    assert list(frame.columns) == ["name", "label", "length_bp", "embedding"]
    assert frame["name"].tolist() == [r.name for r in RECORDS] and frame["length_bp"].tolist() == [40, 5, 15]
    assert np.array_equal(np.stack(frame["embedding"].to_numpy()), vectors)


def test_h5ad_is_X_and_obs_for_scanpy(tmp_path, vectors):
    anndata = pytest.importorskip("anndata")
    write_embeddings(tmp_path, RECORDS, vectors, fmt="h5ad")
    adata = anndata.read_h5ad(tmp_path / "embeddings.h5ad")
    assert adata.shape == (3, 7) and np.array_equal(adata.X, vectors)
    assert list(adata.obs_names) == [r.name for r in RECORDS]
    assert adata.obs["label"].tolist() == ["promoter", "", "enhancer"]
    assert adata.obs["length_bp"].tolist() == [40, 5, 15]
    # names that repeat cannot index obs: rows are numbered instead, and the names kept in a column
    twice = [RECORDS[0], RECORDS[0]]
    write_embeddings(tmp_path / "dup", twice, vectors[:2], fmt="h5ad")
    adata = anndata.read_h5ad(tmp_path / "dup" / "embeddings.h5ad")
    assert list(adata.obs_names) == ["0", "1"] and adata.obs["name"].tolist() == [RECORDS[0].name] * 2


def test_per_position_goes_beside_any_format(tmp_path, vectors):
    pytest.importorskip("pyarrow")
    per_position = [np.full((len(r.sequence), 7), i, dtype=np.float32) for i, r in enumerate(RECORDS)]
    files = write_embeddings(tmp_path, RECORDS, vectors, per_position, fmt="parquet")
    assert set(files) == {"embeddings", "per_position", "index"}
    index = (tmp_path / "index.tsv").read_text().splitlines()
    assert index[0].split("\t")[-2:] == ["pos_start", "pos_end"] and index[-1].split("\t")[-2:] == ["45", "60"]
    assert np.load(tmp_path / "per_position.npy").shape == (60, 7)


def test_missing_libraries_name_the_extra_and_write_nothing(tmp_path, vectors, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    monkeypatch.setitem(sys.modules, "anndata", None)
    for fmt, package in (("parquet", "pyarrow"), ("h5ad", "anndata")):
        with pytest.raises(ValueError, match=rf"{fmt} output needs {package}, which is not installed: "
                                             r"pip install 'mambadna\[formats\]'"):
            write_embeddings(tmp_path / fmt, RECORDS, vectors, fmt=fmt)
        assert not (tmp_path / fmt).exists()


def test_a_folder_with_several_formats_asks_which(tmp_path, vectors):
    pytest.importorskip("pyarrow")
    write_embeddings(tmp_path, RECORDS, vectors, fmt="npy")
    write_embeddings(tmp_path, RECORDS, vectors, fmt="parquet")
    with pytest.raises(ValueError, match="holds several embedding files .*; pass the one to read"):
        read_embeddings(tmp_path)
    assert read_embeddings(tmp_path / "embeddings.parquet")[1] == [r.label for r in RECORDS]


def test_cli_embed_format_then_probe(tmp_path, capsys):
    pytest.importorskip("pyarrow")
    pytest.importorskip("anndata")
    MambaLM(tiny(d_model=16, d_state=4)).save_pretrained(tmp_path / "m")
    rng = np.random.default_rng(0)
    rows = ["name\tsequence\tlabel"] + [f"s{i}\t{''.join(rng.choice(list('ACGT' if i % 2 else 'AT'), 30))}\t"
                                        f"{'mixed' if i % 2 else 'at'}" for i in range(12)]
    (tmp_path / "seqs.tsv").write_text("\n".join(rows) + "\n")
    for fmt in ("parquet", "h5ad"):
        out = tmp_path / fmt
        assert cli.main(["embed", str(tmp_path / "m"), str(tmp_path / "seqs.tsv"), "--out", str(out),
                         "--format", fmt]) == 0
        table = load_embeddings(out)
        assert table.vectors.shape == (12, 16) and table.names[:2] == ["s0", "s1"]
        assert cli.main(["probe", str(out), "--folds", "3"]) == 0
        assert json.loads((out / "probe.json").read_text())["folds"] == 3
    assert cli.main(["embed", str(tmp_path / "m"), str(tmp_path / "seqs.tsv"), "--format", "csv"]) == 2
    assert "invalid choice: 'csv'" in capsys.readouterr().err
