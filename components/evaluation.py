"""Evaluation of one model or baseline, and the ablation report over all of them."""

from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output


def evaluate_model(name: str, raw: Input[Dataset], curated: Input[Dataset], truth_uri: str, params_file: str,
                   profile: str, mlflow_tracking_uri: str, evaluation: Output[Dataset], metrics: Output[Metrics],
                   model: Input[Model] | None = None, baseline: str = "") -> None:
    """``semivdn evaluate`` on the test split: a trained ``model`` artifact or a ``baseline`` (input, median3).

    ``truth_uri``: the proxy-real clips' held-back clean frames (local or S3), for the real domain's PSNR/SSIM.
    """
    from pathlib import Path

    from components.step import TEST_SPLIT, checkpoint, local_truth, log_json_metrics, run_semivdn

    if (model is None) == (not baseline):
        raise ValueError(f"evaluate {name}: give exactly one of a model artifact or a baseline, got "
                         f"model={'set' if model is not None else 'none'}, baseline={baseline!r}")
    reference = checkpoint(model) if model is not None else baseline
    with local_truth(truth_uri, params_file, profile) as truth:
        run_semivdn(["evaluate", "--model", reference, "--name", name, "--split", TEST_SPLIT, "--raw", raw.path,
                     "--curated", curated.path, "--truth", truth, "--out", evaluation.path],
                    params_file, profile, mlflow_tracking_uri)
    evaluation.metadata.update({"name": name, "model": reference})
    log_json_metrics(metrics, Path(evaluation.path) / "summary.json")


def ablation_report(baselines: Input[list[Dataset]], m1: Input[Dataset], m2: Input[Dataset],
                    semi_supervised: Input[list[Dataset]], params_file: str, profile: str,
                    report_md: Output[Markdown], report_html: Output[HTML], quality: Output[Metrics]) -> None:
    """``semivdn report``: the paper's Table 2 layout, rows in order baselines, M1, M2, semi-supervised."""
    import shutil
    import tempfile
    from pathlib import Path

    from components.step import log_json_metrics, run_semivdn

    evaluations = [e.path for e in [*baselines, m1, m2, *semi_supervised]]
    with tempfile.TemporaryDirectory(prefix="report-") as out:
        quality_file = Path(out) / "quality.json"
        run_semivdn(["report", *evaluations, "--out", out, "--quality", str(quality_file)], params_file, profile)
        shutil.copyfile(Path(out) / "ablation.md", report_md.path)
        shutil.copyfile(Path(out) / "ablation.html", report_html.path)
        log_json_metrics(quality, quality_file)
