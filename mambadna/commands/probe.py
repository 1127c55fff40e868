"""Linear probes with scikit-learn: logistic regression on model embeddings (cross-validated), and the k-mer
frequency + logistic-regression baseline that `probe`, `evaluate` and the demo put beside the model, so a user can
tell whether the model adds anything to what k-mer counts already say; for a language model `evaluate` puts an
order-3 Markov chain's bits per base beside the model's.

Where a training split exists (the demo, `evaluate` on species windows) the baseline is fitted on training
windows and scores the test windows the classifier is scored on. Otherwise it is cross-validated: `probe` on the
embedded sequences with the embedding probe's own folds (same labels, same seed; sequences that overlap inflate
both alike), `evaluate` of a labelled test file on its sequences. `probe` finds the sequences through the
`source.json` that `mambadna embed` writes beside the embeddings (mambadna/commands/embedding_io.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mambadna.commands.configs import ProbeConfig

KMER_KS = (4, 5, 6)  # k-mer lengths of the baseline's features
KMER = "kmer_baseline"  # the prefix of its metrics
KMER_TRAIN_WINDOWS = 1024  # training windows the baseline is fitted on where a training split exists
MARKOV_ORDER = 3  # a language model's baseline: the next base from the 3 before it (order 5 overfit small genomes)


def _logistic():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def _folds(labels: list[str], folds: int) -> tuple[int, np.ndarray]:
    """(folds that fit the rarest label, label counts), or a ValueError saying which labels are missing or rare."""
    if not any(labels):
        raise ValueError("probing needs labels, and index.tsv has none: embed a FASTA with --label-regex, or a "
                         "table with a 'label' column")
    if not all(labels):
        missing = [i for i, label in enumerate(labels) if not label]
        raise ValueError(f"{len(missing)} of {len(labels)} sequences have no label (index.tsv rows {missing[:5]}); "
                         "give every sequence one")
    classes, counts = np.unique(np.asarray(labels), return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"probing needs at least 2 labels, got {list(classes)} (labels come from index.tsv)")
    folds = min(folds, int(counts.min()))
    if folds < 2:
        raise ValueError(f"probing needs at least 2 sequences of every label; counts: "
                         f"{dict(zip(classes.tolist(), counts.tolist()))}")
    return folds, counts


def _cross_validated(features: np.ndarray, labels: list[str], folds: int, seed: int) -> dict:
    from sklearn.model_selection import StratifiedKFold, cross_validate

    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    scores = cross_validate(_logistic(), features, labels, cv=cv, scoring=("accuracy", "f1_macro"))
    return {"accuracy": float(scores["test_accuracy"].mean()), "accuracy_std": float(scores["test_accuracy"].std()),
            "macro_f1": float(scores["test_f1_macro"].mean())}


def probe_embeddings(vectors: np.ndarray, labels: list[str], folds: int = 5, seed: int = 0) -> dict:
    """Stratified k-fold accuracy and macro-F1 of a logistic regression on `vectors`."""
    folds, counts = _folds(labels, folds)
    return {"folds": folds, **_cross_validated(vectors, labels, folds, seed),
            "chance": float(counts.max() / counts.sum())}


def run(cfg: ProbeConfig) -> dict:
    """The `mambadna probe` command: the probe of an `embed` folder's vectors by their labels and, on the same
    folds, the k-mer baseline on the sequences embedded, written as probe.json, and a PCA scatter (pca.png), in
    cfg.out_dir (default: the embeddings folder)."""
    from mambadna.commands.embedding_io import read_embeddings
    from mambadna.commands.plots import plot_pca
    from mambadna.commands.run_dir import out_folder, refuse_existing
    from mambadna.files import write_json

    out = out_folder(cfg.out_dir or cfg.embeddings)
    refuse_existing([out / "probe.json", out / "pca.png"], cfg.overwrite)
    vectors, labels = read_embeddings(cfg.embeddings)
    result = probe_embeddings(vectors, labels, cfg.folds)
    result.update(kmer_probe(cfg.embeddings, cfg.folds))  # the same sequences and folds, k-mer counts
    out.mkdir(parents=True, exist_ok=True)
    plot_pca(vectors, labels, out / "pca.png")
    write_json(out / "probe.json", result)
    return {**result, "pca": str(Path(out) / "pca.png")}


def kmer_cross_validated(sequences, labels: list[str], folds: int = 5, seed: int = 0) -> dict:
    """The k-mer baseline on these sequences, with `probe_embeddings`' folds: {"kmer_baseline/accuracy", ...}."""
    folds, _ = _folds(labels, folds)
    scores = _cross_validated(kmer_features(sequences), labels, folds, seed)
    return {f"{KMER}/{k}": v for k, v in scores.items()} | {f"{KMER}/k": ",".join(map(str, KMER_KS)),
                                                              f"{KMER}/folds": folds}


def kmer_probe(embeddings: str | Path, folds: int = 5, seed: int = 0) -> dict:
    """`kmer_cross_validated` on the sequences an embeddings folder was made from (its source.json), or
    {"kmer_baseline": why it could not be computed} when they cannot be read back."""
    from mambadna.commands.embed import read_records
    from mambadna.commands.embedding_io import SOURCE_NAME, load_embeddings

    path = Path(embeddings)
    source_file = (path if path.is_dir() else path.parent) / SOURCE_NAME
    if not source_file.is_file():
        return {KMER: f"not computed: no {SOURCE_NAME} beside the embeddings (written by `mambadna embed`)"}
    source = json.loads(source_file.read_text())
    if not Path(source["input"]).exists():
        return {KMER: f"not computed: the embedded input {source['input']} is gone"}
    table = load_embeddings(path)
    records = read_records(source["input"], label_regex=source.get("label_regex", ""), regions=source.get("regions"))
    if [r.name for r in records] != table.names:
        return {KMER: f"not computed: {source['input']} no longer holds the embedded sequences"}
    limit = source.get("max_length_bp")
    return kmer_cross_validated([r.sequence[:limit] if limit else r.sequence for r in records], table.labels, folds,
                                seed)


def _kmer_index(seq, k: int) -> np.ndarray:
    """The index (base-4 number over A, C, G, T) of every k-mer of `seq` without another letter, in order."""
    lut = np.full(256, -1, dtype=np.int64)
    for i, base in enumerate(b"ACGT"):
        lut[base] = i
        lut[ord(chr(base).lower())] = i
    codes = lut[np.frombuffer(seq if isinstance(seq, bytes) else seq.encode(), dtype=np.uint8)]
    if len(codes) < k:
        return np.zeros(0, dtype=np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(codes, k)
    return (windows[(windows >= 0).all(axis=1)] * (4 ** np.arange(k - 1, -1, -1))).sum(axis=1)


def kmer_features(sequences, ks=KMER_KS) -> np.ndarray:
    """Normalised k-mer frequency vectors (ACGT only; windows with N just count fewer k-mers). (n, sum 4^k)."""
    out = np.zeros((len(sequences), sum(4**k for k in ks)), dtype=np.float32)
    for row, seq in enumerate(sequences):
        offset = 0
        for k in ks:
            counts = np.bincount(_kmer_index(seq, k), minlength=4**k).astype(np.float32)
            out[row, offset : offset + 4**k] = counts / max(1.0, counts.sum())
            offset += 4**k
    return out


def markov_bits_per_base(train_seqs, test_seqs, order: int = MARKOV_ORDER) -> float:
    """The language-model counterpart of the k-mer baseline: bits per base of an order-`order` Markov chain (the
    next base from the `order` before it; add-one smoothed (order + 1)-mer counts of the training sequences),
    over every base of the test sequences that has `order` A/C/G/T bases before it."""
    counts = np.ones((4**order, 4))
    for seq in train_seqs:
        index = _kmer_index(seq, order + 1)
        np.add.at(counts, (index // 4, index % 4), 1)
    log_p = np.log2(counts / counts.sum(axis=1, keepdims=True))
    bits, n = 0.0, 0
    for seq in test_seqs:
        index = _kmer_index(seq, order + 1)
        bits -= float(log_p[index // 4, index % 4].sum())
        n += len(index)
    return bits / max(1, n)


def kmer_baseline(train_seqs, train_labels, test_seqs, test_labels, ks=KMER_KS) -> dict:
    """Fit logistic regression on k-mer frequencies of the training windows, score the test windows."""
    from sklearn.metrics import accuracy_score, f1_score

    model = _logistic().fit(kmer_features(train_seqs, ks), train_labels)
    pred = model.predict(kmer_features(test_seqs, ks))
    return {"accuracy": float(accuracy_score(test_labels, pred)),
            "macro_f1": float(f1_score(test_labels, pred, average="macro"))}

