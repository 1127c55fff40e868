"""experiments/long_context/context_baseline.py: the k-mers, repeat search and Markov model against slow loops, and
the whole script on a genome whose repeats lie 3,000 bases apart (windows shorter than that cannot copy them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from experiments.long_context import context_baseline as cb  # noqa: E402


def test_kmer_codes_and_previous_match_against_loops():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 3, 400).astype(np.uint8)  # three letters: many repeats of short k-mers
    s[[50, 51, 200]] = 4  # N's break the k-mers that hold them
    for k in (0, 1, 3, 5):
        code, ok = cb.kmer_codes(s, k)
        for t in range(len(s) + 1):
            window = s[t - k:t] if t >= k else None
            assert ok[t] == (window is not None and bool((window < 4).all())), (k, t)
            if ok[t] and k:
                assert code[t] == int("".join(map(str, window)), 4), (k, t)
        if k == 0:
            continue
        prev = cb.previous_match(s, k)
        for t in range(len(s) + 1):
            want = -1
            if ok[t]:
                want = max((q for q in range(t) if ok[q] and code[q] == code[t]), default=-1)
            assert prev[t] == want, (k, t)


def test_markov_probabilities_use_only_the_window():
    rng = np.random.default_rng(1)
    train = rng.integers(0, 4, 5000).astype(np.uint8)
    s = rng.integers(0, 4, 300).astype(np.uint8)
    m = cb.Markov(train, max_order=3, beta=2.0)
    t, ws = cb.stretch_targets(s, 10, 256, 64)
    p = m.probs(s, t, ws)
    assert p.shape == (len(t), 4) and np.allclose(p.sum(axis=1), 1.0)
    first = t - ws == 1  # one base of context: order 1 at most, whatever precedes the window
    s2 = s.copy()
    s2[ws[first] - 1] = (s2[ws[first] - 1] + 1) % 4  # change the bases just before each window
    assert np.allclose(m.probs(s2, t, ws)[first], p[first])
    # order 3 from the counts by hand, for one target deep inside a window
    i = int(np.flatnonzero(t - ws > 5)[0])
    ctx = s[t[i] - 3:t[i]]
    c = np.zeros(4)
    for q in range(3, len(train)):
        if (train[q - 3:q] == ctx).all():
            c[train[q]] += 1
    p2 = m.probs(s, t[i:i + 1], np.array([t[i] - 2]))[0]  # two bases of context: order 2
    assert np.allclose(p[i], (c + 2.0 * p2) / (c.sum() + 2.0))


def repeats_genome(n: int, gap: int, seed: int = 0) -> np.ndarray:
    """Random bases where every block of 500 repeats the block `gap` bases before it, with 2% of bases changed."""
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 4, n).astype(np.uint8)
    for lo in range(gap, n - 500, 2 * gap):
        copy = s[lo - gap:lo - gap + 500].copy()
        flip = rng.random(500) < 0.02
        copy[flip] = rng.integers(0, 4, int(flip.sum()))
        s[lo:lo + 500] = copy
    return s


def test_repeats_help_only_windows_that_reach_them(tmp_path):
    s = repeats_genome(200_000, gap=3000)
    fasta = tmp_path / "g.fa"
    fasta.write_text(">chr\n" + "".join("ACGT"[c] for c in s) + "\n")
    out = tmp_path / "out"
    cb.main(["--data", str(fasta), "--out", str(out), "--windows", "10,11,12,13", "--eval-bp", "16384",
             "--order", "4"])
    rows = {r["window_bp"]: r for r in json.loads((out / "baseline.json").read_text())["rows"]}
    assert (out / "baseline_bits_vs_window.png").stat().st_size > 0 and "| 2^12 |" in (out / "baseline.md").read_text()
    # a twelfth of the bases are copies; windows of 1 and 2 kb hold none of their sources (only chance 12-mers),
    # 4 kb about a quarter of them, 8 kb about 60%
    assert rows[1024]["matched_share"] < 0.002 and rows[2048]["matched_share"] < 0.002
    assert 0.01 < rows[4096]["matched_share"] < rows[8192]["matched_share"] < 500 / 6000
    assert rows[8192]["guess_right_share"] > 0.9
    # random bases: the Markov model stays near 2 bits at every window; the copies take the long windows below it
    assert all(abs(r["markov_bits"] - 2.0) < 0.02 for r in rows.values())
    assert rows[1024]["bits_per_base"] > rows[8192]["markov_bits"] - 0.01
    assert rows[8192]["bits_per_base"] < rows[4096]["bits_per_base"] < rows[1024]["bits_per_base"] - 0.02
    # weights fitted on the scored bases can only do better than none (w = 0 is among them)
    assert all(r["bits_fitted_on_scored"] <= r["markov_bits"] + 1e-9 for r in rows.values())


def test_adaptive_copier_counts_hits_inside_each_window_only():
    rng = np.random.default_rng(2)
    n = 400
    p = rng.dirichlet(np.ones(4), n)
    x = rng.integers(0, 4, n)
    ws = (np.arange(n) // 64) * 64
    bucket = rng.integers(0, 3, n)
    bucket[(ws // 64) % 2 == 0] %= 2  # windows with one bucket only: the next window's first group is the same bucket
    guess = np.where(bucket > 0, np.where(rng.random(n) < 0.7, x, rng.integers(0, 4, n)), -1)
    prior, kappa = np.array([0.5, 0.6, 0.8]), 4.0
    got = cb.adaptive_bits(p, x, bucket, guess, ws, prior, kappa)
    for i in range(n):
        if bucket[i] == 0:
            want = p[i, x[i]]
        else:
            seen = [k for k in range(i) if ws[k] == ws[i] and bucket[k] == bucket[i]]
            ph = (sum(guess[k] == x[k] for k in seen) + kappa * prior[bucket[i]]) / (len(seen) + kappa)
            want = ph if guess[i] == x[i] else (1 - ph) * p[i, x[i]] / (1 - p[i, guess[i]])
        assert np.isclose(got[i], -np.log2(want)), i


def test_a_missing_genome_is_one_line(tmp_path):
    with pytest.raises(SystemExit) as e:
        cb.main(["--data", str(tmp_path / "none.fa"), "--out", str(tmp_path / "out")])
    assert str(e.value) == f"context_baseline.py: {tmp_path / 'none.fa'}: no such file"
