"""The package's layout (issue 19): no import circles between its modules, and few floors of imports.

Only module-level imports count (a function may import lazily, at call time, from anywhere). A module
that imports ``memalign_graph.a.b`` depends on ``a.b``; ``from memalign_graph.a import b`` on ``a.b``
when ``b`` is a module, else on ``a``.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import memalign_graph

PACKAGE = Path(memalign_graph.__file__).parent
MAX_FLOORS = 11
"""Modules in the longest chain of module-level imports (11 at the landing of issues 19-24)."""


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("memalign_graph", *path.relative_to(PACKAGE).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports at module level."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("memalign_graph"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    deps.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                deps |= {alias.name for alias in node.names if alias.name in modules}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def test_no_module_imports_itself_back() -> None:
    graph = import_graph()
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise AssertionError("import circle: " + " -> ".join((*path[path.index(name) :], name)))
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, (*path, name))
        done.add(name)

    for name in sorted(graph):
        visit(name, ())


def test_the_longest_chain_of_imports_stays_short() -> None:
    graph = import_graph()

    @functools.cache
    def floors(name: str) -> int:
        return 1 + max((floors(dep) for dep in graph[name]), default=0)

    top = max(graph, key=floors)
    chain = [top]
    while graph[chain[-1]]:
        chain.append(max(graph[chain[-1]], key=floors))
    assert floors(top) <= MAX_FLOORS, " -> ".join(chain)


def test_names_that_moved_rooms_are_still_found_where_they_were() -> None:
    """Splitting graph.py, calibration.py and importers.py moved names; importing them from the old module works."""
    import importlib
    import warnings

    from memalign_graph import align_graph, graph, importers, judge_graph, memory_head, nodes, review_graph

    for module in (judge_graph, align_graph, review_graph, nodes):
        for name in graph.__all__:
            if hasattr(module, name):
                assert getattr(graph, name) is getattr(module, name), name
    assert {"judge", "retrieve_principles", "align_commit", "collect_feedback", "decide_held"} <= set(graph.__all__)
    assert importers.from_mlflow.__module__ == "memalign_graph.importers.mlflow"
    from memalign_graph.backends import names, postgres, store

    for name in ("redact", "split_url", "is_postgres_url", "JudgeNameError", "MAX_JUDGE_CHARS"):
        assert getattr(postgres, name) is getattr(names, name), name
    for name in ("store_label", "judge_from_label", "is_store_location", "store_judge", "STORE_PARAM"):
        assert getattr(store, name) is getattr(names, name), name
    from memalign_graph import alignment, alignment_report, calibration, head_features

    assert alignment.AlignmentReport is alignment_report.AlignmentReport and alignment.Phases is alignment_report.Phases

    assert calibration.build_features is head_features.build_features
    assert calibration.text_statistics is head_features.text_statistics

    calibration = importlib.import_module("memalign_graph.calibration")
    for name in ("fit_memory_head", "calibrate", "Verdict", "report"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert getattr(calibration, name) is getattr(memory_head, name)
        assert any(issubclass(w.category, DeprecationWarning) and "memory_head" in str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unknown name is an AttributeError, with no warning first
        try:
            calibration.no_such_name  # noqa: B018
        except AttributeError as exc:
            assert "no_such_name" in str(exc)
        else:
            raise AssertionError("calibration.no_such_name resolved")
