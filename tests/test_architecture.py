"""The layering of docs/architecture.md holds: checked on the source, so a change that breaks it fails here."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOMAIN = ("imagen", "bench.shapes", "bench.prompts", "bench.shapes_clip")
DOMAIN_COMMANDS = {"bench.shapes_clip.train"}  # a command that lives beside its model
RUN_DIR_FILES = {"manifest.csv", "metrics.csv", "config.yaml", "generation.json", "run_info.json"}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted([*REPO.glob("bench/**/*.py"), *REPO.glob("imagen/*.py")]):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(encoding="utf-8"))
    return out


def _imports(name: str, tree: ast.Module) -> list[tuple[str, ast.AST]]:
    """(imported module, node) for every import of a project module, relative ones resolved."""
    package = name if name in _packages() else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            out.append((base, node))
    return [(m, n) for m, n in out if m.split(".")[0] in ("bench", "imagen")]


def _packages() -> set[str]:
    return {".".join(p.relative_to(REPO).parent.parts) for p in REPO.glob("bench/**/__init__.py")} | {"imagen"}


MODULES = _modules()


def _in(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _in(n, DOMAIN) and n not in DOMAIN_COMMANDS))
def test_domain_code_imports_nothing_of_the_harness(name):
    bad = [m for m, _ in _imports(name, MODULES[name]) if not _in(m, DOMAIN)]
    assert not bad, f"{name} imports harness modules {bad}"


def test_project_imports_sit_at_module_top():
    inner = [f"{name}:{node.lineno} -> {m}" for name, tree in MODULES.items() for m, node in _imports(name, tree)
             if node.col_offset > 0 and not _type_checking_only(tree, node)]
    assert not inner, "imports of project modules inside functions hide the import graph:\n" + "\n".join(inner)


def _type_checking_only(tree: ast.Module, node: ast.AST) -> bool:
    return any(isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING" and node in ast.walk(n)
               for n in tree.body)


def test_no_module_imports_another_modules_private_names():
    bad = [f"{name}: from {m} import {a.name}" for name, tree in MODULES.items() for m, node in _imports(name, tree)
           if isinstance(node, ast.ImportFrom) for a in node.names if a.name.startswith("_")]
    assert not bad, "\n".join(bad)


def test_only_the_run_directory_module_names_run_directory_files():
    """Everyone else uses bench.rundir's names, readers and writers."""
    bad = []
    for name, tree in MODULES.items():
        if _in(name, ("bench.rundir",)):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in RUN_DIR_FILES:
                bad.append(f"{name}:{node.lineno} {node.value!r}")
    assert not bad, "\n".join(bad)


def test_the_lower_layers_do_not_import_commands():
    commands = ("bench.run", "bench.score", "bench.rate", "bench.pairs", "bench.ratings", "bench.compare", "bench.regress", "bench.figures",
                "bench.targets", "bench.train", "bench.binding_gap", "bench.ship_chain")
    lower = ("bench.rundir", "bench.generate", "bench.metrics", "bench.report", "bench.distributed",
             "bench.training")
    bad = [f"{name} -> {m}" for name, tree in MODULES.items() if _in(name, lower)
           for m, _ in _imports(name, tree) if m in commands]
    assert not bad, "\n".join(bad)
