"""Curation: scan the raw data, validate it (great-expectations suite) and quarantine bad clips."""

from kfp.dsl import Dataset, Input, Markdown, Metrics, Output


def curate_data(raw: Input[Dataset], params_file: str, profile: str, curated: Output[Dataset],
                report: Output[Markdown], metrics: Output[Metrics]) -> None:
    """``semivdn data curate``: manifest.parquet, quarantine.csv and report.md in ``curated``."""
    import shutil
    from pathlib import Path

    from components.step import numeric_leaves, run_semivdn

    # the ingest step staged the footage into `raw` already
    summary = run_semivdn(["data", "curate", "--raw", raw.path, "--out", curated.path, "--footage", "none"],
                          params_file, profile)
    shutil.copyfile(Path(curated.path) / "report.md", report.path)
    for name, value in numeric_leaves(summary).items():
        metrics.log_metric(name, value)
