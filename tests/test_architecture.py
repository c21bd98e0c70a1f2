"""The architecture holds: one-way dependencies (read from the source), methods as registered data
(walked end to end for a toy method registered only here), the methods table in docs/METHODS.md."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "retain"

# Every top-level module/subpackage of retain, by layer. Components never import workflows.
FOUNDATION = {"errors", "versions", "distributed", "artifacts", "tokens", "models", "data", "config"}
COMPONENTS = {"methods", "engine", "evaluation", "run", "continual", "analysis"}
WORKFLOWS = {"workflows", "commands", "cli", "__main__", ""}  # "": retain/__init__.py, the public facade


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    """Every retain module this file imports, at the top or inside functions."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            for a in node.names:  # `from retain import methods` imports the module retain.methods
                found.add(f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base)
    return {m for m in found if m == "retain" or m.startswith("retain.")}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def unit_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        a = _unit(_module_name(path))
        graph.setdefault(a, set())
        graph[a] |= {b for b in map(_unit, _imports(path)) if b != a}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return trail + [node, nxt]
            if nxt not in state and (found := visit(nxt, trail + [node])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


def test_the_reader_sees_imports_inside_functions(tmp_path):
    """The check itself: an import hidden in a function body is an edge (so the test can fail)."""
    graph = unit_graph()
    assert "workflows" in graph["commands"]  # commands import workflows only inside run()
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None and _cycle({"a": {"b"}, "b": set()}) is None


def test_every_unit_has_a_layer():
    units = set(unit_graph())
    assert units == FOUNDATION | COMPONENTS | WORKFLOWS, (
        f"place new top-level modules in a layer (tests/test_architecture.py): {sorted(units ^ (FOUNDATION | COMPONENTS | WORKFLOWS))}")


def test_no_import_cycles_between_units():
    assert _cycle(unit_graph()) is None, " -> ".join(_cycle(unit_graph()) or [])


def test_components_never_import_workflows():
    graph = unit_graph()
    bad = {(a, b) for a in FOUNDATION | COMPONENTS for b in graph.get(a, ()) if b in WORKFLOWS}
    assert not bad, f"components importing workflows: {sorted(bad)}"


def test_units_stay_readable():
    """No module over 400 lines, no function over 60 (CONTRIBUTING.md)."""
    long = []
    for path in PKG.rglob("*.py"):
        src = path.read_text()
        if len(src.splitlines()) > 400:
            long.append(f"{path.relative_to(ROOT)}: {len(src.splitlines())} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long, long


def test_help_stays_light():
    """Building every command's parser (method choices and help from the registries included) imports
    neither torch nor transformers, so `retain --help` is instant."""
    import subprocess
    import sys

    code = ("import sys; from retain.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]", out


def test_methods_doc_is_generated_from_the_registry():
    from retain.methods.registry import markdown_table

    doc = (ROOT / "docs" / "METHODS.md").read_text()
    assert markdown_table() in doc, "docs/METHODS.md is stale: paste the output of `python -m retain.methods`"


# ------------------------------------------------------ a toy method, walked through the checklist
def _action(command: str, dest: str):
    """The argparse action of ``retain COMMAND``'s flag for ``dest`` (its choices and help as built now)."""
    from retain.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    return next(a for a in sub._actions if a.dest == dest)


@pytest.fixture
def toy_method():
    """CONTRIBUTING.md steps 1-2: declare the method as data and register it (here: only for this test)."""
    from retain import methods
    from retain.methods import Method, Stage

    toy = Method("toy-twostage", "two model stages, budgets of their own (a test fixture)", (
        Stage("warm", ("model",), steps="stage1_steps", lr=("stage2_lr",)),
        Stage("main", ("model",), steps="stage2_steps", lr=("lr",), default_lr=1e-4),
    ))
    methods.register(toy)
    yield toy
    methods.unregister(toy.name)


def test_toy_method_walks_the_checklist(toy_method, task, tmp_path, capsys):
    from retain.cli import main
    from retain.methods.registry import markdown_table
    from retain.workflows.compare import parse_methods

    # 3. the CLI, retain compare and the docs table derive from the registry
    flag = _action("train", "method")
    assert "toy-twostage" in flag.choices and "toy-twostage: two model stages, budgets of their own" in flag.help
    assert parse_methods("base,toy-twostage,toy-twostage-1shot") == ["base", "toy-twostage", "toy-twostage-1shot"]
    assert "| `toy-twostage` | warm (model: `stage1_steps`, `stage2_lr`); main (model: `stage2_steps`, `lr` else 0.0001)" in markdown_table()
    # 4. it trains through the one engine with the budget it declares (not promot's, though it has two stages)
    train, val = task
    out = tmp_path / "toy"
    main(["train", "--model", "tiny-random-llama", "--method", "toy-twostage", "--train", str(train), "--validation", str(val),
          "--output", str(out), "--stage1-steps", "2", "--stage2-steps", "3", "--max-steps", "7", "--stage2-lr", "1e-3",
          "--batch-size", "4", "--eval-every", "0", "--save-every", "0"])
    info = json.loads((out / "run.json").read_text())
    assert [(s["stage"], s["steps"], s["learning_rate"]) for s in info["stages"]] == [("warm", 2, 1e-3), ("main", 3, 1e-4)]
    assert info["artifacts"] == ["model"] == list(toy_method.artifacts)
    # 5. the run loads like any other
    import retain

    run = retain.load_run(out)
    assert run.method == "toy-twostage" and not run.has_prompt


def test_unknown_method_is_one_line(task, tmp_path, capsys):
    from retain.cli import main

    train, _val = task
    with pytest.raises(SystemExit) as e:
        main(["train", "--model", "tiny-random-llama", "--method", "nope", "--train", str(train), "--output", str(tmp_path / "x")])
    assert e.value.code == 2 and "full" in capsys.readouterr().err


def test_continual_methods_are_registered_data(tmp_path):
    from retain.config import build
    from retain.continual import methods as continual
    from retain.continual.config import ContinualConfig

    toy = continual.register(continual.ContinualMethod("toy-seq", "a test fixture", continual.BASELINE, replay=True))
    try:
        flag = _action("continual", "method")
        assert "toy-seq" in flag.choices and "toy-seq: a test fixture" in flag.help
        assert build(ContinualConfig, None, {"method": "toy-seq"}).method == "toy-seq"
        assert continual.get("toy-seq") is toy and toy.runner().__name__ == "run_baseline" and continual.get("replay").replay and continual.get("switchcit").registry
    finally:
        continual.unregister("toy-seq")
