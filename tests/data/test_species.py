"""Species classification windows on the bundled great-apes chr22 subset."""

import shutil
from collections import Counter

import torch

from mambadna.data import SpeciesWindowDataset, bundled_path


def test_manifest_dataset_labels_windows_and_class_names():
    ds = SpeciesWindowDataset(bundled_path("great_apes"), 512, seed=0, num_windows=400)
    assert ds.class_names == ["chimpanzee", "gorilla", "human", "orangutan"]
    labels = Counter()
    for i in range(len(ds)):
        item = ds[i]
        assert item["input_ids"].shape == (512,) and item["attention_mask"].all()
        labels[item["label"]] += 1
    assert set(labels) == {0, 1, 2, 3}
    assert min(labels.values()) > 60  # species are drawn uniformly: 100 expected each


def test_window_comes_from_the_labelled_species_file():
    ds = SpeciesWindowDataset(bundled_path("great_apes"), 256, seed=1, num_windows=40)
    for i in range(len(ds)):
        label, contig, start, raw, _ = ds.window(i)
        fasta = bundled_path(f"great_apes_{ds.class_names[label]}")
        seq = "".join(line for line in fasta.read_text().splitlines()[1:])
        assert seq[start:start + 256].encode() == raw


def test_held_out_regions_do_not_overlap_training_windows():
    spans = {}
    for split in ("train", "val", "test"):
        ds = SpeciesWindowDataset(bundled_path("great_apes"), 1024, split=split, num_windows=300)
        spans[split] = {(ds.window(i)[0], ds.window(i)[2]) for i in range(len(ds))}
    for a, b in [("train", "val"), ("train", "test"), ("val", "test")]:
        assert not any(la == lb and abs(sa - sb) < 1024 for la, sa in spans[a] for lb, sb in spans[b])


def test_folder_of_fastas_and_split_column(tmp_path):
    folder = tmp_path / "apes"
    folder.mkdir()
    for name in ("human", "orangutan"):
        shutil.copyfile(bundled_path(f"great_apes_{name}"), folder / f"{name}.fa")
    ds = SpeciesWindowDataset(folder, 300, num_windows=20)
    assert ds.class_names == ["human", "orangutan"]
    shutil.copyfile(bundled_path("mt_human"), tmp_path / "mt_human.fa")
    shutil.copyfile(bundled_path("mt_orang"), tmp_path / "mt_orang.fa")
    manifest = tmp_path / "m.tsv"
    manifest.write_text("species\tfasta\tsplit\nhuman\tapes/human.fa\ttrain\norangutan\tapes/orangutan.fa\ttrain\n"
                        "human\tmt_human.fa\tval\norangutan\tmt_orang.fa\tval\n")
    val = SpeciesWindowDataset(manifest, 300, split="val", num_windows=30)
    assert {val.window(i)[1] for i in range(len(val))} == {"MT_human", "MT_orang"}
    train = SpeciesWindowDataset(manifest, 300, split="train", num_windows=30)
    assert {train.window(i)[1] for i in range(len(train))} == {"chr22_epo"}


def test_species_sampling_is_deterministic_per_epoch():
    a = SpeciesWindowDataset(bundled_path("great_apes"), 128, seed=3, num_windows=50)
    b = SpeciesWindowDataset(bundled_path("great_apes"), 128, seed=3, num_windows=50)
    assert all(torch.equal(a[i]["input_ids"], b[i]["input_ids"]) for i in range(50))
    b.set_epoch(1)
    assert [a.window(i)[:3] for i in range(50)] != [b.window(i)[:3] for i in range(50)]
