"""The package's shape: no import cycles, files under 500 lines, and each shared constant defined once."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mambadna"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """mambadna modules that `path` imports anywhere in its code (function-level imports count too; imports under
    `if TYPE_CHECKING:` do not, they never run)."""
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m in known and m != name}


def test_no_module_imports_a_module_that_imports_it_back():
    modules = _modules()
    graph = {name: _imports(path, name, set(modules)) for name, path in modules.items()}
    # a package's __init__ re-exporting its submodules is the usual shape; cycles are searched among the rest
    graph = {n: {m for m in deps if not (n.startswith(m + ".") and modules[m].name == "__init__.py")}
             for n, deps in graph.items()}
    cycles = []

    def visit(node, stack, on_stack, done):
        on_stack.add(node)
        stack.append(node)
        for dep in sorted(graph[node]):
            if dep in on_stack:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in done:
                visit(dep, stack, on_stack, done)
        stack.pop()
        on_stack.discard(node)
        done.add(node)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [], set(), done)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_check_sees_a_cycle(tmp_path):
    """Control: the parser finds both directions of a planted cycle."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from mambadna import model\n")
    b.write_text("def f():\n    import mambadna.config\n")
    known = {"mambadna.model", "mambadna.config"}
    assert _imports(a, "x", known) == {"mambadna.model"}
    assert _imports(b, "y", known) == {"mambadna.config"}


def test_no_file_in_the_package_is_over_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long


def test_shared_constants_are_defined_once():
    for constant in ("IGNORE_INDEX", "POOLINGS", "PRECISIONS"):
        where = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if re.search(rf"^{constant}\s*=", p.read_text(), flags=re.M)]
        assert len(where) == 1, (constant, where)
    literal = re.compile(r"-100\b")
    users = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if literal.search(p.read_text())]
    assert users == ["tokenizer.py"], f"the ignore index is written as a literal in {users}"


# What may import what (docs/ARCHITECTURE.md): a module imports only modules of a lower rank, or of its own group.
RANKS = [
    (0, ("mambadna.version", "mambadna.tokenizer", "mambadna.kernels", "mambadna.files", "mambadna.errors",
         "mambadna.threads")),
    (1, ("mambadna.config", "mambadna.data", "mambadna.strands")),
    (2, ("mambadna.hf", "mambadna.chunking", "mambadna.inference", "mambadna.settings")),
    (3, ("mambadna.checkpoint", "mambadna.pooling")),
    (4, ("mambadna.model",)),
    (5, ("mambadna.objective",)),
    (6, ("mambadna.tbptt", "mambadna.run_config")),
    (7, ("mambadna.tasks",)),
    (8, ("mambadna.commands",)),
    (9, ("mambadna.cli",)),
    (10, ("mambadna.__main__",)),
]
LIGHTNING_ALLOWED = ("mambadna.tasks", "mambadna.data.datamodules", "mambadna.commands", "mambadna.cli")


def _rank(name: str) -> tuple[int, str]:
    for rank, prefixes in RANKS:
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                return rank, prefix
    raise AssertionError(f"{name} has no rank in RANKS: add it (and to docs/ARCHITECTURE.md)")


def test_modules_import_only_lower_layers_and_the_model_never_imports_lightning():
    modules = _modules()
    bad = []
    for name, path in modules.items():
        if name == "mambadna":
            continue  # the package's __init__ re-exports the public API
        rank, group = _rank(name)
        for dep in _imports(path, name, set(modules)):
            if dep == "mambadna":
                continue
            dep_rank, dep_group = _rank(dep)
            if dep_group != group and dep_rank >= rank:
                bad.append(f"{name} (rank {rank}) imports {dep} (rank {dep_rank})")
        source = path.read_text()
        if re.search(r"^\s*(import|from)\s+(pytorch_lightning|lightning)\b", source, flags=re.M):
            if not name.startswith(LIGHTNING_ALLOWED):
                bad.append(f"{name} imports Lightning")
    assert not bad, bad
