"""``semivdn metrics``: the workspace's DVC metrics as one narrow table, a row per number.

``dvc metrics show`` puts every metric of every file in one row, far wider than a
terminal; here each file's nested keys become ``a.b`` rows, so the table fits 100 columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

WIDTH = 100


def _rows(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(_rows(value, f"{name}."))
        elif isinstance(value, float):
            rows.append((name, f"{value:.4g}"))
        elif isinstance(value, int | bool) or value is None:
            rows.append((name, str(value)))
    return rows


def metrics_table(metrics: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Lines ``file  metric  value``, at most ``WIDTH`` wide; text values (run ids, paths) are left out.

    A metric name too long for its column is shortened from the left, keeping its last keys.
    """
    rows = [(path, *row) for path, entry in sorted(metrics.items()) for row in _rows(entry.get("data", {}))]
    missing = [f"{path}: not found (run the pipeline or `dvc pull`)" for path, entry in sorted(metrics.items())
               if "error" in entry]
    if not rows:
        return missing
    path_w = max(len(r[0]) for r in rows)
    value_w = max(len(r[2]) for r in rows)
    name_w = min(max(len(r[1]) for r in rows), WIDTH - path_w - value_w - 2)
    lines = []
    for path, name, value in rows:
        shown = name if len(name) <= name_w else "…" + name[len(name) - name_w + 1:]
        lines.append(f"{path:<{path_w}} {shown:<{name_w}} {value:>{value_w}}")
    return lines + missing


def print_summary(root: Path) -> None:
    """Print the metrics of the DVC repository at ``root`` (its workspace, as ``dvc metrics show``)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        shown = repo.metrics.show()
    print("\n".join(metrics_table(shown.get("", {}).get("data", {}))))
