"""The house plan of who imports whom, read from the source (an AST walk: every import statement,
also those inside functions, also those under `if TYPE_CHECKING`). No exceptions list: a lazy import
is still a dependency.

Floors of `edge_llm/`, bottom to top:

    metering/                what measures (energy, cost, machine, probes, the step meter)
    the runtime              manifest, session, sampling, records, generate, api, chat, evaluate, ...
    serve/, bench/           the two commands with libraries of their own, side by side
    cli_types, eval_cli      options and types the commands share; the eval command
    cli                      registers every command; only `python -m edge_llm` imports it

`export/` (installed as `edge_llm.export`) is the host-side exporter: it may read the runtime's
contract (manifest, tokenizer, session for validation) and nothing above it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TREES = {"edge_llm": "edge_llm", "export": "edge_llm.export"}   # folder -> the package it installs as

COMMANDS = ("edge_llm.cli", "edge_llm.cli_types", "edge_llm.eval_cli", "edge_llm.__main__")
ABOVE_RUNTIME = ("edge_llm.export", "edge_llm.bench", "edge_llm.serve", *COMMANDS)
GENERATOR = ("edge_llm.generate", "edge_llm.records", "edge_llm.api", "edge_llm.chat", "edge_llm.evaluate",
             "edge_llm.speculative")

# (who, may not import, why); prefixes are whole dotted names ("edge_llm.serve" covers its modules)
RULES = [
    ("runtime", ("onnx", *ABOVE_RUNTIME), "the runtime is onnxruntime + numpy: no exporter, no commands"),
    ("edge_llm.metering", GENERATOR, "metering sits below the generator that it meters"),
    ("edge_llm.serve", ("edge_llm.bench", "edge_llm.cli", "edge_llm.eval_cli", "edge_llm.export"),
     "serve is a command beside bench; shared options live in cli_types"),
    ("edge_llm.bench", ("edge_llm.serve", "edge_llm.cli", "edge_llm.eval_cli", "edge_llm.export"),
     "bench is a command beside serve; shared options live in cli_types"),
    ("edge_llm.cli_types", ("edge_llm.cli", "edge_llm.serve", "edge_llm.bench", "edge_llm.eval_cli"),
     "shared options are below every command"),
    ("edge_llm.export", ("edge_llm.serve", "edge_llm.bench", *COMMANDS), "the exporter knows no command"),
]


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_names(root: Path, trees: dict[str, str] = TREES) -> dict[str, Path]:
    out = {}
    for folder, package in trees.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join((package, *parts))] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[tuple[str, int]]:
    """(imported module, line) for every import in the file; `from pkg import mod` counts as pkg.mod."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {(a.name, node.lineno) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module
            subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules}
            found |= {(m, node.lineno) for m in subs}
            if len(subs) < len(node.names):      # a name from the package itself: its __init__
                found.add((base, node.lineno))
    return found


def graph(root: Path = ROOT, trees: dict[str, str] = TREES) -> dict[str, set[tuple[str, int]]]:
    modules = module_names(root, trees)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def is_runtime(name: str) -> bool:
    return _under(name, "edge_llm") and not any(_under(name, p) for p in ABOVE_RUNTIME)


def violations(g: dict[str, set[tuple[str, int]]]) -> list[str]:
    bad = []
    for who, banned, why in RULES:
        for name, imported in g.items():
            if not (is_runtime(name) if who == "runtime" else _under(name, who)):
                continue
            for target, line in sorted(imported):
                if any(_under(target, b) for b in banned) and not _under(target, who):
                    bad.append(f"{name}:{line} imports {target} ({why})")
    return bad


def cycles(g: dict[str, set[tuple[str, int]]]) -> list[list[str]]:
    """Every strongly connected set of two or more modules (Tarjan), each as a sorted list."""
    edges = {n: sorted({t for t, _ in imp if t in g and t != n}) for n, imp in g.items()}
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(n):
        index[n] = low[n] = len(index)
        stack.append(n)
        on.add(n)
        for m in edges[n]:
            if m not in index:
                visit(m)
                low[n] = min(low[n], low[m])
            elif m in on:
                low[n] = min(low[n], index[m])
        if low[n] == index[n]:
            group = []
            while True:
                m = stack.pop()
                on.discard(m)
                group.append(m)
                if m == n:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for n in sorted(edges):
        if n not in index:
            visit(n)
    return out


def test_the_floors_hold():
    assert violations(graph()) == []


def test_no_import_circles():
    assert cycles(graph()) == []


def test_the_walk_sees_every_module():
    g = graph()
    assert {"edge_llm.generate", "edge_llm.metering.step", "edge_llm.export.exporter", "edge_llm.serve.cli"} <= set(g)
    assert "edge_llm.metering.step" in {t for t, _ in g["edge_llm.generate"]}
    assert "onnx" in {t.split(".")[0] for t, _ in g["edge_llm.export.onnx_writer"]}


@pytest.mark.parametrize("bad, expect", [
    ("from ..serve import engine\n", "edge_llm.serve.engine"),         # runtime -> serve, inside the tree
    ("def f():\n    import onnx\n", "onnx"),                         # a lazy import counts
    ("from .. import generate\n", "edge_llm.generate"),                # metering -> generator
])
def test_a_bad_import_goes_red(tmp_path, bad, expect):
    for rel in ("edge_llm/__init__.py", "edge_llm/generate.py", "edge_llm/metering/__init__.py",
                "edge_llm/serve/__init__.py", "edge_llm/serve/engine.py", "export/__init__.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    (tmp_path / "edge_llm/metering/probe.py").write_text(bad)
    found = violations(graph(tmp_path))
    assert len(found) == 1 and f"imports {expect}" in found[0], found


def test_a_circle_goes_red(tmp_path):
    (tmp_path / "edge_llm").mkdir()
    (tmp_path / "export").mkdir()
    (tmp_path / "edge_llm/__init__.py").write_text("")
    (tmp_path / "edge_llm/a.py").write_text("def f():\n    from . import b\n")
    (tmp_path / "edge_llm/b.py").write_text("from .a import f\n")
    assert cycles(graph(tmp_path)) == [["edge_llm.a", "edge_llm.b"]]
