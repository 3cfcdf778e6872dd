"""The package's import graph: layers that point one way, no circles, no private reach-ins.

Floors, lowest first (a module may import its own floor or lower ones, never higher):
0 maths and utilities, 1 the architecture, 2 models and data, 3 training, 4 analyses,
5 the command line. Read from the source with ast, so imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bae_lens"

FLOORS: dict[str, int] = {
    # 0: pure maths and process utilities
    "bae_lens.binarize": 0,
    "bae_lens.sparse_covariance": 0,
    "bae_lens.penalties": 0,
    "bae_lens.collectives": 0,
    "bae_lens.stages": 0,
    "bae_lens.runtime": 0,
    "bae_lens.config_args": 0,
    "bae_lens.safe_pickle": 0,
    "bae_lens.synthetic_sets": 0,
    # 1: the architectures, their registration, loading and splicing
    "bae_lens": 1,
    "bae_lens.bae": 1,
    "bae_lens.transcoders": 1,
    "bae_lens.io": 1,
    "bae_lens.hooks": 1,
    "bae_lens.train_step": 1,  # SAELens's step and the loss check the architectures run
    # 2: models and data
    "bae_lens.models": 2,
    "bae_lens.model_cache": 2,
    "bae_lens.corpus": 2,
    "bae_lens.corpus_build": 2,
    "bae_lens.debian_packages": 0,
    "bae_lens.sentiment_data": 2,
    "bae_lens.hidden_states": 2,
    # 3: training
    "bae_lens.train": 3,
    "bae_lens.resume": 3,
    "bae_lens.distributed": 3,
    "bae_lens.baselines": 3,
    "bae_lens.transcoder_training": 3,
    "bae_lens.activation_cache": 3,
    # 4: analyses
    "bae_lens.evaluate": 4,
    "bae_lens.splice_metrics": 4,
    "bae_lens.main_job": 4,
    "bae_lens.entropy": 4,
    "bae_lens.entropy_price": 4,
    "bae_lens.icl": 4,
    "bae_lens.compare": 4,
    "bae_lens.frontier": 4,
    "bae_lens.frontier_report": 4,
    "bae_lens.legacy": 4,
    "bae_lens.comsem": 4,
    "bae_lens.comsem.collect": 4,
    "bae_lens.comsem.judge": 4,
    "bae_lens.comsem.score": 4,
    "bae_lens.comsem.server": 4,
    "bae_lens.comsem.install": 4,
    "bae_lens.comsem.judges": 4,
    "bae_lens.comsem.calibrate": 4,
    "bae_lens.comsem.detect": 4,
    "bae_lens.feature_examples": 4,
    "bae_lens.dashboard": 4,
    "bae_lens.hub": 1,
}
CLI_FLOOR = 5


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _floor(module: str) -> int:
    if module == "bae_lens.cli" or module.startswith("bae_lens.cli."):
        return CLI_FLOOR
    return FLOORS[module]


def _imports(modules: dict[str, Path]) -> dict[str, set[tuple[str, str]]]:
    """module -> {(imported module, imported name or "")}."""
    edges: dict[str, set[tuple[str, str]]] = {}
    for name, path in modules.items():
        found: set[tuple[str, str]] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if not node.module.startswith("bae_lens"):
                    continue
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add((sub, "") if sub in modules else (node.module, alias.name))
            elif isinstance(node, ast.Import):
                found |= {(a.name, "") for a in node.names if a.name.startswith("bae_lens")}
        edges[name] = {(m, n) for m, n in found if m != name}
    return edges


MODULES = _modules()
EDGES = _imports(MODULES)


def test_every_module_has_a_floor() -> None:
    missing = [m for m in MODULES if not m.startswith("bae_lens.cli") and m not in FLOORS]
    assert not missing, f"give these modules a floor in FLOORS: {missing}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    up = [
        f"{target} (floor {_floor(target)})"
        for target, _ in EDGES[module]
        if _floor(target) > _floor(module)
    ]
    assert not up, f"{module} (floor {_floor(module)}) imports upwards: {up}"


def test_no_private_names_across_modules() -> None:
    reach_ins = [
        f"{module} imports {name} from {target}"
        for module, edges in EDGES.items()
        for target, name in edges
        if name.startswith("_")
    ]
    assert not reach_ins


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return cycles


def test_no_import_cycles() -> None:
    graph = {m: {t for t, _ in edges if t in MODULES} for m, edges in EDGES.items()}
    assert not find_cycles(graph), f"import cycles: {find_cycles(graph)}"


def test_the_checks_are_not_vacuous() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
    assert any(t == "bae_lens.bae" for t, _ in EDGES["bae_lens"])  # imports are read
    assert any(t == "bae_lens.main_job" for t, _ in EDGES["bae_lens.cli.train"])
    assert _floor("bae_lens.cli.train") > _floor("bae_lens.main_job")
