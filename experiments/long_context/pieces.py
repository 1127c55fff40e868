"""chrX runs in pieces (issue 19): a run longer than one GPU call stops with a checkpoint and the next call continues
it with the package's resume, so no result depends on one long job.

  run.py chrx ... --pause-after-s 500     a run still training 500 s after run.py started stops after the optimizer
                                          step in progress with a checkpoint; its row says "paused"
  run.py chrx ... (the same arguments)    continues the paused run in --out to the same train.max_steps, then scores
  python experiments/long_context/pieces.py pack WORK OUT     every paused run folder of WORK as OUT/piece_<name>.tgz
  python experiments/long_context/pieces.py unpack DIR WORK   every *.tgz of DIR into WORK

The stop is the package's own: SIGTERM to this process, which mambadna/tasks/interrupts.py turns into a checkpoint
after the current step and `Interrupted`. A run folder's pieces.json lists its pieces (steps, seconds, bases, card):
the package's summary counts the bases and seconds of the last piece only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tarfile
import threading
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mambadna import run_config as rc  # noqa: E402

PIECES = "pieces.json"
MAX_PIECE_BYTES = 16 * 2**20  # the most the device tool copies back a file


class PauseTimer:
    """From `when` (time.time()) on, SIGTERM to this process once training runs. Only GracefulInterrupt's handler
    turns SIGTERM into a checkpoint: before training starts (setup) or after it ends (saving the model) the signal
    would end the process or stop Lightning without one, so the timer waits for that handler. `fired` says the stop
    was the timer's, not a scheduler's."""

    def __init__(self, when: float | None):
        self.when, self.fired = when, False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        from mambadna.tasks.interrupts import GracefulInterrupt

        if self._done.wait(max(0.0, self.when - time.time())):
            return
        # 10 ms: a CPU smoke run's first step is longer, so a pause that is already due stops it at step 1
        while not self._done.wait(0.01):
            if isinstance(getattr(signal.getsignal(signal.SIGTERM), "__self__", None), GracefulInterrupt):
                self.fired = True
                os.kill(os.getpid(), signal.SIGTERM)
                return

    def __enter__(self) -> PauseTimer:
        if self.when is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()


def resume_step(folder: Path) -> int | None:
    """The step the run in `folder` continues from: its newest checkpoint's; None when it has none or it finished."""
    from mambadna.tasks.checkpoints import step_checkpoints

    steps = step_checkpoints(folder / "checkpoints")
    return steps[-1][0] if steps and not (folder / "summary.json").is_file() else None


def read_pieces(folder: Path) -> list[dict]:
    path = folder / PIECES
    return json.loads(path.read_text()) if path.is_file() else []


def check_same_settings(folder: Path, cfg: rc.PretrainConfig) -> None:
    """A piece trains with the first piece's settings exactly (the package's resume would take most changes and
    only say so); the run folder and the invocation's own settings aside."""
    from mambadna.settings import changed_settings

    saved = rc.load_config(folder / "run_config.json")
    ignored = {"out_dir", *rc.transient_keys(rc.PretrainConfig)}
    changes = [f"{k} {a} -> {b}" for k, a, b in changed_settings(saved, cfg) if k not in ignored]
    if changes:
        raise SystemExit(f"{folder}: the paused run there was started with other settings ({'; '.join(changes[:4])}); "
                         "continue it with the first piece's run.py arguments, or move the folder away to start afresh")


def bases_per_step(cfg: rc.PretrainConfig) -> int:
    # every stage of the length curriculum trains the final stage's bases a step (length_curriculum)
    return cfg.data.window_bp * cfg.data.batch_size * cfg.train.accumulate_grad_batches


def train(folder: Path, overrides: list[str], pause_at: float | None) -> tuple[dict | None, dict]:
    """Pretrain the run of `overrides` in `folder`: afresh, or continuing the paused run there. Returns (its summary,
    the row's bases_trained, train_s and, for a run in pieces, its pieces), or (None, the paused row's fields) when
    `pause_at` came first."""
    import torch

    from mambadna.commands import pretrain
    from mambadna.commands.run_dir import holds_run
    from mambadna.files import release_folder
    from mambadna.tasks.interrupts import Interrupted

    cfg = rc.apply_overrides(rc.PretrainConfig(), overrides)
    start = resume_step(folder)
    done = read_pieces(folder)
    if start is not None:
        check_same_settings(folder, cfg)
        print(f"{folder.name}: continuing the paused run from step {start} of {cfg.train.max_steps}", flush=True)
        cfg = replace(cfg, resume=True)
        last = done[-1]["to_step"] if done else 0
        if last != start:  # cut by something else than a pause: that piece's time is unknown
            done.append({"from_step": last, "to_step": start, "train_s": None,
                         "bases": (start - last) * bases_per_step(cfg), "device": None})
    elif holds_run(folder) and not (folder / "summary.json").is_file():
        print(f"{folder.name}: the run there stopped before its first checkpoint; starting it afresh", flush=True)
        (folder / PIECES).unlink(missing_ok=True)
        done, cfg = [], replace(cfg, overwrite="delete")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    began = time.time()
    summary, step, checkpoint = None, 0, None
    with PauseTimer(pause_at) as timer:
        try:
            summary = pretrain.run(cfg)
        except Interrupted as stop:
            if not timer.fired:
                raise
            step, checkpoint = stop.step or 0, stop.checkpoint
    seconds = round(time.time() - began, 1)
    if summary is None:
        release_folder(folder)
        if checkpoint is not None:
            done.append({"from_step": start or 0, "to_step": step, "train_s": seconds,
                         "bases": (step - (start or 0)) * bases_per_step(cfg), "device": device})
        write_pieces(folder, done)
        return None, {"status": "paused", "step": step, "max_steps": cfg.train.max_steps, "train_s": seconds,
                      "checkpoint": str(checkpoint) if checkpoint else None, "pieces": done}
    if start is None:
        return summary, {"bases_trained": summary.get("bases_trained"), "train_s": seconds}
    pieces = [*done, {"from_step": start, "to_step": summary["steps"], "train_s": seconds,
                      "bases": summary.get("bases_trained"), "device": device}]
    write_pieces(folder, pieces)
    return summary, {**totals(pieces), "pieces": pieces}


def write_pieces(folder: Path, pieces: list[dict]) -> None:
    from mambadna.files import write_json

    write_json(folder / PIECES, pieces)


def totals(pieces: list[dict]) -> dict:
    """bases_trained and train_s of a run in pieces (train_s None where a piece's time is unknown)."""
    seconds = [p["train_s"] for p in pieces]
    return {"bases_trained": sum(p["bases"] for p in pieces),
            "train_s": None if None in seconds else round(sum(seconds), 1)}


def finished_totals(folder: Path, summary: dict) -> dict:
    """bases_trained and train_s of the finished run in `folder`: every piece's, or the summary's for one piece."""
    pieces = read_pieces(folder)
    if pieces:
        return {**totals(pieces), "pieces": pieces}
    return {"bases_trained": summary.get("bases_trained"), "train_s": summary.get("train_time_s")}


def piece_files(folder: Path) -> list[Path]:
    """What a resume needs of a paused run: its settings, pieces, newest checkpoint, best model so far (a later
    validation compares with it) and logs (the curves of the whole run); not the data nor older checkpoints."""
    from mambadna.tasks.checkpoints import step_checkpoints

    newest = step_checkpoints(folder / "checkpoints")[-1][1]
    named = [folder / "run_config.json", folder / PIECES, newest, folder / "model_best", folder / "logs"]
    return [p for p in [*named, *sorted(folder.glob("logs.part*"))] if p.exists()]


def pack(work: Path, out: Path) -> int:
    """Every paused run folder of `work` as out/piece_<folder>.tgz; 1 when one is too large to come back."""
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for folder in sorted(p for p in work.iterdir() if p.is_dir()):
        step = resume_step(folder)
        if step is None or not (folder / "run_config.json").is_file():
            continue
        target = out / f"piece_{folder.name}.tgz"
        with tarfile.open(target, "w:gz") as tar:
            for path in piece_files(folder):
                tar.add(path, arcname=str(path.relative_to(work)))
        size = target.stat().st_size
        print(f"{target.name}: {folder.name} at step {step}, {size / 2**20:.1f} MiB", flush=True)
        if size > MAX_PIECE_BYTES:
            failed = 1
            print(f"!!! {target.name} is {size / 2**20:.1f} MiB, over the {MAX_PIECE_BYTES // 2**20} MiB a file the "
                  f"device tool copies back: {folder.name} cannot continue in another call", file=sys.stderr,
                  flush=True)
    return failed


def unpack(source: Path, work: Path) -> int:
    """Every *.tgz of `source` into `work`, where run.py finds and continues the paused runs; a run folder that is
    there already (a machine kept warm since the piece was packed) is kept, being as new or newer."""
    tgzs = sorted(source.glob("*.tgz"))
    if not tgzs:
        raise SystemExit(f"{source}: no *.tgz pieces to unpack")
    work.mkdir(parents=True, exist_ok=True)
    for tgz in tgzs:
        with tarfile.open(tgz) as tar:
            names = tar.getnames()
            folders = sorted({Path(n).parts[0] for n in names})
            kept = [f for f in folders if (work / f).exists()]
            if kept:
                print(f"{tgz.name}: kept {', '.join(kept)}, already in {work}", flush=True)
                continue
            tar.extractall(work, filter="data")
        checkpoints = [Path(n).name for n in names if n.endswith(".ckpt")]
        print(f"{tgz.name}: {', '.join(folders)} ({', '.join(checkpoints)}) into {work}", flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("pack", help="every paused run folder of WORK as OUT/piece_<folder>.tgz")
    p.add_argument("work", type=Path)
    p.add_argument("out", type=Path)
    u = sub.add_parser("unpack", help="every *.tgz of DIR into WORK")
    u.add_argument("source", type=Path)
    u.add_argument("work", type=Path)
    args = parser.parse_args(argv)
    if args.action == "pack":
        if not args.work.is_dir():
            raise SystemExit(f"{args.work}: no such folder of runs")
        return pack(args.work, args.out)
    if not args.source.is_dir():
        raise SystemExit(f"{args.source}: no such folder of pieces")
    return unpack(args.source, args.work)


if __name__ == "__main__":
    sys.exit(main())
