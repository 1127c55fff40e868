"""Turn a sweep's rows (OUT/rows.jsonl, written by run.py) into OUT/RESULTS.md, OUT/results.json and
OUT/accuracy_vs_context.png.

  python experiments/context_sweep/report.py OUT [--title TEXT]

Only the last row of each (dataset, method, context length) counts, so a rerun of one row replaces it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

METHODS = ("scratch", "pretrained", "kmer")
LABELS = {"scratch": "Mamba from scratch", "pretrained": "Mamba pretrained", "kmer": "k-mer + logistic regression"}


def load_rows(out: Path) -> list[dict]:
    rows = []
    for path in sorted(out.glob("rows*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    latest: dict[tuple, dict] = {}
    for row in rows:
        latest[(row.get("dataset"), row.get("method"), row.get("window_bp"))] = row
    return list(latest.values())


def _log2(n: int) -> str:
    return f"2^{int(n).bit_length() - 1}"


def _bases(n) -> str:
    if not n:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return str(int(n))


def _cell(row: dict | None) -> str:
    if row is None:
        return "not run"
    if row.get("status") != "ok":
        return row.get("status", "?")
    return f"{row['accuracy']:.3f} / {row['macro_f1']:.3f}"


def tables(rows: list[dict]) -> str:
    lines = []
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    for ds in datasets:
        mine = [r for r in rows if r["dataset"] == ds]
        pre = next((r for r in mine if r["method"] == "pretrain"), None)
        lengths = sorted({r["window_bp"] for r in mine if r["method"] in METHODS and r.get("window_bp")})
        lines.append(f"### {ds}\n")
        if pre:
            bpb = pre.get("val_bits_per_base")
            bpb_text = f"validation {bpb:.3f} bits/base" if bpb is not None else "no validation loss"
            lines.append(f"Pretrained ({pre.get('status')}) on the training regions of "
                         f"{', '.join(pre.get('species') or [])}: {pre.get('steps')} steps, {pre.get('window_bp')} bp "
                         f"windows, {_bases(pre.get('bases_seen'))} bases, {bpb_text}, "
                         f"{pre.get('seconds', 0):.0f} s on {pre.get('device')}, {pre.get('params')} parameters. "
                         f"Command: `{pre.get('command')}`\n")
        lines.append("| context | test windows | chance | scratch acc / F1 | pretrained acc / F1 | k-mer acc / F1 "
                     "| steps x batch | bases seen | seconds (scratch, pretrained) | where |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for L in lengths:
            by = {m: next((r for r in mine if r["method"] == m and r.get("window_bp") == L), None) for m in METHODS}
            model = by["scratch"] or by["pretrained"] or {}
            kmer = by["kmer"] or {}
            n_test = model.get("test_windows") or kmer.get("test_windows")
            chance = kmer.get("chance")
            if chance is None and model.get("test_counts"):
                counts = model["test_counts"]
                chance = max(counts.values()) / sum(counts.values())
            secs = ", ".join(f"{by[m]['seconds']:.0f}" if by[m] and by[m].get("seconds") is not None else "-"
                             for m in ("scratch", "pretrained"))
            where = "; ".join(sorted({f"{r.get('scale')} on {r.get('device')}" for r in by.values()
                                      if r and r.get("status") == "ok"}))
            steps = f"{model.get('steps')} x {model.get('batch_size')}" if model.get("steps") else "-"
            bases = _bases(model.get("bases_seen"))
            lines.append(f"| {_log2(L)} | {n_test} | {chance:.3f} | " if chance is not None else
                         f"| {_log2(L)} | {n_test} | - | ")
            lines[-1] += (f"{_cell(by['scratch'])} | {_cell(by['pretrained'])} | {_cell(by['kmer'])} | {steps} | "
                          f"{bases} | {secs} | {where} |")
        digests: dict[int, set] = {}
        for r in mine:
            if r.get("method") in METHODS and r.get("test_digest"):
                digests.setdefault(r["window_bp"], set()).add(r["test_digest"])
        same = all(len(v) <= 1 for v in digests.values())
        lines.append("")
        lines.append(f"Test windows identical for every method at each length (token digest): "
                     f"{'yes' if same else 'NO'}; model test-label counts equal the k-mer test-label counts: "
                     f"{_counts_match(mine)}.\n")
    return "\n".join(lines)


def _counts_match(rows: list[dict]) -> str:
    flags = [r.get("test_counts_match") for r in rows if r.get("method") in ("scratch", "pretrained")
             and r.get("status") == "ok"]
    if not flags:
        return "no model rows"
    return "yes" if all(flags) else "NO"


def commands(rows: list[dict]) -> str:
    out = []
    for r in rows:
        if r.get("command") and r.get("method") in ("scratch", "pretrained"):
            out.append(f"- {r['dataset']} {_log2(r['window_bp'])} {r['method']} ({r.get('status')}):\n"
                       f"  `{r['command']}`")
    return "\n".join(out)


def plot(rows: list[dict], path: Path, title: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows if r.get("method") in METHODS))
    if not datasets:
        return None
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.8), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        for m, style in zip(METHODS, ("o-", "s-", "^--")):
            pts = sorted((r["window_bp"], r["accuracy"]) for r in rows if r["dataset"] == ds and r["method"] == m
                         and r.get("status") == "ok")
            if pts:
                ax.plot([x for x, _ in pts], [y for _, y in pts], style, label=LABELS[m])
        chance = sorted((r["window_bp"], r["chance"]) for r in rows if r["dataset"] == ds and r.get("chance"))
        if chance:
            ax.plot([x for x, _ in chance], [y for _, y in chance], color="grey", lw=0.8, ls=":",
                    label="majority class of the test windows")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("context length (bp)")
        ax.set_ylabel("test accuracy")
        ax.set_title(ds)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out", type=Path)
    p.add_argument("--title", default="species accuracy against context length")
    a = p.parse_args(argv)
    rows = load_rows(a.out)
    if not rows:
        print(f"{a.out}: no rows", file=sys.stderr)
        return 1
    scales = sorted({r.get("scale") for r in rows if r.get("scale")})
    devices = sorted({r.get("device") for r in rows if r.get("device")})
    png = plot(rows, a.out / "accuracy_vs_context.png",
               f"{a.title} (recipe {', '.join(scales)}; measured on {', '.join(devices)})")
    text = [f"# Context sweep results ({', '.join(scales)})\n",
            f"Measured on: {', '.join(devices)}. Dates: {min(r.get('date', '') for r in rows)[:10]} to "
            f"{max(r.get('date', '') for r in rows)[:10]}. Cells: test accuracy / macro-F1.\n",
            tables(rows), "## Commands\n", commands(rows), ""]
    if png:
        text.insert(2, f"![accuracy against context]({png.name})\n")
    (a.out / "RESULTS.md").write_text("\n".join(text) + "\n")
    (a.out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(text[:3] if png is None else text[:4]))
    print(f"wrote {a.out / 'RESULTS.md'}, {a.out / 'results.json'}" + (f", {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
