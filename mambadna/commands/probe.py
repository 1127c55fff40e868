"""Linear probes with scikit-learn: logistic regression on model embeddings (cross-validated) and the k-mer
frequency baseline the demo compares the fine-tuned classifier with."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mambadna.commands.configs import ProbeConfig


def _logistic():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def probe_embeddings(vectors: np.ndarray, labels: list[str], folds: int = 5, seed: int = 0) -> dict:
    """Stratified k-fold accuracy and macro-F1 of a logistic regression on `vectors`."""
    from sklearn.model_selection import StratifiedKFold, cross_validate

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
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    scores = cross_validate(_logistic(), vectors, labels, cv=cv, scoring=("accuracy", "f1_macro"))
    return {"folds": folds, "accuracy": float(scores["test_accuracy"].mean()),
            "accuracy_std": float(scores["test_accuracy"].std()), "macro_f1": float(scores["test_f1_macro"].mean()),
            "chance": float(counts.max() / counts.sum())}


def run(cfg: ProbeConfig) -> dict:
    """The `mambadna probe` command: the probe of an `embed` folder's vectors by their labels, written as
    probe.json, and a PCA scatter (pca.png), in cfg.out_dir (default: the embeddings folder)."""
    from mambadna.commands.embedding_io import read_embeddings
    from mambadna.commands.plots import plot_pca
    from mambadna.commands.run_dir import out_folder, refuse_existing
    from mambadna.files import write_json

    out = out_folder(cfg.out_dir or cfg.embeddings)
    refuse_existing([out / "probe.json", out / "pca.png"], cfg.overwrite)
    vectors, labels = read_embeddings(cfg.embeddings)
    result = probe_embeddings(vectors, labels, cfg.folds)
    out.mkdir(parents=True, exist_ok=True)
    plot_pca(vectors, labels, out / "pca.png")
    write_json(out / "probe.json", result)
    return {**result, "pca": str(Path(out) / "pca.png")}


def kmer_features(sequences, ks=(4, 5, 6)) -> np.ndarray:
    """Normalised k-mer frequency vectors (ACGT only; windows with N just count fewer k-mers). (n, sum 4^k)."""
    lut = np.full(256, -1, dtype=np.int64)
    for i, base in enumerate(b"ACGT"):
        lut[base] = i
        lut[ord(chr(base).lower())] = i
    out = np.zeros((len(sequences), sum(4**k for k in ks)), dtype=np.float32)
    for row, seq in enumerate(sequences):
        codes = lut[np.frombuffer(seq if isinstance(seq, bytes) else seq.encode(), dtype=np.uint8)]
        offset = 0
        for k in ks:
            if len(codes) >= k:
                windows = np.lib.stride_tricks.sliding_window_view(codes, k)
                ok = (windows >= 0).all(axis=1)
                index = (windows[ok] * (4 ** np.arange(k - 1, -1, -1))).sum(axis=1)
                counts = np.bincount(index, minlength=4**k).astype(np.float32)
                out[row, offset : offset + 4**k] = counts / max(1.0, counts.sum())
            offset += 4**k
    return out


def kmer_baseline(train_seqs, train_labels, test_seqs, test_labels, ks=(4, 5, 6)) -> dict:
    """Fit logistic regression on k-mer frequencies of the training windows, score the test windows."""
    from sklearn.metrics import accuracy_score, f1_score

    model = _logistic().fit(kmer_features(train_seqs, ks), train_labels)
    pred = model.predict(kmer_features(test_seqs, ks))
    return {"accuracy": float(accuracy_score(test_labels, pred)),
            "macro_f1": float(f1_score(test_labels, pred, average="macro"))}

