"""Training: one component for every variant of the ablation (M1, M2 warm-up, M3, full).

The variants differ only in params (``variants.<name>``) and in where they
start, so one component with a ``variant`` input serves all four steps.
"""

from kfp.dsl import Dataset, Input, Metrics, Model, Output


def train_variant(variant: str, raw: Input[Dataset], curated: Input[Dataset], params_file: str, profile: str,
                  mlflow_tracking_uri: str, model: Output[Model], metrics: Output[Metrics],
                  init: Input[Model] | None = None, init_ref: str = "") -> None:
    """``semivdn train``: from scratch, from the ``init`` model artifact, or from ``init_ref`` (models:/NAME@ALIAS)."""
    from pathlib import Path

    from components.step import checkpoint, log_json_metrics, run_semivdn

    if init is not None and init_ref:
        raise ValueError(f"train {variant}: give the init model artifact or init_ref ({init_ref}), not both")
    start = checkpoint(init) if init is not None else init_ref
    metrics_file = Path(model.path) / "metrics.json"
    run_semivdn(["train", "--variant", variant, "--raw", raw.path, "--curated", curated.path, "--out", model.path,
                 "--metrics", str(metrics_file), *(["--init", start] if start else [])],
                params_file, profile, mlflow_tracking_uri)
    checkpoint(model)  # raises if training wrote no weights
    model.metadata.update({"variant": variant, "init": start or "none"})
    log_json_metrics(metrics, metrics_file)
