"""The ablation report in the layout of the paper's Table 2, beside the published numbers.

Rows: the two baselines (input, median3) and the variants (M1, M2, M3, full); columns
Method | TDE | SST | DCR | PSNR↑ | SSIM↑ | LPIPS↓ | NIMA↑ | MUSIQ↑. Under each row
that the paper reports, its published value (RVSD for the paired metrics,
Realsnow85 for NIMA/MUSIQ; the input row from Table 1). A metric we could not
compute is "n/a" with a numbered note giving the reason, never a number. Writes
``ablation.md`` (grids copied next to it), a self-contained ``ablation.html`` (grids
embedded) and the DVC metrics file ``quality.json``.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow

from semivdn.config import Config
from semivdn.eval.evaluate import GRIDS
from semivdn.eval.specs import METRIC_ORDER, METRICS, SUMMARY_FILE
from semivdn.tracking import configure_mlflow

PAPER_LABEL = "paper, RVSD / Realsnow85"
# Published values (PSNR, SSIM, LPIPS, NIMA, MUSIQ): input from Table 1, M1..full from Table 2.
# M1's NIMA is not legible in the published Table 2.
PAPER: dict[str, tuple[float | None, ...]] = {
    "input": (18.37, 0.7792, 0.3095, 4.075, 48.64),
    "M1": (24.41, 0.9116, 0.0932, None, 49.53),
    "M2": (25.16, 0.9217, 0.0822, 4.212, 50.69),
    "M3": (25.29, 0.9237, 0.0806, 4.239, 51.05),
    "full": (25.68, 0.9254, 0.0785, 4.259, 51.57),
}
DECIMALS = {"psnr": 2, "ssim": 4, "lpips": 4, "nima": 3, "musiq": 2}  # the paper's precision
DISPLAY = {"full": "SemiVDN (full)"}
BASELINE_ROWS = ("input", "median3")
COMPONENTS = (("TDE", "tde"), ("SST", "mean_teacher"), ("DCR", "dcr"))


@dataclass(frozen=True)
class Row:
    name: str
    summary: dict[str, Any]
    eval_dir: Path


def _header() -> list[str]:
    arrows = [f"{name.upper()}{'↓' if METRICS[name].lower_better else '↑'}" for name in METRIC_ORDER]
    return ["Method", *(label for label, _ in COMPONENTS), *arrows]


def _load_rows(cfg: Config, eval_dirs: list[Path]) -> list[Row]:
    rows: dict[str, Row] = {}
    for eval_dir in eval_dirs:
        path = eval_dir / SUMMARY_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no evaluation summary; run `semivdn evaluate --out {eval_dir}` first")
        summary = json.loads(path.read_text())
        name = summary.get("name")
        if not isinstance(name, str) or name == "unavailable":
            raise ValueError(f"{path}: invalid row name {name!r}")
        if name in rows:
            raise ValueError(f"row {name!r} comes from both {rows[name].eval_dir} and {eval_dir}; use evaluate --name")
        rows[name] = Row(name, summary, eval_dir)
    order = [*BASELINE_ROWS, *cfg.variants]
    return sorted(rows.values(), key=lambda row: order.index(row.name) if row.name in order else len(order))


class _Notes:
    """Numbered notes: one number per distinct reason."""

    def __init__(self) -> None:
        self.reasons: dict[str, int] = {}
        self.uses: dict[int, list[str]] = {}

    def mark(self, reason: str, where: str) -> int:
        number = self.reasons.setdefault(reason, len(self.reasons) + 1)
        self.uses.setdefault(number, []).append(where)
        return number

    def lines(self) -> list[str]:
        return [f"[{n}] {', '.join(self.uses[n])}: {reason}" for reason, n in self.reasons.items()]


def _cells(cfg: Config, row: Row, notes: _Notes) -> list[str]:
    variant = cfg.variants.get(str(row.summary.get("variant")))
    checks = ["✓" if variant is not None and getattr(variant, field) else "" for _, field in COMPONENTS]
    values = []
    for name in METRIC_ORDER:
        value = row.summary.get(name)
        if value is None:
            reason = row.summary.get("unavailable", {}).get(name, "not in the evaluation summary")
            values.append(f"n/a [{notes.mark(reason, f'{row.name} {name}')}]")
        else:
            values.append(f"{value:.{DECIMALS[name]}f}")
    return [DISPLAY.get(row.name, row.name), *checks, *values]


def _paper_cells(name: str) -> list[str] | None:
    if name not in PAPER:
        return None
    values = [("—" if v is None else f"{v:.{DECIMALS[m]}f}") for m, v in zip(METRIC_ORDER, PAPER[name], strict=True)]
    return [f"↳ {PAPER_LABEL}", "", "", "", *values]


def _table(cfg: Config, rows: list[Row]) -> tuple[list[list[str]], list[str]]:
    notes = _Notes()
    lines: list[list[str]] = []
    for row in rows:
        lines.append(_cells(cfg, row, notes))
        paper = _paper_cells(row.name)
        if paper is not None:
            lines.append(paper)
    return lines, notes.lines()


def _copy_grids(rows: list[Row], out_dir: Path) -> dict[str, list[tuple[str, Path]]]:
    """Copy each row's grids to ``out_dir/grids/<row>/``; returns {clip file: [(row, copy)]} in row order."""
    shutil.rmtree(out_dir / GRIDS, ignore_errors=True)  # no stale grids of rows that are gone
    grids: dict[str, list[tuple[str, Path]]] = {}
    for row in rows:
        for path in sorted((row.eval_dir / GRIDS).glob("*.png")):
            copy = out_dir / GRIDS / row.name / path.name
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
            grids.setdefault(path.name, []).append((row.name, copy))
    return grids


def _markdown(cfg: Config, table: list[list[str]], notes: list[str], grids: dict[str, list[tuple[str, Path]]],
              out_dir: Path) -> str:
    header = _header()
    lines = ["# SemiVDN ablation (paper Table 2 layout)", "",
             f"Profile `{cfg.profile}`. TDE: temporal decoupling experts; SST: semi-supervised training "
             f"(mean teacher); DCR: distribution-driven contrastive regularization. Rows marked "
             f"\"{PAPER_LABEL}\" are the published numbers on the paper's datasets, not on ours.", "",
             "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [":-:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in table]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    if grids:
        lines += ["", "## Image grids (input | output | ground truth, middle frame)", ""]
        for clip, entries in grids.items():
            lines.append(f"### {clip.removesuffix('.png').replace('__', '/')}")
            lines.append("")
            for row_name, path in entries:
                lines.append(f"{row_name}: ![{row_name} {clip}]({path.relative_to(out_dir).as_posix()})")
                lines.append("")
    return "\n".join(lines) + "\n"


def _html(cfg: Config, table: list[list[str]], notes: list[str], grids: dict[str, list[tuple[str, Path]]]) -> str:
    def row_html(cells: list[str], tag: str, paper: bool = False) -> str:
        style = ' class="paper"' if paper else ""
        return f"<tr{style}>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>"

    body = [row_html(_header(), "th")] + [row_html(c, "td", c[0].startswith("↳")) for c in table]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>SemiVDN ablation</title><style>",
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #999;"
        "padding:4px 8px;text-align:center}tr.paper td{color:#666;font-style:italic}img{image-rendering:pixelated}",
        "</style></head><body><h1>SemiVDN ablation (paper Table 2 layout)</h1>",
        f"<p>Profile <code>{html.escape(cfg.profile)}</code>. Rows marked &ldquo;{html.escape(PAPER_LABEL)}"
        "&rdquo; are the published numbers on the paper's datasets, not on ours.</p>",
        "<table>", *body, "</table>",
    ]
    if notes:
        parts += ["<h2>Notes</h2><ul>", *(f"<li>{html.escape(n)}</li>" for n in notes), "</ul>"]
    if grids:
        parts.append("<h2>Image grids (input | output | ground truth, middle frame)</h2>")
        for clip, entries in grids.items():
            parts.append(f"<h3>{html.escape(clip.removesuffix('.png').replace('__', '/'))}</h3>")
            for row_name, path in entries:
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(row_name)}'>"
                             f"<figcaption>{html.escape(row_name)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _quality(rows: list[Row]) -> dict[str, Any]:
    """The DVC metrics file: each row's five numbers (null when unavailable) and the reasons."""
    quality: dict[str, Any] = {row.name: {m: row.summary.get(m) for m in METRIC_ORDER} for row in rows}
    reasons: dict[str, list[str]] = {}
    for row in rows:
        for metric in METRIC_ORDER:
            reason = row.summary.get("unavailable", {}).get(metric)
            if row.summary.get(metric) is None and reason and reason not in reasons.setdefault(metric, []):
                reasons[metric].append(reason)
    quality["unavailable"] = {metric: "; ".join(texts) for metric, texts in reasons.items() if texts}
    return quality


def _log_to_mlflow(cfg: Config, quality: dict[str, Any], out_dir: Path, quality_json: Path) -> str:
    configure_mlflow(cfg)
    with mlflow.start_run(run_name="ablation-report") as run:
        metrics = {f"{row}_{m}": value for row, values in quality.items() if row != "unavailable"
                   for m, value in values.items() if value is not None}
        mlflow.log_metrics(metrics)
        mlflow.set_tags({f"unavailable.{m}": reason[:5000] for m, reason in quality["unavailable"].items()})
        mlflow.log_artifacts(str(out_dir), artifact_path="report")
        mlflow.log_artifact(str(quality_json), artifact_path="report")
        return run.info.run_id


def build_report(cfg: Config, eval_dirs: list[Path], out_dir: Path, quality_json: Path) -> dict[str, Any]:
    """Write ``ablation.md``, ``ablation.html`` and ``quality_json`` from evaluation folders; log them."""
    if not eval_dirs:
        raise ValueError("build_report needs at least one evaluation folder")
    rows = _load_rows(cfg, eval_dirs)
    table, notes = _table(cfg, rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    grids = _copy_grids(rows, out_dir)
    markdown_path, html_path = out_dir / "ablation.md", out_dir / "ablation.html"
    markdown_path.write_text(_markdown(cfg, table, notes, grids, out_dir))
    html_path.write_text(_html(cfg, table, notes, grids))
    quality = _quality(rows)
    quality_json.parent.mkdir(parents=True, exist_ok=True)
    quality_json.write_text(json.dumps(quality, indent=2) + "\n")
    run_id = _log_to_mlflow(cfg, quality, out_dir, quality_json)
    return {"rows": [row.name for row in rows], "markdown": str(markdown_path), "html": str(html_path),
            "quality": str(quality_json), "unavailable": quality["unavailable"], "mlflow_run_id": run_id}
