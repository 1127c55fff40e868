"""What an installed mambadna relies on: a wheel that runs the demo outside a checkout, the cache folder's
environment variables, the Python 3.10 TOML fallback, and one Lightning namespace."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mambadna.data import bundled_path
from mambadna.data.bundled import PACKAGED, PACKAGED_DIR
from mambadna.data.cache import cache_dir

REPO = Path(__file__).resolve().parents[1]


def test_cache_follows_mambadna_cache_then_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("MAMBADNA_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "mambadna" and cache_dir().is_dir()
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # invalid under the XDG spec: ignored
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "mambadna"
    monkeypatch.setenv("MAMBADNA_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def test_recipes_parse_with_tomli_where_tomllib_is_missing(tmp_path):
    """Python 3.10 has no tomllib; mambadna.settings (which reads recipes) then imports tomli. Simulated on this
    Python by refusing the import."""
    pytest.importorskip("tomli")
    recipe = tmp_path / "r.toml"
    recipe.write_text("[train]\nmax_steps = 7\n[model]\npreset = 'small'\nd_state = 8\n")
    script = f"""
import sys
class NoTomllib:
    def find_spec(self, name, path=None, target=None):
        if name == "tomllib":
            raise ImportError("no tomllib before Python 3.11")
sys.meta_path.insert(0, NoTomllib())
sys.modules.pop("tomllib", None)
from mambadna import run_config as rc, settings
assert settings.tomllib.__name__ == "tomli", settings.tomllib
cfg = rc.load_recipe(rc.PretrainConfig(), {str(recipe)!r})
assert (cfg.train.max_steps, cfg.model.d_model, cfg.model.d_state) == (7, 128, 8)
try:
    rc.load_recipe(rc.PretrainConfig(), {str(tmp_path / 'bad.toml')!r})
except ValueError as err:
    assert "not found" in str(err)
(__import__("pathlib").Path({str(tmp_path / 'bad.toml')!r})).write_text("[train\\n")
try:
    rc.load_recipe(rc.PretrainConfig(), {str(tmp_path / 'bad.toml')!r})
    raise SystemExit("a bad recipe parsed")
except ValueError as err:
    assert "does not parse" in str(err), err
print("ok")
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


def test_one_lightning_namespace():
    """The package imports Lightning as `pytorch_lightning` only: a user's callback subclassing
    `lightning.pytorch.Callback` would be a different class to the Trainer (README, "From Python")."""
    found = {}
    for path in (REPO / "mambadna").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                if name.split(".")[0] in ("lightning", "pytorch_lightning"):
                    found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(REPO)))
    assert set(found) == {"pytorch_lightning"}, found


def test_the_demo_genomes_are_package_data():
    for name in PACKAGED:
        assert bundled_path(name).parent == PACKAGED_DIR, name
    assert (PACKAGED_DIR / "LICENSES.md").is_file()


@pytest.mark.slow
def test_wheel_runs_the_demo_outside_a_checkout(tmp_path):
    """`pip install mambadna && mambadna demo`, with the dependencies already present: build the wheel, install it
    alone into a folder, and run its console script from elsewhere with only that folder added to the path."""
    pip = [sys.executable, "-m", "pip"]
    # from a copy: setuptools leaves build/ and *.egg-info in the tree it builds
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "runs", "__pycache__",
                                                               ".pytest_cache", "*.fai", "lightning_logs"))
    build = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
                            str(source)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("mambadna-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for member in ["mambadna/commands/__init__.py", "mambadna/commands/demo.py", "mambadna/data/dna/LICENSES.md",
                   *(f"mambadna/data/dna/{f}" for f in PACKAGED.values())]:
        assert member in names, member
    assert not [n for n in names if "great_apes" in n or n.endswith(".fai")]

    site = tmp_path / "site"
    install = subprocess.run([*pip, "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MAMBADNA_DATA", "MAMBADNA_CACHE")}
    env.update(PYTHONPATH=str(site), XDG_CACHE_HOME=str(tmp_path / "cache"))
    where = subprocess.run([sys.executable, "-c", "import mambadna; print(mambadna.__file__)"], env=env,
                           capture_output=True, text=True, cwd=elsewhere, timeout=120)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr
    demo = subprocess.run([str(site / "bin" / "mambadna"), "demo", "--quick", "--no-progress", "--out", "demo"],
                          env=env, capture_output=True, text=True, cwd=elsewhere, timeout=600)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "Mamba fine-tuned classifier" in demo.stdout
    for name in ("summary.json", "embed/embeddings.npy", "finetune/model/model.safetensors"):
        assert (elsewhere / "demo" / name).is_file(), name
    species = (elsewhere / "demo" / "finetune" / "data" / "species.tsv").read_text()
    assert str(site.resolve() / "mambadna" / "data" / "dna") in species and str(REPO) not in species
