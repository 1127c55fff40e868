"""Pictures of a run (matplotlib, Agg backend): loss/metric curves from the CSV log, confusion matrix, PCA."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mambadna.files import atomic_open  # noqa: E402


def _save(fig, out_png) -> None:
    with atomic_open(out_png, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def read_metrics(metrics_csv) -> dict[str, tuple[list[float], list[float]]]:
    """{metric: (steps, values)} from Lightning CSVLogger metrics.csv file(s) (a path or a list of paths, e.g. the
    parts of a resumed run, in order; blank cells skipped)."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    paths = metrics_csv if isinstance(metrics_csv, (list, tuple)) else [metrics_csv]
    rows = []
    for path in paths:
        with open(path, newline="") as fh:
            rows.extend(csv.DictReader(fh))
    for row in rows:
        step = row.get("step")
        if not step:
            continue
        for key, value in row.items():
            if key in ("step", "epoch") or not value:
                continue
            try:
                number = float(value)
            except ValueError:
                continue
            if math.isfinite(number):
                steps, values = series.setdefault(key, ([], []))
                steps.append(float(step))
                values.append(number)
    return series


def plot_curves(metrics_csv, out_png: str | Path, title: str = "") -> Path:
    """One panel of losses (train/val/test) and one of the other metrics, against the optimizer step."""
    series = read_metrics(metrics_csv)
    losses = {k: v for k, v in series.items() if k.endswith("/loss")}
    others = {k: v for k, v in series.items()
              if not k.endswith(("/loss", "window_bp", "perplexity")) and not k.startswith(("lr", "train/"))}
    fig, axes = plt.subplots(1, 2 if others else 1, figsize=(11 if others else 6, 4), squeeze=False)
    for key, (steps, values) in sorted(losses.items()):
        axes[0, 0].plot(steps, values, marker="o" if len(steps) < 20 else None, label=key)
    axes[0, 0].set(xlabel="step", ylabel="loss (nats)", title=title or "loss")
    axes[0, 0].legend()
    if others:
        for key, (steps, values) in sorted(others.items()):
            axes[0, 1].plot(steps, values, marker="o", label=key)
        axes[0, 1].set(xlabel="step", title="metrics")
        axes[0, 1].legend()
    fig.tight_layout()
    _save(fig, out_png)
    return Path(out_png)


def save_confusion(matrix: np.ndarray, class_names: list[str], out_png: str | Path, out_csv: str | Path) -> None:
    """Rows = true class, columns = predicted class; counts."""
    matrix = np.asarray(matrix, dtype=np.int64)
    with atomic_open(out_csv, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["true\\predicted", *class_names])
        for name, row in zip(class_names, matrix):
            writer.writerow([name, *row.tolist()])
    size = 1.2 + 0.7 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    _save(fig, out_png)


def plot_pca(features: np.ndarray, labels: list[str], out_png: str | Path, title: str = "PCA of embeddings") -> None:
    from sklearn.decomposition import PCA

    points = PCA(n_components=2).fit_transform(np.asarray(features, dtype=np.float64))
    fig, ax = plt.subplots(figsize=(6, 5))
    for name in sorted(set(labels)):
        keep = np.array([lab == name for lab in labels])
        ax.scatter(points[keep, 0], points[keep, 1], s=10, alpha=0.7, label=name)
    ax.set(xlabel="PC1", ylabel="PC2", title=title)
    ax.legend(markerscale=2, fontsize=8)
    fig.tight_layout()
    _save(fig, out_png)
