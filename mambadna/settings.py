"""Reading and changing settings dataclasses: nested dicts, recipe files (TOML/JSON), `--set key=value` overrides.

Generic over the dataclasses of mambadna/run_config.py (which declares the settings) and MambaConfig: every change
rebuilds the dataclasses through `from_dict`, so each section's `__post_init__` checks the final values whatever
their source. `model.preset=NAME` starts a model section from one of mambadna/config.py's presets.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from pathlib import Path

from mambadna.config import PRESETS, MambaConfig

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _field_types(cls) -> dict:
    return typing.get_type_hints(cls)


def leaf_settings(cls, prefix: str = ""):
    """(dotted key, type, dataclass field) of every setting of a config class, depth first."""
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        kind, key = hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(kind):
            yield from leaf_settings(kind, key + ".")
        else:
            yield key, kind, f


def renamed(cls, key: str) -> str:
    """The current name of a dotted key: a class lists the settings that moved in `RENAMED` {old: new}."""
    return getattr(cls, "RENAMED", {}).get(key, key)


def _move_renamed(cls, data: dict) -> dict:
    """A nested settings dict with every old key (cls.RENAMED) moved to its new place; the new one wins."""
    moves = getattr(cls, "RENAMED", {})
    if not moves:
        return data
    data = json.loads(json.dumps(data))  # a deep copy: the caller's dict stays as it was
    for old, new in moves.items():
        *path, leaf = old.split(".")
        node = data
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            continue
        value = node.pop(leaf)
        *path, leaf = new.split(".")
        target = data
        for part in path:
            target = target.setdefault(part, {})
        target.setdefault(leaf, value)
    return data


def from_dict(cls, data: dict, where: str = ""):
    """Build `cls` from a nested dict; an unknown key raises ValueError listing the valid ones."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or cls.__name__}: expected a table of settings, got {data!r}")
    if not where:
        data = _move_renamed(cls, data)
    hints = _field_types(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else key
        if cls is MambaConfig and key == "preset":
            continue  # applied by _start_from_preset before the other keys
        if key not in hints:
            raise ValueError(f"unknown setting {name!r}; valid keys{' in ' + where if where else ''}: "
                             f"{', '.join(valid + (['preset'] if cls is MambaConfig else []))}")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = from_dict(kind, value, name)
        else:
            kwargs[key] = _check_type(name, kind, value)
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field (MambaConfig's d_model / n_layer) is missing
        raise ValueError(f"{where or cls.__name__}: {err}") from None


def _options(kind) -> tuple:
    is_union = isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union
    return typing.get_args(kind) if is_union else (kind,)


def _check_type(name: str, kind, value):
    options = _options(kind)
    if value is None and type(None) in options:
        return None
    for option in options:
        base = typing.get_origin(option) or option
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if base in (bool, str) and isinstance(value, base):
            return value
        if base is list and isinstance(value, (list, tuple)):
            return list(value)
    raise ValueError(f"setting {name!r} must be {type_name(kind)}, got {value!r}")


def type_name(kind) -> str:
    return str(kind).replace("typing.", "").replace("<class '", "").replace("'>", "")


def parse_value(name: str, kind, text: str):
    """Text of a flag or --set value -> a value of the field's type ('none' for optional fields; JSON for lists)."""
    options = _options(kind)
    if text.lower() in ("none", "null") and type(None) in options:
        return None
    for option in options:
        base = typing.get_origin(option) or option
        try:
            if base is bool:
                if text.lower() in ("true", "1", "yes", "on"):
                    return True
                if text.lower() in ("false", "0", "no", "off"):
                    return False
                continue
            if base is int:
                return int(text)
            if base is float:
                return float(text)
            if base is list:
                return json.loads(text if text.startswith("[") else f"[{text}]")
            if base is str:
                return text
        except ValueError:
            continue
    raise ValueError(f"{name}={text!r}: not a valid {type_name(kind)}")


def _start_from_preset(model: dict, preset: str) -> None:
    """Replace a model section (dict, in place) with the named preset's full settings."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; presets are {', '.join(PRESETS)}")
    model.clear()
    model.update(PRESETS[preset]().to_dict())


def apply_overrides(cfg, assignments: list[str]):
    """`["train.max_steps=10", "data.window_bp=512"]` -> a new, validated config. `model.preset=NAME` replaces the
    model section with that preset wherever it appears; later model keys change it."""
    data = to_dict(cfg)
    for item in assignments:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, text = (part.strip() for part in item.split("=", 1))
        key = renamed(type(cfg), key)
        parts = key.split(".")
        cls, node = type(cfg), data
        for depth, part in enumerate(parts):
            hints = _field_types(cls)
            where = ".".join(parts[:depth]) or "the run config"
            last = depth == len(parts) - 1
            if cls is MambaConfig and part == "preset" and last:
                _start_from_preset(node, text)
                break
            if part not in hints:
                valid = ", ".join(f.name for f in dataclasses.fields(cls))
                raise ValueError(f"unknown setting {key!r}: {part!r} is not in {where}; valid keys: {valid}")
            kind = hints[part]
            if last:
                if dataclasses.is_dataclass(kind):
                    raise ValueError(f"{key!r} is a section; set one of its keys, e.g. {key}."
                                     f"{dataclasses.fields(kind)[0].name}=...")
                node[part] = parse_value(key, kind, text)
            elif not dataclasses.is_dataclass(kind):
                raise ValueError(f"unknown setting {key!r}: {'.'.join(parts[:depth + 1])} is not a section")
            else:
                cls, node = kind, node[part]
    return from_dict(type(cfg), data)


def read_recipe(path: str | Path) -> dict:
    """The nested tables of a recipe file (TOML or JSON); a missing or unreadable file is a one-line ValueError."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"recipe {path} not found")
    if path.suffix.lower() in (".yaml", ".yml"):
        raise ValueError(f"recipe {path} is YAML, which mambadna does not read; write it as TOML (.toml) or JSON "
                         "(.json), nested the same way")
    try:
        text = path.read_text()
        recipe = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"recipe {path} does not parse: {err}") from None
    if not isinstance(recipe, dict):
        raise ValueError(f"recipe {path}: expected a table of settings, got {type(recipe).__name__}")
    return recipe


def apply_recipe(cfg, recipe: dict, where: str = "recipe"):
    """`cfg` with a recipe's settings (nested tables as in the config) on top; errors name `where`."""
    recipe = dict(recipe)
    if recipe.get("kind") == type(cfg).__name__:
        recipe.pop("kind")  # a run's saved run_config.json is a recipe too
    data = to_dict(cfg)
    _merge(data, _move_renamed(type(cfg), recipe))
    try:
        return from_dict(type(cfg), data)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def load_recipe(cfg, path: str | Path):
    """Apply a recipe file (TOML or JSON, nested tables as in the config) on top of `cfg`."""
    return apply_recipe(cfg, read_recipe(path), f"recipe {path}")


def _merge(base: dict, update: dict) -> None:
    if isinstance(update.get("model"), dict) and "preset" in update["model"] and isinstance(base.get("model"), dict):
        update = {**update, "model": dict(update["model"])}
        _start_from_preset(base["model"], update["model"].pop("preset"))
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def changed_settings(before, after) -> list[tuple[str, object, object]]:
    """(dotted key, old, new) of every setting that differs between two configs of one kind."""
    old, new = flatten(to_dict(before)), flatten(to_dict(after))
    return [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def flatten(data: dict, prefix: str = "") -> dict:
    """A nested settings dict -> {dotted key: value}."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def transient_keys(cls) -> list[str]:
    """The settings of one invocation (--resume, --overwrite, ...): not saved with a run, not compared on resume."""
    return [key for key, _, f in leaf_settings(cls) if f.metadata.get("transient")]


def save_config(cfg, path: str | Path) -> None:
    """A run's settings as JSON, with its kind (the dataclass's name) and without its transient settings."""
    from mambadna.files import write_json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    defaults = type(cfg)()
    kept = dataclasses.replace(cfg, **{k: getattr(defaults, k) for k in transient_keys(type(cfg))})
    write_json(path, {"kind": type(cfg).__name__, **to_dict(kept)})


def check_label_regex(pattern: str, name: str = "data.label_regex") -> re.Pattern:
    """A label regex compiled, with exactly one group (the label), or a ValueError saying what is wrong."""
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise ValueError(f"{name} {pattern!r} is not a valid regular expression ({err})") from None
    if compiled.groups != 1:
        raise ValueError(f"{name} {pattern!r} must have exactly one (group) capturing the label, it has "
                         f"{compiled.groups}; e.g. 'label=(\\w+)'")
    return compiled
