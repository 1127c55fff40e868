"""How much a window of context can tell about the next base, without a neural network: an order-k Markov model
fitted on the training split, and the same with a repeat matcher that copies the base after the longest recent
repeat inside the window. Scored exactly as run.py scores the LMs: the same held-out bases, tiled by the window,
each base seeing only the bases of its own window before it.

  python experiments/long_context/context_baseline.py --data .lcdata/chrX/chrX.fa.gz --out DIR [--lm-rows DIR]

The Markov part reads at most k bases, so it moves with the window only through the first k bases of each window.
What the matcher adds is what exact repeats inside the window are worth: the part of the chrX target ("bits/base
lower at every doubling") that copying alone reaches. Its main form is adaptive: the guess of each repeat gets the
hit rate of its bucket (repeat length x bin of the Markov probability of the guessed base) so far in the same
window, started from that bucket's rate on a validation stretch of the same length, so nothing is fitted on the
scored bases. Two fixed-weight forms stand beside it: weights fitted on the validation stretch, and weights fitted on
the scored stretch itself (the most fixed weights could add).

Glossary: s, the genome as codes 0..3 (A, C, G, T; 4 for N and every other letter); t, a target position; ws,
the start of t's window, so t sees s[ws:t]; a k-mer "ends at t" when it is s[t-k:t].
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's mambadna, as run.py

NBASE = 4  # codes 0..3; 4 is N (never scored, breaks every k-mer it falls in)
MATCH_LENGTHS = (12, 16, 20, 24, 28)  # repeat lengths the matcher looks for, shortest first (at most 31: int64)
# the matcher's weight also depends on how likely the Markov model already finds the repeat's next base
AGREE_EDGES = (0.3, 0.6, 0.9)
KAPPAS = (1.0, 4.0, 16.0, 64.0, 256.0)  # the adaptive copier's prior weight, in tries (chosen on validation)


def codes_of(seq: bytes) -> np.ndarray:
    """FASTA letters -> uint8 codes, lowercase as uppercase, every letter but ACGT as N (4)."""
    table = np.full(256, 4, dtype=np.uint8)
    for i, ch in enumerate(b"ACGT"):
        table[ch] = table[ch + 32] = i
    return table[np.frombuffer(seq, dtype=np.uint8)]


def kmer_codes(s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(code, ok) of the k-mer ending at every t in [0, len(s)] (t < k: not ok); ok is False where it holds an N."""
    n = len(s)
    code = np.zeros(n + 1, dtype=np.int64)
    ok = np.zeros(n + 1, dtype=bool)
    if n < k:
        return code, ok
    base = np.where(s < NBASE, s, 0).astype(np.int64)
    acc = np.zeros(n - k + 1, dtype=np.int64)
    for j in range(k):  # the k-mer s[t-k:t] as a base-4 number, first base most significant
        acc = acc * NBASE + base[j:n - k + 1 + j]
    code[k:] = acc
    is_n = np.concatenate([[0], np.cumsum(s >= NBASE)])  # N's before each position
    ok[k:] = (is_n[k:] - is_n[:n - k + 1]) == 0
    return code, ok


class Markov:
    """Next-base probabilities from counts on the training bases, each order interpolated with the one below it:
    P_k(x | c) = (n(c, x) + beta * P_{k-1}(x | c')) / (n(c) + beta), c' the context c without its first base, P_0
    the base frequencies (add-one). The counts are taken once up to `max_order`; order and beta are chosen later."""

    def __init__(self, train: np.ndarray, max_order: int, order: int | None = None, beta: float = 2.0):
        self.order, self.beta = max_order if order is None else order, beta
        self.counts = []  # counts[k]: (4^k, 4) of (context, next base)
        for k in range(max_order + 1):
            code, ok = kmer_codes(train, k + 1)  # the (k + 1)-mer ending after the target: context + target
            self.counts.append(np.bincount(code[ok], minlength=NBASE ** (k + 1)).reshape(NBASE ** k, NBASE)
                               .astype(np.float32))

    def probs(self, s: np.ndarray, targets: np.ndarray, ws: np.ndarray) -> np.ndarray:
        """(len(targets), 4) probabilities of s[t] for each target t, from at most `order` bases of s[ws:t]."""
        c0 = self.counts[0][0]
        p = np.broadcast_to((c0 + 1) / (c0.sum() + NBASE), (len(targets), NBASE)).astype(np.float64)
        code = np.zeros(len(targets), dtype=np.int64)
        use = np.ones(len(targets), dtype=bool)
        for k in range(1, self.order + 1):  # the context one base longer: s[t-k] joins as the leading digit
            first = s[np.maximum(targets - k, 0)].astype(np.int64)
            use &= (targets - k >= ws) & (first < NBASE)
            code += np.where(first < NBASE, first, 0) << (2 * (k - 1))
            rows = self.counts[k][code[use]].astype(np.float64)  # (m, 4)
            p = p.copy()
            p[use] = (rows + self.beta * p[use]) / (rows.sum(axis=1, keepdims=True) + self.beta)
        return p


def previous_match(s: np.ndarray, k: int) -> np.ndarray:
    """prev[t]: the latest q < t whose k-mer equals the one ending at t (both free of N), else -1."""
    code, ok = kmer_codes(s, k)
    pos = np.flatnonzero(ok)
    order = np.argsort(code[pos], kind="stable")  # equal k-mers together, in position order
    sc, sp = code[pos][order], pos[order]
    prev = np.full(len(s) + 1, -1, dtype=np.int64)
    same = sc[1:] == sc[:-1]
    prev[sp[1:][same]] = sp[:-1][same]
    return prev


def match_features(s: np.ndarray, targets: np.ndarray, ws: np.ndarray, prevs: dict) -> tuple[np.ndarray, np.ndarray]:
    """(length, guess) per target: length j+1 where the longest repeat inside the window is MATCH_LENGTHS[j] long
    (0: none), guess the base that followed that repeat's last occurrence (-1: none)."""
    length = np.zeros(len(targets), dtype=np.int64)
    guess = np.full(len(targets), -1, dtype=np.int64)
    for j, k in enumerate(MATCH_LENGTHS):
        q = prevs[k][targets]
        use = (q >= 0) & (q - k >= ws)  # the earlier copy lies wholly inside t's window
        use[use] &= s[q[use]] < NBASE
        length[use] = j + 1  # longer lengths come later and win
        guess[use] = s[q[use]]
    return length, guess


def buckets(p_markov: np.ndarray, length: np.ndarray, guess: np.ndarray) -> np.ndarray:
    """0 without a repeat, else one bucket per (repeat length, bin of the Markov probability of its guess)."""
    agree = np.digitize(p_markov[np.arange(len(guess)), np.maximum(guess, 0)], AGREE_EDGES)
    return np.where(length > 0, (length - 1) * (len(AGREE_EDGES) + 1) + agree + 1, 0)


def mixed_bits(p_markov: np.ndarray, x: np.ndarray, bucket: np.ndarray, guess: np.ndarray, weights) -> np.ndarray:
    """Bits of each target under (1 - w) * Markov + w * [x == guess], w = weights[bucket] (weights[0] = 0)."""
    p = p_markov[np.arange(len(x)), x]
    w = np.asarray(weights, dtype=np.float64)[bucket]
    return -np.log2((1 - w) * p + w * (guess == x))


def fit_weights(p_markov, x, bucket, guess) -> list[float]:
    """Per bucket, the copy weight that minimises the bits of the targets in it (convex in w)."""
    from scipy.optimize import minimize_scalar

    weights = [0.0]
    p = p_markov[np.arange(len(x)), x]
    for j in range(1, len(MATCH_LENGTHS) * (len(AGREE_EDGES) + 1) + 1):
        m = bucket == j
        if not m.any():
            weights.append(0.0)
            continue
        pm, hit = p[m], (guess[m] == x[m]).astype(np.float64)
        res = minimize_scalar(lambda w: -np.log2((1 - w) * pm + w * hit).sum(), bounds=(0.0, 1 - 1e-6),
                              method="bounded", options={"xatol": 1e-5})
        weights.append(float(res.x))
    return weights


def adaptive_bits(p_markov, x, bucket, guess, ws, prior, kappa: float) -> np.ndarray:
    """Bits of each target where the repeat's guess gets the hit rate of its bucket so far in the same window,
    (hits + kappa * prior) / (tries + kappa), and the other bases share the rest as the Markov model does; targets
    without a repeat keep the Markov probability. So the copier learns, from its own window only, how far to trust
    the repeats it finds there (the priors, a bucket's hit rate on the validation stretch, start it off)."""
    rows = np.arange(len(x))
    bits = -np.log2(p_markov[rows, x])
    idx = np.flatnonzero(bucket > 0)  # in position order
    if not len(idx):
        return bits
    order = np.lexsort((idx, bucket[idx], ws[idx]))  # by window, then bucket, then position
    j = idx[order]
    hit = (guess[j] == x[j]).astype(np.float64)
    new = np.ones(len(j), dtype=bool)
    new[1:] = (ws[j][1:] != ws[j][:-1]) | (bucket[j][1:] != bucket[j][:-1])
    first = np.maximum.accumulate(np.where(new, np.arange(len(j)), 0))  # each group's first index
    before = np.cumsum(hit) - hit
    hits = before - before[first]
    tries = np.arange(len(j)) - first
    ph = np.clip((hits + kappa * np.asarray(prior)[bucket[j]]) / (tries + kappa), 1e-6, 1 - 1e-6)
    p_guess = np.minimum(p_markov[j, guess[j]], 1 - 1e-9)
    p = np.where(hit > 0, ph, (1 - ph) * p_markov[j, x[j]] / (1 - p_guess))
    bits[j] = -np.log2(p)
    return bits


def bucket_rates(x, bucket, guess) -> np.ndarray:
    """Each bucket's share of targets whose repeat guessed right (0.5 where a bucket is empty)."""
    n = len(MATCH_LENGTHS) * (len(AGREE_EDGES) + 1) + 1
    tries = np.bincount(bucket, minlength=n)
    hits = np.bincount(bucket, weights=(guess == x).astype(np.float64), minlength=n)
    return np.where(tries > 0, hits / np.maximum(tries, 1), 0.5)


def stretch_targets(s: np.ndarray, lo: int, length: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """The targets run.py scores over [lo, lo + length) tiled by `window` (window i covers s[lo + i*window :] and
    predicts the next `window` bases), N targets dropped: (targets, their window starts)."""
    t = np.arange(lo + 1, lo + length + 1, dtype=np.int64)
    ws = lo + ((t - 1 - lo) // window) * window
    keep = s[t] < NBASE
    return t[keep], ws[keep]


def evaluate(s, markov: Markov, fit_lo: int, test_lo: int, length: int, windows) -> list[dict]:
    """One row a window on the test stretch: Markov alone; with the repeats, adaptive (its priors and kappa from the
    fit stretch); with fixed weights fitted on the fit stretch; and with weights fitted on the test stretch itself,
    what fixed weights could add at best."""
    lo, hi = min(fit_lo, test_lo), max(fit_lo, test_lo) + length + 1
    local = s[lo:hi]  # both stretches: repeats are searched inside windows only, so nothing else is needed
    prevs = {k: previous_match(local, k) for k in MATCH_LENGTHS}
    out = []
    for window in windows:
        feats = {}
        for name, start in (("fit", fit_lo - lo), ("test", test_lo - lo)):
            t, ws = stretch_targets(local, start, length, window)
            repeat, guess = match_features(local, t, ws, prevs)
            p = markov.probs(local, t, ws)
            feats[name] = (p, local[t].astype(np.int64), buckets(p, repeat, guess), guess, repeat, ws)
        weights = fit_weights(*feats["fit"][:4])
        fp, fx, fbucket, fguess, _, fws = feats["fit"]
        prior = bucket_rates(fx, fbucket, fguess)
        kappa = min(KAPPAS, key=lambda k: adaptive_bits(fp, fx, fbucket, fguess, fws, prior, k).mean())
        p, x, bucket, guess, repeat, ws = feats["test"]
        markov_bits = mixed_bits(p, x, bucket, guess, [0.0] * len(weights))
        bits = adaptive_bits(p, x, bucket, guess, ws, prior, kappa)
        fixed = mixed_bits(p, x, bucket, guess, weights)
        # the same weights fitted on the scored stretch itself: what the matcher could add at best
        best = mixed_bits(p, x, bucket, guess, fit_weights(p, x, bucket, guess))
        matched = repeat > 0
        out.append({"window_bp": int(window), "scored_bases": int(len(x)),
                    "markov_bits": float(markov_bits.mean()), "bits_per_base": float(bits.mean()),
                    "bits_fixed_weights": float(fixed.mean()), "bits_fitted_on_scored": float(best.mean()),
                    "kappa": kappa,
                    "matched_share": float(matched.mean()),
                    "long_match_share": float((repeat >= MATCH_LENGTHS.index(24) + 1).mean()),
                    "guess_right_share": float((guess[matched] == x[matched]).mean()) if matched.any() else None,
                    "weights": weights[1:]})
    return out


def shared_kmers(train: np.ndarray, held: np.ndarray, k: int = 31) -> float:
    """The share of the held-out stretch's k-mers (free of N) that occur anywhere in the training split: repeats
    shared with the training bases, which a model (or the Markov table) can learn, as opposed to copies inside a
    window."""
    code, ok = kmer_codes(train, k)
    seen = np.unique(code[ok])
    del code, ok
    hcode, hok = kmer_codes(held, k)
    return float(np.isin(hcode[hok], seen).mean())


def lm_means(folder: Path) -> dict[str, dict[int, float]]:
    """{family: {window: mean bits over seeds}} of run.py's finished chrX rows in a result folder (report.py's
    families), for the families measured at three windows or more."""
    from experiments.long_context.report import family_means

    return {name: {w: float(np.mean(v)) for w, v in by_window.items()}
            for name, by_window in family_means(folder).items() if len(by_window) >= 3}


def plot(rows: list[dict], lm: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    w = [r["window_bp"] for r in rows]
    ax.plot(w, [r["markov_bits"] for r in rows], "o-", color="0.5", label="order-k Markov (training counts)")
    ax.plot(w, [r["bits_per_base"] for r in rows], "o-", color="k", label="Markov + repeats inside the window "
            "(adaptive)")
    for i, (name, means) in enumerate(lm.items()):
        ws = sorted(means)
        ax.plot(ws, [means[x] for x in ws], "s--", color=f"C{i}", label=f"Mamba: {name}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("window (bases of context)")
    ax.set_ylabel("bits per base, held-out")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the genome run.py chrx trained on (its longest contig is used)")
    ap.add_argument("--out", required=True, help="folder for baseline.json, baseline.md and the plot")
    ap.add_argument("--windows", default="10,11,12,13,14,15,16,17,18,19,20", help="log2 windows, comma-separated")
    ap.add_argument("--eval-bp", type=int, default=2**22, help="held-out bases (run.py's gpu scale: 2^22)")
    ap.add_argument("--order", type=int, default=None, help="Markov order (default: the best on validation)")
    ap.add_argument("--lm-rows", help="a run.py result folder whose chrX means join the plot")
    args = ap.parse_args(argv)

    from mambadna.data.genome import Genome
    from mambadna.data.regions import split_regions
    from mambadna.data.errors import DataError

    t0 = time.time()
    try:
        g = Genome(args.data)
    except DataError as e:
        raise SystemExit(f"context_baseline.py: {e}") from None
    contig = max(g.contigs, key=g.contigs.get)
    s = codes_of(g.fetch(contig, 0, g.contigs[contig]))
    parts = {k: max((iv for iv in v if iv.contig == contig), key=lambda iv: iv.length_bp)
             for k, v in split_regions({contig: g.contigs[contig]}).items()}
    for name in ("val", "test"):
        if parts[name].length_bp < args.eval_bp + 1:
            raise SystemExit(f"{args.data}: the {name} block ({parts[name].length_bp} bp) is shorter than "
                             f"--eval-bp {args.eval_bp} + 1")
    train = s[parts["train"].start_bp:parts["train"].end_bp]
    windows = [2**int(x) for x in args.windows.split(",")]
    fit_lo, test_lo = parts["val"].start_bp, parts["test"].start_bp  # test_lo: run.py's held_out_stretch
    print(f"{contig}: {len(s):,} bp; train {len(train):,}; fit on {fit_lo:,}+{args.eval_bp:,}, "
          f"score {test_lo:,}+{args.eval_bp:,}", flush=True)

    # order and smoothing: the lowest bits on the validation stretch at the longest window
    choices = []
    orders = [args.order] if args.order else list(range(8, 14))
    markov = Markov(train, max(orders))
    t, ws = stretch_targets(s, fit_lo, args.eval_bp, max(windows))
    for order in orders:
        for beta in (1.0, 4.0, 16.0, 64.0, 256.0):
            markov.order, markov.beta = order, beta
            p = markov.probs(s, t, ws)
            bits = float(-np.log2(p[np.arange(len(t)), s[t]]).mean())
            choices.append({"order": order, "beta": beta, "val_bits": bits})
            print(f"  Markov order {order}, beta {beta}: {bits:.4f} bits/base on validation", flush=True)
    best = min(choices, key=lambda c: c["val_bits"])
    markov.order, markov.beta = best["order"], best["beta"]
    rows = evaluate(s, markov, fit_lo, test_lo, args.eval_bp, windows)
    shared = shared_kmers(train, s[test_lo:test_lo + args.eval_bp + 1])
    print(f"held-out 31-mers found in the training split: {shared:.4f}", flush=True)
    for r in rows:
        print(json.dumps({k: v for k, v in r.items() if k != "weights"}), flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lm = lm_means(Path(args.lm_rows)) if args.lm_rows else {}
    meta = {"genome": args.data, "contig": contig, "contig_bp": len(s), "train_bp": len(train),
            "fit_start": fit_lo, "test_start": test_lo, "eval_bp": args.eval_bp, "markov": best,
            "markov_choices": choices, "match_lengths": MATCH_LENGTHS, "agree_edges": AGREE_EDGES,
            "held_out_31mers_in_train": shared, "seconds": round(time.time() - t0, 1),
            "command": "python experiments/long_context/context_baseline.py " + " ".join(sys.argv[1:] if argv is None
                                                                                         else argv)}
    (out / "baseline.json").write_text(json.dumps({"meta": meta, "rows": rows, "lm_means": {
        k: {str(w): v for w, v in m.items()} for k, m in lm.items()}}, indent=1) + "\n")
    lines = ["| window | Markov bits/base | + repeats, adaptive | gain over Markov | + repeats, fixed weights | "
             "+ repeats, weights fitted on the scored bases | targets with a repeat | with one >= 24 bases | "
             "repeat's next base right |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        right = f"{r['guess_right_share']:.3f}" if r["guess_right_share"] is not None else "-"
        lines.append(f"| 2^{int(math.log2(r['window_bp']))} | {r['markov_bits']:.4f} | {r['bits_per_base']:.4f} | "
                     f"{r['markov_bits'] - r['bits_per_base']:.4f} | {r['bits_fixed_weights']:.4f} | "
                     f"{r['bits_fitted_on_scored']:.4f} | "
                     f"{r['matched_share']:.4f} | "
                     f"{r['long_match_share']:.4f} | {right} |")
    (out / "baseline.md").write_text("\n".join([f"`{meta['command']}`", "",
                                                f"Markov order {best['order']}, beta {best['beta']} (validation); "
                                                f"{args.eval_bp:,} held-out bases from {test_lo:,}; {shared:.1%} of "
                                                f"their 31-mers occur in the training split.", ""] + lines)
                                     + "\n")
    plot(rows, lm, out / "baseline_bits_vs_window.png",
         f"{Path(args.data).name}: {args.eval_bp:,} held-out bases, tiled by each window")
    print(f"wrote {out} in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
