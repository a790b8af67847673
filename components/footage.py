"""Footage sensor and staging: the entry of the scheduled retraining pipeline.

Component functions are plain Python (Kubeflow serializes their source into the
step): imports live inside them, and each runs one ``semivdn footage`` command.
"""

from kfp.dsl import Dataset, Output


def footage_sensor(footage_uri: str, params_file: str, profile: str, mlflow_tracking_uri: str) -> str:
    """``semivdn footage check``: ``sweep``, ``retrain`` or ``skip`` (footage fingerprint vs the champion's tag)."""
    from components.step import run_semivdn

    decision = run_semivdn(["footage", "check", "--footage", footage_uri], params_file, profile, mlflow_tracking_uri)
    return decision.action


def fingerprint_data(raw_uri: str, footage_uri: str, params_file: str, profile: str) -> str:
    """``semivdn footage fingerprint``: the content of the raw data and the footage, ingestion's cache key."""
    from components.step import run_semivdn

    content = run_semivdn(["footage", "fingerprint", "--raw", raw_uri, "--footage", footage_uri], params_file, profile)
    return content["data_fingerprint"]


def ingest_footage(raw_uri: str, footage_uri: str, data_fingerprint: str, params_file: str, profile: str,
                   raw: Output[Dataset]) -> str:
    """``semivdn footage stage``: the raw data plus the footage in its real train split; the footage fingerprint.

    ``data_fingerprint`` (of :func:`fingerprint_data`) makes the step's cache key the content of its
    inputs, not their names: an unchanged rerun reuses it, and curation after it.
    """
    from components.step import run_semivdn

    staged = run_semivdn(["footage", "stage", "--raw", raw_uri, "--footage", footage_uri, "--out", raw.path],
                         params_file, profile)
    raw.metadata.update({"source": raw_uri, "footage": footage_uri, "footage_files": len(staged.clips),
                         "footage_fingerprint": staged.fingerprint, "data_fingerprint": data_fingerprint})
    return staged.fingerprint
