"""The `mambadna` command: pretrain, finetune, evaluate, embed, generate, probe, export, demo and normalize.

Every command is a settings dataclass and a `run(cfg) -> summary` (mambadna/commands/configs.py lists them); this
file only turns a command line into those settings and prints what `run` returns. Each subcommand's arguments,
flags and help are generated from its dataclass: every setting is `--section.key VALUE` (the common ones also have
a short alias such as --steps), positional arguments are declared on their setting. Settings resolve in this
order: the command's defaults, then `--recipe FILE` (TOML/JSON, nested like the settings), then the flags, then
`--set key=value` (dotted keys). `--resume` (pretrain, finetune) starts from the run's saved run_config.json
instead of the defaults, so the same flags need not be given again (a flag given then changes that setting; a
model shape cannot change).

Nothing here or in the settings modules imports torch: `--help` and every argument error answer before the seconds
torch and Lightning take to import (experiments/bench_cli_latency.py measures it). Every failure a user can cause
(bad files, bad values, resources, environment) ends with one line `error: ...` and exit code 2
(mambadna/errors.py); `--debug` or MAMBADNA_DEBUG=1 adds the traceback. SIGINT / SIGTERM / SIGHUP end with one line
and exit code 130 / 143 / 129, after saving a checkpoint when they arrive during training.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import sys
import time
import traceback
import warnings

from mambadna.commands.configs import COMMANDS, check_inputs, resolve
from mambadna.commands.summary import print_summary
from mambadna.errors import error_line, one_line_warning
from mambadna.version import __version__

class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so `main` can answer with one `error:` line and code 2."""

    def error(self, message):
        # a subcommand's parser has said where to look already; its parent re-raises through here
        where = "" if "--help`)" in message else f" (see `{self.prog} --help`)"
        raise argparse.ArgumentError(None, message + where)


def _add_common(p: argparse.ArgumentParser, default=argparse.SUPPRESS) -> None:
    # also accepted after the subcommand, where users put them; SUPPRESS keeps the top-level value otherwise
    p.add_argument("--debug", action="store_true", default=default,
                   help="on an error, show the Python traceback too (or set MAMBADNA_DEBUG=1)")
    p.add_argument("--verbose", action="store_true", default=default,
                   help="show Lightning's info messages and warnings")


def _settings(cls, command: str):
    """(dotted key, type, field, default) of every setting `command` takes, in declaration order."""
    from mambadna.settings import flatten, leaf_settings, to_dict

    defaults = flatten(to_dict(cls()))
    for key, kind, f in leaf_settings(cls):
        if command in f.metadata.get("runs", (command,)):
            yield key, kind, f, defaults.get(key)


def _help(text: str, default) -> str:
    text = text.replace("%", "%%")  # argparse formats help with %
    if default in ("", None) or "default" in text:
        return text  # an empty default means "none given", which the help says in its own words
    return f"{text} (default: {default})"


def _add_settings(p: argparse.ArgumentParser, command: str, cls) -> None:
    """The subcommand's arguments, from its settings dataclass: a setting added there appears here by itself.
    Values stay text until `resolve` converts and checks them (dest `set:<key>`)."""
    from mambadna.config import PRESETS

    p.add_argument("--recipe", metavar="FILE", help="TOML or JSON recipe file with these settings (nested tables, "
                   "as in run_config.json)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change one setting by dotted key, e.g. --set data.batch_size=16 (repeatable; applied "
                        "after the recipe and the flags)")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for key, kind, f, default in _settings(cls, command):
        meta, dest, flag = f.metadata, f"set:{key}", f.metadata.get("flag")
        text = meta.get("help", "")
        if meta.get("positional"):
            p.add_argument(dest, metavar=key, help=text)
            continue
        group = p
        if "." in key:
            section = key.split(".")[0]
            if section not in groups:
                groups[section] = p.add_argument_group(f"{section} settings")
                if section == "model":
                    groups[section].add_argument("--model", "--model.preset", dest="set:model.preset",
                                                 metavar="PRESET", choices=tuple(PRESETS),
                                                 help=f"start the model from a preset: {', '.join(PRESETS)} "
                                                      "(model.* flags then change it)")
            group = groups[section]
        metavar = meta.get("metavar") or ("BOOL" if kind is bool else key.split(".")[-1].upper())
        # one name in the help per setting: the alias, with the dotted key beside it only where it says more
        names = [flag, f"--{key}"] if flag and "." in key and kind is not bool else [flag or f"--{key}"]
        if kind is bool and flag:
            value = str(not default).lower()
            group.add_argument(flag, dest=dest, action="store_const", const=value,
                               help=meta.get("flag_help") or (f"{text} (sets {key}={value})" if "." in key else text))
        else:
            const = meta.get("const")
            group.add_argument(*names, dest=dest, nargs="?" if const else None, const=const, metavar=metavar,
                               choices=meta.get("choices"), help=_help(text, default))
        if f"--{key}" not in names:  # the other spelling still works, unlisted
            group.add_argument(f"--{key}", dest=dest, metavar=metavar, help=argparse.SUPPRESS)
    for old, new in getattr(cls, "RENAMED", {}).items():  # a setting that moved keeps its old flag, unlisted
        p.add_argument(f"--{old}", dest=f"set:{new}", metavar=new.split(".")[-1].upper(), help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mambadna", description="Mamba DNA language models: pretrain, fine-tune, embed, generate.")
    parser.add_argument("--version", action="version", version=f"mambadna {__version__}")
    _add_common(parser, default=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (cls, _, text, _) in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        _add_settings(p, name, cls)
        _add_common(p)
    return parser


def settings_from_args(args: argparse.Namespace):
    """The command's settings from parsed arguments: defaults (or a resumed run's), recipe, flags, --set."""
    cls = COMMANDS[args.command][0]
    given = {k[4:]: v for k, v in vars(args).items() if k.startswith("set:") and v is not None}
    # a preset replaces the whole model section, so it goes before the model.* flags that change it
    sets = [f"{key}={value}" for key, value in sorted(given.items(), key=lambda kv: kv[0] != "model.preset")]
    cfg = resolve(cls, args.recipe, sets + args.overrides)
    check_inputs(cfg)
    return cfg


def _quiet_lightning(verbose: bool) -> None:
    if verbose:
        return
    import pytorch_lightning  # noqa: F401  (it sets its loggers to INFO on import; lower them afterwards)

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except argparse.ArgumentError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help / --version
        return int(exit_.code or 0)
    if args.command is None:
        parser.print_help()
        return 2
    debug = args.debug or os.environ.get("MAMBADNA_DEBUG", "") not in ("", "0")
    _, module, _, title = COMMANDS[args.command]
    previous_warning, handlers, cfg = warnings.showwarning, None, None
    warnings.showwarning = one_line_warning
    start = time.time()
    try:
        cfg = settings_from_args(args)  # every setting is checked here, before torch is imported
        from mambadna.tasks.interrupts import install_handlers

        handlers = install_handlers()
        _quiet_lightning(args.verbose)
        summary = importlib.import_module(module).run(cfg)
        if title and summary:  # the other processes of a multi-device run leave the report to the first
            print_summary(title.format(**{**dataclasses.asdict(cfg), **summary}), summary)
    except KeyboardInterrupt:  # raised before the handlers were installed
        print("\ninterrupted (SIGINT)", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 (the one error boundary: every failure becomes one line)
        message, code = error_line(err)
        if debug:
            traceback.print_exc()
        elif code != 2:
            message += " (rerun with --debug for the traceback)"
        print(f"error: {message}", file=sys.stderr)
        return code
    except BaseException as exc:  # a signal during the command: mambadna.tasks.interrupts.Interrupted
        interrupts = sys.modules.get("mambadna.tasks.interrupts")
        if interrupts is None or not isinstance(exc, interrupts.Interrupted):
            raise
        from mambadna.commands.run_dir import interrupted_line, is_rank_zero

        if is_rank_zero():  # the other processes of a DDP run stop with it, silently
            print(f"\n{interrupted_line(args.command, getattr(cfg, 'out_dir', None), exc)}", file=sys.stderr)
        return exc.exit_code
    finally:
        from mambadna.files import release_all

        release_all()  # the folders the command held (a refused or failed one's empty new --out goes with it)
        if handlers is not None:
            sys.modules["mambadna.tasks.interrupts"].restore_handlers(handlers)
        warnings.showwarning = previous_warning
    if args.verbose:
        print(f"({args.command} took {time.time() - start:.1f} s)")
    return 0
