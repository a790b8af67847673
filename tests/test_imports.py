"""The import graph of the project's own packages (tests/importgraph.py: an AST walk, lazy imports included).

Layers: ``semivdn`` (the library) < ``components`` (Kubeflow steps) < ``pipelines``
(the DAG and its console script). A module may import its own layer or lower
ones, never a higher one, and no chain of imports may lead back to where it started.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from importgraph import cycles, import_graph, project_modules

LAYER = {"semivdn": 0, "components": 1, "pipelines": 2}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(project_modules())


def test_graph_sees_the_known_edges(graph: dict[str, set[str]]) -> None:
    """Guard against a walker that finds nothing: top-level, lazy and relative imports are all seen."""
    assert len(graph) > 30
    assert "semivdn.config" in graph["semivdn.cli"]  # top level
    assert "semivdn.train" in graph["semivdn.cli"]  # inside a handler
    assert "components.build" in graph["pipelines.semivdn_pipeline"]


def test_walker_finds_a_planted_cycle_and_upward_import(tmp_path: Path) -> None:
    (tmp_path / "semivdn").mkdir()
    (tmp_path / "semivdn" / "__init__.py").write_text("")
    (tmp_path / "semivdn" / "a.py").write_text("def f():\n    from . import b\n")
    (tmp_path / "semivdn" / "b.py").write_text("from semivdn.a import f\nimport pipelines.run\n")
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "run.py").write_text("")
    names = {"semivdn": tmp_path / "semivdn" / "__init__.py", "semivdn.a": tmp_path / "semivdn" / "a.py",
             "semivdn.b": tmp_path / "semivdn" / "b.py", "pipelines.run": tmp_path / "pipelines" / "run.py"}
    planted = import_graph(names)
    assert planted["semivdn.a"] == {"semivdn.b"}
    assert planted["semivdn.b"] == {"semivdn.a", "pipelines.run"}
    assert cycles(planted) == [["semivdn.a", "semivdn.b"]]


def test_no_import_reaches_a_higher_layer(graph: dict[str, set[str]]) -> None:
    upward = sorted(f"{source} -> {target}" for source, targets in graph.items() for target in targets
                    if LAYER[target.split(".")[0]] > LAYER[source.split(".")[0]])
    assert upward == []


def test_the_model_layer_does_not_know_the_registry(graph: dict[str, set[str]]) -> None:
    found = sorted(f"{source} -> {target}" for source, targets in graph.items() for target in targets
                   if source.startswith("semivdn.models") and target == "semivdn.registry")
    assert found == []


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    assert cycles(graph) == []
