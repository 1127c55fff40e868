"""Tables and plots of experiments/long_context/run.py's rows: chrX bits per base against window, and the species
train-length x test-length accuracy grid beside the k-mer baseline.

  python experiments/long_context/report.py RESULT_DIR [--out RESULT_DIR]
RESULT_DIR holds chrx.jsonl, species.jsonl, species_kmer.jsonl and the *_env.json files (any may be missing);
writes report.md, chrx_bits_vs_window.png and species_accuracy_vs_length.png there.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's mambadna, as run.py


def rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def log2(n: int) -> str:
    return f"2^{int(n).bit_length() - 1}" if n & (n - 1) == 0 else str(n)


def env_line(folder: Path, name: str) -> str:
    path = folder / f"{name}_env.json"
    if not path.is_file():
        return ""
    env = json.loads(path.read_text())
    return (f"{env.get('device')}, {env.get('date')}, torch {env.get('torch')}, triton {env.get('triton')}, "
            f"lightning {env.get('lightning')}, commit {str(env.get('commit'))[:10]}")


def status(row: dict) -> str:
    if row["status"] == "paused":
        return f"paused at step {row['step']} of {row['max_steps']}"
    return row["status"]


def chrx_section(folder: Path) -> tuple[list[str], list[dict]]:
    done = [r for r in rows(folder / "chrx.jsonl") if r.get("status") == "ok"]
    # not results, and no gap either where the window finished in a later call or piece (run.py --pause-after-s)
    finished = {d["window_bp"] for d in done}
    skipped = [r for r in rows(folder / "chrx.jsonl") if r.get("status") != "ok" and r["window_bp"] not in finished]
    lines = ["## Pretraining on human chrX: bits per base against window", "", env_line(folder, "chrx"), ""]
    if not done:
        return lines + ["(no finished run)"], done
    first = done[0]
    lines += [f"Every model scored on the same {first['eval_bp']:,} held-out bases (test split, from "
              f"{first['eval_start']:,}), tiled by its own window.", "",
              "| window | bits/base (held-out) | val bits/base | bases trained | steps | train s |",
              "|---|---|---|---|---|---|"]
    for r in sorted(done, key=lambda r: r["window_bp"]):
        val = f"{r['val_bits']:.3f}" if r.get("val_bits") is not None else "-"
        lines.append(f"| {log2(r['window_bp'])} | {r['bits_per_base']:.4f} | {val} | {r['bases_trained'] / 1e6:.1f} M "
                     f"| {r['steps']} | {r['train_s']} |")
    lines += [f"| {log2(r['window_bp'])} | {status(r)} | | | | |" for r in skipped]
    cross = sorted({int(w) for r in done for w in r.get("bits_at") or {}})
    if cross:  # run.py --eval-windows: each model also scored at other windows, on the same bases
        lines += ["", "The same models scored at other windows (same held-out bases): a model that uses longer context "
                  "than it was trained on scores lower at longer windows.", "",
                  "| trained at \\ scored at | " + " | ".join(log2(w) for w in cross) + " |",
                  "|" + "---|" * (len(cross) + 1)]
        for r in sorted(done, key=lambda r: r["window_bp"]):
            at = r.get("bits_at") or {}
            lines.append(f"| {log2(r['window_bp'])} | "
                         + " | ".join(f"{at[str(w)]:.4f}" if str(w) in at else "" for w in cross) + " |")
    lines += ["", "Commands (each row reruns alone):", ""]
    lines += [f"- {log2(r['window_bp'])}: `{r['command']}`" for r in sorted(done, key=lambda r: r["window_bp"])]
    return lines + variant_lines(folder), done


def variant_rows(folder: Path) -> list[dict]:
    """The finished rows of run.py's chrX variants (--seed, --first-fraction, --tag: chrx_<variant>.jsonl)."""
    return [r for f in sorted(folder.glob("chrx_*.jsonl")) for r in rows(f) if r.get("status") == "ok"]


def variant_lines(folder: Path) -> list[str]:
    """The chrX variants' table beside the recipe's rows, with each row's command."""
    ok = variant_rows(folder)
    if not ok:
        return []
    base = {r["window_bp"]: r["bits_per_base"] for r in rows(folder / "chrx.jsonl") if r.get("status") == "ok"}
    lines = ["", "Variants of the recipe (same data, bases and held-out stretch):", "",
             "| variant | window | bits/base (held-out) | the recipe's row | bases trained | train s |",
             "|---|---|---|---|---|---|"]
    for r in sorted(ok, key=lambda r: (r["variant"], r["window_bp"])):
        recipe = f"{base[r['window_bp']]:.4f}" if r["window_bp"] in base else ""
        lines.append(f"| {r['variant']} | {log2(r['window_bp'])} | {r['bits_per_base']:.4f} | {recipe} | "
                     f"{r['bases_trained'] / 1e6:.1f} M | {r['train_s']} |")
    means = family_means(folder)
    if any(len(v) > 1 for fam in means.values() for v in fam.values()):
        lines += ["", "Means over seeds (a variant and its `seed<k>_` repeats; the recipe with its `seed<k>` ones):", "",
                  "| variant | window | seeds | mean bits/base | min-max |", "|---|---|---|---|---|"]
        for fam, by_window in sorted(means.items()):
            for w, vals in sorted(by_window.items()):
                lines.append(f"| {fam} | {log2(w)} | {len(vals)} | {sum(vals) / len(vals):.4f} | "
                             f"{min(vals):.4f}-{max(vals):.4f} |")
    lines += ["", "Commands:", ""] + [f"- {r['variant']} {log2(r['window_bp'])}: `{r['command']}`" for r in ok]
    return lines


def family(name: str) -> str:
    """A variant's name without its seed: "seed1_mem" and "mem" are one variant, "seed1" is the recipe."""
    return re.sub(r"^seed\d+_?", "", name) or "recipe"


def family_means(folder: Path) -> dict[str, dict[int, list[float]]]:
    """Every variant's (and the recipe's) bits/base by window, one value a seed."""
    out: dict[str, dict[int, list[float]]] = {}
    recipe = [dict(r, variant="recipe") for r in rows(folder / "chrx.jsonl") if r.get("status") == "ok"]
    for r in recipe + variant_rows(folder):
        out.setdefault(family(r["variant"]), {}).setdefault(r["window_bp"], []).append(r["bits_per_base"])
    return out


def first_share(row: dict) -> str:
    """The share of steps at the curriculum's first window, from the row or the run's printed plan."""
    from mambadna.data.datamodules import LONG_WINDOW_BP

    if row["train_bp"] < LONG_WINDOW_BP:  # no automatic curriculum below it
        return "no curriculum"
    if row.get("first_fraction") is not None:
        return f"default ({row['first_fraction']})" if row.get("first_fraction_default") else str(row["first_fraction"])
    return "equal bases" if "first_fraction" not in row else "default (half)"


def start(row: dict) -> str:
    """scratch, or the window of the backbone pretrained on the training strains (run.py --pretrain-window)."""
    if not row.get("pretrained"):
        return "scratch"
    name = Path(row["pretrained"]).parent.name  # pretrain_L<log2>
    return f"pretrained at 2^{name.rsplit('L', 1)[-1]}" if name.startswith("pretrain_L") else "pretrained"


def settings(row: dict) -> str:
    """The run's extra `--set` settings (run.py --set), and the step of the model tested where that was not the
    last one (finetune's final_model=best, from 1e76ef7 on), "-" for neither."""
    tested = (row.get("summary") or {}).get("model_step")
    step = [f"tested step {tested} (best val)"] if tested is not None and tested != row.get("steps") else []
    return " ".join([*(row.get("set") or ()), *step]) or "-"


def variant(row: dict) -> tuple:
    """What a run varied apart from its seed: rows equal here are repeats of one recipe."""
    return (row["train_bp"], start(row), row.get("lr"), first_share(row), tuple(row.get("set") or ()))


def seed_means(ok: list[dict], lengths: list[int]) -> list[str]:
    """Mean (min-max) accuracy of every recipe run with more than one seed."""
    import statistics

    groups: dict[tuple, list[dict]] = {}
    for r in ok:
        groups.setdefault(variant(r), []).append(r)
    repeated = {k: v for k, v in groups.items() if len(v) > 1}
    if not repeated:
        return []
    lines = ["", "Recipes run with several seeds: mean (min-max) accuracy.", "",
             "| trained at | start | first-window share | extra settings | seeds | "
             + " | ".join(log2(n) for n in lengths) + " |", "|" + "---|" * (len(lengths) + 5)]
    for key, runs in sorted(repeated.items(), key=lambda kv: str(kv[0])):
        cells = []
        for n in lengths:
            acc = [r["grid"][str(n)]["accuracy"] for r in runs if str(n) in r["grid"]]
            cells.append(f"{statistics.mean(acc):.3f} ({min(acc):.3f}-{max(acc):.3f})" if acc else "")
        lines.append(f"| {log2(key[0])} | {key[1]} | {key[3]} | {' '.join(key[4]) or '-'} | "
                     f"{sorted(r.get('seed') or 0 for r in runs)} | " + " | ".join(cells) + " |")
    return lines


def own_tests(models: list[dict]) -> list[str]:
    """finetune's own test of every fine-tune (run.py writes it before the grid, so a call cut during the grid keeps
    it): its own draw of windows of the unseen strains, at the training window only."""
    latest = {}
    for r in models:  # a run's "ok" row repeats its "trained" row with the grid added (skipped rows have no test)
        if r.get("own_test"):
            latest[(variant(r), r.get("seed") or 0)] = r
    if not latest:
        return []
    lines = ["", "finetune's own test (its own draw of test windows of the unseen strains, at the training window; "
             "also for runs whose grid was cut):", "",
             "| trained at | start | lr | first-window share | extra settings | seed | windows | accuracy | grid done |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (key, seed), r in sorted(latest.items(), key=lambda kv: (kv[0][0][0], str(kv[0]))):
        t = r["own_test"]
        acc = f"{t['accuracy']:.3f}" if t.get("accuracy") is not None else "-"
        lines.append(f"| {log2(r['train_bp'])} | {key[1]} | {key[2]} | {key[3]} | {settings(r)} | {seed} | "
                     f"{t['windows']} | {acc} | "
                     f"{'yes' if r['status'] == 'ok' else 'no'} |")
    return lines


def species_section(folder: Path) -> tuple[list[str], list[dict], list[dict]]:
    models = [r for f in sorted(folder.glob("species*.jsonl")) for r in rows(f) if r.get("kind") == "model"]
    kmers = [r for f in sorted(folder.glob("species*.jsonl")) for r in rows(f) if r.get("kind") == "kmer"]
    ok = [r for r in models if r.get("status") == "ok"]
    lengths = sorted({int(t) for r in ok for t in r["grid"]} | {r["test_bp"] for r in kmers})
    lines = ["## Species of held-out strains: accuracy against train and test length", "",
             env_line(folder, "species"), ""]
    if kmers:
        counts = kmers[0].get("label_counts", {})
        lines += [f"Test windows a length: {kmers[0]['test_windows']} (the same for every model and the k-mers; "
                  f"labels {counts})", ""]
    head = ("| trained at \\ tested at | " + " | ".join(log2(n) for n in lengths)
            + " | start | lr | first-window share | extra settings | seed | bases trained | steps |")
    lines += [head, "|" + "---|" * (len(lengths) + 8)]
    for r in sorted(ok, key=lambda r: (r["train_bp"], variant(r), r.get("seed") or 0)):
        cells = [f"{r['grid'][str(n)]['accuracy']:.3f}" if str(n) in r["grid"] else "" for n in lengths]
        lines.append(f"| Mamba {log2(r['train_bp'])} | " + " | ".join(cells)
                     + f" | {start(r)} | {r.get('lr', '')} | {first_share(r)} | {settings(r)} | {r.get('seed') or 0} | "
                     f"{r['bases_trained'] / 1e6:.1f} M | {r['steps']} |")
    kmer_at = {r["test_bp"]: r for r in kmers}
    lines.append("| k-mer 4..6 + logistic regression (fitted at the test length) | "
                 + " | ".join(f"{kmer_at[n]['accuracy']:.3f}" if n in kmer_at else "" for n in lengths) + " | | | | | | | |")
    lines += [f"| Mamba {log2(r['train_bp'])} | {r['status']} |" for r in models
              if r.get("status") not in ("ok", "trained")]
    lines += seed_means(ok, lengths)
    lines += own_tests(models)
    lines += ["", "Commands:", ""] + [f"- {log2(r['train_bp'])}: `{r['command']}`" for r in ok]
    return lines, ok, kmers


def plots(folder: Path, chrx: list[dict], species: list[dict], kmers: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if chrx:
        # a line through each variant's means over seeds where it has three windows or more, every seed a point
        means = family_means(folder)
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, (name, by_window) in enumerate(sorted(means.items(), key=lambda kv: (kv[0] != "recipe", kv[0]))):
            color = f"C{i % 10}"
            ws = sorted(by_window)
            seeds = max(len(v) for v in by_window.values())
            label = name + (f" (mean of up to {seeds} seeds)" if seeds > 1 else "")
            if len(ws) >= 3:
                ax.plot(ws, [sum(by_window[w]) / len(by_window[w]) for w in ws], "-", color=color, label=label)
                label = None
            xs = [w for w in ws for _ in by_window[w]]
            ax.plot(xs, [v for w in ws for v in by_window[w]], "o" if name == "recipe" else "s", color=color,
                    markersize=4, alpha=0.8, label=label)
        if len(means) > 1:
            ax.legend(fontsize=7)
        ax.set_xscale("log", base=2)
        ax.set(xlabel="training (and scoring) window, bases", ylabel="held-out bits per base",
               title="human chrX: same model, same bases")
        fig.tight_layout()
        fig.savefig(folder / "chrx_bits_vs_window.png", dpi=120)
        plt.close(fig)
    if species or kmers:
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in sorted(species, key=lambda r: r["train_bp"]):
            xs = sorted(int(t) for t in r["grid"])
            ax.plot(xs, [r["grid"][str(x)]["accuracy"] for x in xs], "o-",
                    label=f"Mamba trained at {log2(r['train_bp'])}, {start(r)}, lr {r.get('lr')}, "
                          f"first {first_share(r)}")
        if kmers:
            kmers = sorted(kmers, key=lambda r: r["test_bp"])
            ax.plot([r["test_bp"] for r in kmers], [r["accuracy"] for r in kmers], "k--s", label="k-mer 4..6 + LR")
        ax.set_xscale("log", base=2)
        ax.set(xlabel="test window, bases", ylabel="accuracy on held-out strains", ylim=(0, 1.02),
               title="species of unseen strains")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "species_accuracy_vs_length.png", dpi=120)
        plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    chrx_lines, chrx = chrx_section(args.folder)
    species_lines, species, kmers = species_section(args.folder)
    sections = []  # only the experiments the folder holds rows of (a CPU folder may hold one of the two)
    if (args.folder / "chrx.jsonl").is_file():
        sections += chrx_lines + [""]
    if any(args.folder.glob("species*.jsonl")):
        sections += species_lines
    (args.folder / "report.md").write_text("\n".join(sections) + "\n")
    plots(args.folder, chrx, species, kmers)
    print((args.folder / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
