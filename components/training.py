"""Training: one component for every variant of the ablation (M1, M2 warm-up, M3, full).

The variants differ only in params (``variants.<name>``) and in where they
start, so one component with a ``variant`` input serves all four steps.
"""

from kfp.dsl import Dataset, Input, Metrics, Model, Output


def train_variant(variant: str, raw: Input[Dataset], curated: Input[Dataset], params_file: str, profile: str,
                  mlflow_tracking_uri: str, checkpoint_root: str, run_id: str, processes: int,
                  model: Output[Model], metrics: Output[Metrics], init: Input[Model] | None = None,
                  init_ref: str = "") -> None:
    """``semivdn train``: from scratch, from the ``init`` model artifact, or from ``init_ref`` (models:/NAME@ALIAS).

    Checkpoints go to ``checkpoint_root/run_id/variant`` (a PVC on the cluster), which
    outlives the pod: a retried attempt resumes there instead of restarting at
    iteration 0. ``processes`` > 1 launches DDP with torchrun (one process per GPU).
    """
    import shutil
    from pathlib import Path

    from components.step import CHECKPOINT_FILE, checkpoint, log_json_metrics, run_semivdn, torchrun_semivdn

    if init is not None and init_ref:
        raise ValueError(f"train {variant}: give the init model artifact or init_ref ({init_ref}), not both")
    start = checkpoint(init) if init is not None else init_ref
    work = Path(checkpoint_root) / run_id / variant
    metrics_file = Path(model.path) / "metrics.json"
    argv = ["train", "--variant", variant, "--raw", raw.path, "--curated", curated.path, "--out", str(work),
            "--resume", "--metrics", str(metrics_file), *(["--init", start] if start else [])]
    if processes > 1:
        torchrun_semivdn(argv, processes, params_file, profile, mlflow_tracking_uri)
    else:
        run_semivdn(argv, params_file, profile, mlflow_tracking_uri)
    Path(model.path).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work / CHECKPOINT_FILE, Path(model.path) / CHECKPOINT_FILE)
    model.metadata.update({"variant": variant, "init": start or "none", "checkpoints": str(work)})
    log_json_metrics(metrics, metrics_file)
