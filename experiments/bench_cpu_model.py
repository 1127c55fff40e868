"""CPU cost of one forward+backward of a small MambaLM versus sequence length, per scan backend.

Model: 2 layers, d_model 128, vocab 16, batch 2, torch.set_num_threads(2). The chunked scan is timed at
l = 1024..8192 (it should grow linearly); the sequential reference scan at l = 4096 in the same run.
Writes the table to experiments/results/bench_cpu_model.txt.

    python experiments/bench_cpu_model.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mambadna.config import MambaConfig
from mambadna.model import MambaLM

RESULTS = Path(__file__).resolve().parent / "results" / "bench_cpu_model.txt"
PRESSURE = Path("/proc/pressure/cpu")


def cpu_pressure() -> str:
    """Linux PSI 'some avg60': the share of time runnable tasks waited for a CPU. Other processes on the machine
    inflate timings (OpenMP threads spin when oversubscribed), so the table records it."""
    if not PRESSURE.is_file():
        return "n/a"
    return PRESSURE.read_text().split()[2].split("=")[1] + "%"


def fwd_bwd_seconds(model: MambaLM, ids: torch.Tensor) -> float:
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    logits = model(ids[:, :-1])  # (b, l, V)
    loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    return time.perf_counter() - start


def time_fwd_bwd(model: MambaLM, ids: torch.Tensor, repeats: int) -> list[float]:
    """Seconds for forward + cross-entropy + backward. A short warm-up call (first-call overheads) is discarded;
    it is short so that the slow sequential backend is not run twice at full length."""
    fwd_bwd_seconds(model, ids[:, : min(257, ids.shape[1])])
    return [fwd_bwd_seconds(model, ids) for _ in range(repeats)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--ref-length", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the table goes")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny lengths, one repeat (CI)")
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        args.repeats, args.lengths, args.ref_length, args.threads = 1, [300], 300, 1

    torch.set_num_threads(args.threads)
    runs = [("chunked", l, args.repeats) for l in args.lengths] + [("ref", args.ref_length, 1)]
    rows = []
    for backend, l, repeats in runs:
        torch.manual_seed(0)
        model = MambaLM(MambaConfig(d_model=128, n_layer=2, vocab_size=16, scan_backend=backend))
        ids = torch.randint(5, 9, (2, l + 1))  # l positions of input, targets shifted by one
        times = time_fwd_bwd(model, ids, repeats)
        rows.append((backend, l, statistics.median(times), min(times), len(times), cpu_pressure()))
        print(f"{backend:8s} l={l:5d}  median {rows[-1][2]:.3f} s  min {rows[-1][3]:.3f} s", flush=True)

    n_params = sum(p.numel() for p in model.parameters())
    lines = [
        "# One forward+backward (cross-entropy) of MambaLM: 2 layers, d_model 128, vocab 16, batch 2",
        f"# {n_params} parameters; torch {torch.__version__}; {torch.get_num_threads()} threads; "
        f"{platform.processor() or platform.machine()}; a short warm-up call discarded per row",
        "# cpu_wait_60s: /proc/pressure/cpu 'some avg60' after the row (load from other processes; 0% = quiet)",
        f"{'backend':8s} {'l':>6s} {'median_s':>9s} {'min_s':>7s} {'runs':>4s} {'min_ms_per_kbp':>14s} {'cpu_wait_60s':>12s}",
    ]
    for backend, l, med, best, n, pressure in rows:
        per_kbp = 1000 * best / (l / 1024)  # from the minimum: the least disturbed by other processes
        lines.append(f"{backend:8s} {l:6d} {med:9.3f} {best:7.3f} {n:4d} {per_kbp:14.1f} {pressure:>12s}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
