"""The layers of the library import only downward, and no module imports itself back.

Layers (docs/architecture.md): games and solvers -> environments -> agents -> arena -> zoo. The
graph is read from the source (every ``import``, also inside functions), so a lazy import that goes
up a layer fails here as an eager one would.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nlhf_envs", "agents")

#: module-name prefix -> layer (the longest matching prefix wins)
LAYERS: dict[str, int] = {
    "nlhf_envs.errors": 0,
    "nlhf_envs.atomic": 0,
    "nlhf_envs.archives": 0,
    "nlhf_envs.game": 0,
    "nlhf_envs.solvers": 0,
    "nlhf_envs.families": 0,
    "nlhf_envs.catalog": 0,
    "nlhf_envs.intransitivity": 0,
    "nlhf_envs.rewards": 0,
    "nlhf_envs.env_ids": 0,
    "nlhf_envs.openspiel": 0,  # conversions of PreferenceGame data (pyspiel imported lazily)
    "nlhf_envs": 1,
    "agents": 2,
    "agents.arena": 3,
    "agents.zoo": 4,
    "agents.cli": 4,  # ``python -m agents.cli``: the zoo's command-line entry point
}
LAYER_NAMES = ("games and solvers", "environments", "agents", "arena", "zoo")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _target(name: str) -> str | None:
    """The most specific known module of an imported dotted name."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{base}" if base else pkg
            names = [f"{base}.{a.name}" for a in node.names]
        for name in names:
            target = _target(name)
            if target is not None and target != module:
                out.add(target)
    return out


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def test_the_graph_is_read():
    assert len(MODULES) > 60
    assert "agents.arena" in GRAPH["agents.zoo.tournament"]  # a lazy import, inside a function
    assert "nlhf_envs.players" in GRAPH["nlhf_envs.gym_views"]


def test_environments_never_import_agents():
    bad = {m: sorted(t for t in ts if t.startswith("agents")) for m, ts in GRAPH.items()}
    bad = {m: ts for m, ts in bad.items() if m.startswith("nlhf_envs") and ts}
    assert bad == {}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module):
    up = [t for t in GRAPH[module] if layer(t) > layer(module)]
    assert up == [], (
        f"{module} ({LAYER_NAMES[layer(module)]}) imports the higher layer(s) "
        f"{[(t, LAYER_NAMES[layer(t)]) for t in up]}"
    )


def test_no_module_imports_its_own_package_facade():
    """A module inside ``agents`` importing the ``agents`` package (``import agents``) would cycle
    through the package's ``__init__`` re-exports."""
    bad = []
    for module, targets in GRAPH.items():
        if MODULES[module].name == "__init__.py":
            continue
        for t in targets:
            if (
                MODULES[t].name == "__init__.py"
                and module.startswith(t + ".")
                and layer(t) == layer(module)
            ):
                bad.append((module, t))
    assert bad == []


def test_no_import_cycles_outside_package_reexports():
    # package __init__ modules only re-export: their outgoing edges are not part of a cycle
    graph = {m: set(ts) if MODULES[m].name != "__init__.py" else set() for m, ts in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(u: str) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v) :] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert cycles == []


def test_agent_files_do_not_import_each_other():
    algorithms = {
        "agents.nash_mp",
        "agents.nash_md",
        "agents.online_ipo",
        "agents.mmd",
        "agents.omwu",
        "agents.egpo",
        "agents.inpo",
        "agents.sppo",
        "agents.mnpo",
        "agents.nash_prox",
        "agents.text.mnpo",
        "agents.text.nash_prox",
        "agents.text.nash_mp",
        "agents.text.nash_md",
        "agents.text.online_ipo",
    }
    bad = {m: sorted(GRAPH[m] & algorithms) for m in algorithms if GRAPH[m] & algorithms}
    assert bad == {}
