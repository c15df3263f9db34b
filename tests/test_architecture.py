"""The floor plan, held against the code (docs/architecture.md): which room may import which,
no import cycles, and imports at module top except heavy optional dependencies.

Every import statement counts, including those inside functions: an import hidden in a
function body is still an edge of the graph.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("posttrain", "rewards", "hints", "rollouts")

# Rooms, by module-name prefix (longest match wins).
ROOMS = {
    "posttrain": "package", "posttrain.cli": "face", "posttrain.core": "core", "posttrain.losses": "math",
    "posttrain.advantages": "math", "posttrain.rl": "rl", "posttrain.phases": "phases",
    "posttrain.pipeline": "pipeline", "posttrain.tasks": "tasks",
    "rewards": "rewards", "hints": "hints", "rollouts": "rollouts",
}
ABOVE_CORE = {"face", "rl", "phases", "pipeline", "tasks", "rewards", "hints", "rollouts", "package"}
# (room, rooms it must never import, why)
NEVER = [
    ("rollouts", {"rl", "phases", "pipeline", "face"}, "engines know nothing of training or phases"),
    ("rewards", {"rl", "phases", "pipeline", "face"}, "reward plugins import without the trainer and the phases"),
    ("hints", {"rl", "phases", "pipeline", "face"}, "the hint policy is told results; it stands on the core"),
    ("core", ABOVE_CORE, "the core imports nothing above it"),
    ("math", ABOVE_CORE | {"core"}, "losses take tensors and numbers, never a config"),
    ("phases", {"pipeline", "face", "rl"}, "a phase runs alone; the pipeline composes phases"),
    ("rl", {"pipeline", "face", "phases"}, "the trainer runs alone; the pipeline composes it"),
    ("tasks", ABOVE_CORE - {"tasks", "rewards"}, "a task stands on the core and its verifier's reward API"),
    ("pipeline", {"face"}, "the CLI calls the pipeline, not the other way round"),
]
# Heavy optional dependencies may be imported where used (with a one-line reason there);
# CLI modules import what a command needs when it runs, so `posttrain --help` stays fast.
DEFERRABLE = {"ray", "vllm", "trl", "transformers", "datasets", "peft", "tokenizers", "matplotlib", "math_verify",
              "cv2"}
LAZY_MODULES = {"posttrain.cli", "rewards.cli", "hints.cli"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports(path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """(imported project module, line, at module top) for every import statement in the file."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        else:
            continue
        out += [(n, node.lineno, id(node) in top) for n in names]
    return out


def room(module: str) -> str | None:
    best = max((p for p in ROOMS if module == p or module.startswith(p + ".")), key=len, default=None)
    return ROOMS.get(best) if best else None


def graph() -> dict[str, set[str]]:
    mods = project_modules()
    known = set(mods)
    return {m: {i for i, _, _ in imports(p, known) if i in known and i != m} for m, p in mods.items()}


def wall_breaks(edges: dict[str, set[str]]) -> list[str]:
    out = []
    for src, dsts in sorted(edges.items()):
        for dst in sorted(dsts):
            for frm, banned, why in NEVER:
                if room(src) == frm and room(dst) in banned:
                    out.append(f"{src} imports {dst} ({frm} -> {room(dst)}: {why})")
    return out


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_room_imports_through_a_wall():
    assert wall_breaks(graph()) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_checks_catch_a_broken_wall_and_a_cycle():
    edges = {"rewards.scorer": {"posttrain.rl.trainer"}, "posttrain.rl.trainer": {"rewards.scorer"},
             "hints.sampler": {"posttrain.phases.sft"}, "posttrain.phases.sft": set()}
    breaks = wall_breaks(edges)
    assert any(b.startswith("rewards.scorer imports posttrain.rl.trainer") for b in breaks)
    assert any(b.startswith("hints.sampler imports posttrain.phases.sft") for b in breaks)
    assert cycles(edges) == [["posttrain.rl.trainer", "rewards.scorer"]]


def test_every_module_has_a_room():
    assert [m for m in project_modules() if room(m) is None] == []


@pytest.mark.parametrize("module", sorted(set(project_modules()) - LAZY_MODULES))
def test_imports_sit_at_module_top(module):
    """Only heavy optional dependencies are imported inside functions."""
    path = project_modules()[module]
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    nested = [f"{path.name}:{n.lineno} {n.module if isinstance(n, ast.ImportFrom) else n.names[0].name}"
              for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in top
              and (n.module if isinstance(n, ast.ImportFrom) else n.names[0].name).split(".")[0] not in DEFERRABLE]
    assert nested == []
