"""Run folders: one run per `--out`, continued with `--resume`, restarted only with `--overwrite`.

A run folder holds `run_config.json`, `checkpoints/step-<N>.ckpt` (N = optimizer steps done; `last.ckpt` links
to the newest), `logs/`, `model/`, `summary.json` and plots. Starting a run where another one lives would mix two
runs (Lightning renames its files `-v1` and a later resume picks the wrong one), so it is refused unless the user
says what to do: `--resume` continues the newest checkpoint of that run, `--resume-from CKPT` a chosen one, and
`--overwrite` starts afresh after moving the old run aside (`--overwrite move`, the default: `<out>.old-<k>`) or
deleting the files a run writes (`--overwrite delete`; anything else in the folder is left alone).

A live run holds its folder (mambadna/files.py's `lock_folder`): every other command into it, a second run,
`--resume`, `--overwrite` or an `embed`, is refused with the holder's pid until the run ends or dies.
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from mambadna.files import check_writable_folder, lock_folder, release_folder, remove_stale_temps
from mambadna.tasks.checkpoints import step_checkpoints

CHECKPOINTS = "checkpoints"
BEST_MODEL = "model_best"  # the model of the lowest val/loss, beside the final model/
OVERWRITE_MODES = ("move", "delete")
# what a run writes into its folder; `--overwrite delete` removes exactly these
RUN_ENTRIES = ("run_config.json", "summary.json", CHECKPOINTS, "logs", "model", BEST_MODEL, "curves.png",
               "confusion_matrix.png", "confusion_matrix.csv", "tensorboard", "data")
# their presence is what makes a folder "hold a run"
RUN_MARKERS = ("run_config.json", CHECKPOINTS, "model", "summary.json")


def newest_checkpoint(out_dir: Path) -> Path | None:
    """The checkpoint `--resume` continues: the highest step; runs of older versions (other names) by mtime."""
    folder = out_dir / CHECKPOINTS
    steps = step_checkpoints(folder)
    if steps:
        return steps[-1][1]
    legacy = sorted((p for p in folder.glob("*.ckpt") if p.is_file() and not p.is_symlink()),
                    key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return legacy[-1] if legacy else None


def holds_run(out_dir: Path) -> bool:
    return out_dir.is_dir() and any((out_dir / name).exists() for name in RUN_MARKERS)


def continue_command(command: str, out_dir: Path, extra: str = "") -> str:
    return f"mambadna {command} --out {shlex.quote(str(out_dir))} --resume{extra}"


def _describe(out_dir: Path) -> str:
    steps = step_checkpoints(out_dir / CHECKPOINTS)
    if steps:
        return f"{len(steps)} checkpoint(s), the newest at step {steps[-1][0]}"
    if (out_dir / "model").is_dir():
        return "a finished model"
    return "a run_config.json"


def _free_sibling(out_dir: Path) -> Path:
    k = 1
    while (target := out_dir.with_name(f"{out_dir.name}.old-{k}")).exists():
        k += 1
    return target


@dataclass
class RunStart:
    out_dir: Path
    ckpt_path: Path | None  # the checkpoint to continue, None for a fresh run
    moved_to: Path | None = None


def is_rank_zero() -> bool:
    """False in the other processes of a multi-process run (DDP relaunches this command once per device; they
    find the folder rank 0 has just prepared and must neither refuse nor move it)."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def start_run(out_dir: str | Path, command: str, resume: bool = False, resume_from: str | Path | None = None,
              overwrite: str | None = None) -> RunStart:
    """Apply the run-folder rules above; returns the folder and the checkpoint to continue (if any)."""
    out_dir = Path(out_dir)
    if not is_rank_zero():
        ckpt = newest_checkpoint(out_dir) if resume else (Path(resume_from) if resume_from else None)
        return RunStart(out_dir, ckpt)
    if overwrite is not None and overwrite not in OVERWRITE_MODES:
        raise ValueError(f"--overwrite takes {' or '.join(OVERWRITE_MODES)}, got {overwrite!r}")
    if resume and resume_from:
        raise ValueError("give --resume (the newest checkpoint of --out) or --resume-from CKPT, not both")
    if overwrite and (resume or resume_from):
        raise ValueError("--overwrite starts the run afresh and --resume / --resume-from continue it; give one")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file, not a folder; choose a folder for the run")
    lock_folder(out_dir, command)  # before any rule is read: a live run's folder is not looked at, let alone moved
    moved_to = None
    ckpt = None
    if resume:
        if not holds_run(out_dir):
            raise ValueError(f"--resume: {out_dir} holds no run to continue; start one without --resume")
        remove_stale_temps(out_dir / CHECKPOINTS)
        ckpt = newest_checkpoint(out_dir)
        if ckpt is None:
            raise ValueError(f"--resume: no checkpoint to resume in {out_dir / CHECKPOINTS} (the run stopped before "
                             f"its first one); start afresh with --overwrite")
    elif resume_from:
        ckpt = Path(resume_from)
        if not ckpt.is_file():
            raise ValueError(f"--resume-from: no such checkpoint file {ckpt}")
        inside = ckpt.resolve().parent == (out_dir / CHECKPOINTS).resolve()
        if holds_run(out_dir) and not inside:
            raise ValueError(f"--resume-from: {out_dir} holds another run ({_describe(out_dir)}); to continue from "
                             f"{ckpt} choose a new --out (or continue that run with --resume)")
        remove_stale_temps(out_dir / CHECKPOINTS)
    elif holds_run(out_dir):
        if overwrite is None:
            raise ValueError(f"{out_dir} already holds a run ({_describe(out_dir)}); continue it with --resume, start "
                             f"afresh with --overwrite (moves it to {_free_sibling(out_dir).name}; --overwrite "
                             "delete removes it), or choose another --out")
        if overwrite == "move":
            moved_to = _free_sibling(out_dir)
            out_dir.rename(moved_to)
            release_folder(out_dir, moved_to=moved_to)
            lock_folder(out_dir, command)
        else:
            _delete_run(out_dir)
    check_writable_folder(out_dir)
    return RunStart(out_dir, ckpt, moved_to)


def _delete_run(out_dir: Path) -> None:
    for name in RUN_ENTRIES:
        path = out_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    for part in out_dir.glob("logs.part*"):
        shutil.rmtree(part) if part.is_dir() else part.unlink()


def keep_interrupted_logs(out_dir: Path) -> None:
    """Lightning's CSV logger starts logs/metrics.csv afresh on resume: keep the earlier part beside it."""
    if not is_rank_zero():
        return
    logs = out_dir / "logs"
    if (logs / "metrics.csv").is_file():
        part = 1
        while (out_dir / f"logs.part{part}").exists():
            part += 1
        logs.rename(out_dir / f"logs.part{part}")


def read_checkpoint(path: Path) -> dict:
    """A Lightning checkpoint's contents (memory-mapped, so a big one costs little), or a one-line ValueError."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch reports a damaged file as RuntimeError, EOFError, UnpicklingError, ...
        # torch's own text goes on for a paragraph; its first sentence says what failed
        first = str(err).strip().splitlines()[0].split(". ")[0][:160] if str(err).strip() else type(err).__name__
        older = [p.name for _, p in step_checkpoints(path.parent) if p != path]
        hint = f"; resume from an older one with --resume-from ({', '.join(older[-3:])})" if older else ""
        raise ValueError(f"checkpoint {path} cannot be read ({first}): it is truncated or not a Lightning "
                         f"checkpoint{hint}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a Lightning training checkpoint (no state_dict)")
    return ckpt


def check_not_finished(path: Path, ckpt: dict, out_dir: Path, max_steps: int) -> None:
    """Resuming a run that reached its last step and wrote its results would only write them again; resuming a
    checkpoint past the last step would train nothing and end as if it had."""
    step = int(ckpt.get("global_step", 0))
    if step > max_steps:
        raise ValueError(f"{path} is at step {step}, past train.max_steps {max_steps}: nothing would train; resume "
                         f"with --steps larger than {step} (the run's settings are left as they were)")
    if step >= max_steps and (out_dir / "summary.json").is_file():
        raise ValueError(f"the run in {out_dir} already finished at step {step} (train.max_steps {max_steps}); "
                         f"to train it longer resume with a larger --steps")


def check_checkpoint_fits(path: Path, ckpt: dict, model: torch.nn.Module, class_names=None) -> None:
    """Refuse, before Lightning's 60-line traceback, a checkpoint saved by another model shape or class set."""
    meta = ckpt.get("mambadna") or {}
    saved_class = meta.get("model_class")
    if saved_class and saved_class != type(model).__name__:
        raise ValueError(f"{path} was saved by a {saved_class} run; this run trains a {type(model).__name__}")
    # the class set first: a changed one also changes the head's shape, which is not a model setting
    saved_names = (meta.get("init_kwargs") or {}).get("class_names")
    if class_names is not None and saved_names is not None and list(saved_names) != list(class_names):
        raise ValueError(f"cannot resume from {path}: it was trained on classes {saved_names} but the data now has "
                         f"{list(class_names)}; resume with the same data or start a new --out")
    saved = meta.get("config") or {}
    now = model.config.to_dict()
    differ = [f"model.{k} {saved[k]} in the checkpoint vs {now[k]} now" for k in
              ("d_model", "n_layer", "d_state", "d_conv", "expand", "vocab_size", "tokenizer")
              if k in saved and saved[k] != now.get(k)]
    if not differ:
        expected = {k.removeprefix("model."): v.shape for k, v in ckpt["state_dict"].items()}
        actual = model.state_dict()
        differ = [f"{k}: {tuple(expected[k])} in the checkpoint vs {tuple(v.shape)} now"
                  for k, v in actual.items() if k in expected and tuple(expected[k]) != tuple(v.shape)]
        missing = sorted(set(actual) - set(expected))
        if missing:
            differ.append(f"weights missing from the checkpoint: {', '.join(missing[:3])}")
    if differ and all(d.startswith("head.") for d in differ):  # saved before classifiers kept their names
        raise ValueError(f"cannot resume from {path}: its classifier head predicts another number of classes "
                         f"({differ[0]}): the data's classes changed; resume with the same data or start a new --out")
    if differ:
        raise ValueError(f"cannot resume from {path}: it holds another model shape ({'; '.join(differ[:3])}); "
                         "resume with the run's own settings (drop the model.* settings) or start a new --out")


def refuse_existing(paths, overwrite: bool) -> None:
    """Results are replaced only when asked (--overwrite)."""
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise ValueError(f"{existing[0]} already exists; choose another --out or add --overwrite to replace it")


def out_folder(path: str) -> Path:
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {folder} is a file; give a folder")
    return folder


def interrupted_line(command: str, out_dir, exc) -> str:
    """The one line after SIGINT/SIGTERM: where training stopped and the command that continues it."""
    name = exc.args[0] if exc.args else "signal"
    if command not in ("pretrain", "finetune") or not out_dir:
        return f"interrupted ({name})"
    out = Path(out_dir)
    resume = continue_command(command, out)
    if exc.step is not None:
        if exc.checkpoint is None:
            return f"interrupted ({name}) before the first training step; nothing to resume: start again (--overwrite)"
        return f"interrupted at step {exc.step}; continue with: {resume}"
    if newest_checkpoint(out) is not None:
        return f"interrupted ({name}); continue with: {resume}"
    return f"interrupted ({name}) before the first checkpoint; nothing to resume: start again (with --overwrite)"
