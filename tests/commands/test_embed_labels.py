"""`read_records` takes labels from the whole FASTA header line, not only the first word pyfaidx keeps."""

from mambadna.commands.embed import read_records


def test_label_regex_searches_the_description(tmp_path):
    path = tmp_path / "labelled.fa"
    path.write_text(">a sample=1 label=promoter\nACGTACGTAC\n>b label=enhancer\nGGCCAATTGG\n>c\nACGT\n")
    records = read_records(path, label_regex=r"label=(\w+)")
    assert [(r.name, r.label) for r in records] == [("a", "promoter"), ("b", "enhancer"), ("c", "")]
    assert records[0].sequence == b"ACGTACGTAC"
