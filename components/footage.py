"""Footage sensor and ingestion: the entry of the scheduled retraining pipeline.

Component functions are plain Python (Kubeflow serializes their source into the
step): imports live inside them, and all logic is in :mod:`semivdn.footage`.
"""

from kfp.dsl import Dataset, Output


def footage_sensor(footage_uri: str, params_file: str, profile: str, mlflow_tracking_uri: str) -> str:
    """Compare the footage fingerprint with the champion's tag: ``sweep``, ``retrain`` or ``skip``."""
    from components.step import configure
    from semivdn.footage import decide

    return decide(configure(params_file, profile, mlflow_tracking_uri), footage_uri).action


def ingest_footage(raw_uri: str, footage_uri: str, params_file: str, profile: str, raw: Output[Dataset]) -> str:
    """Copy the raw data and add the new footage to its real train split; return the footage fingerprint."""
    from pathlib import Path

    from components.step import configure
    from semivdn.footage import ingest

    result = ingest(configure(params_file, profile), footage_uri, raw_uri, Path(raw.path))
    raw.metadata.update({"source": raw_uri, "footage": footage_uri, "footage_files": len(result.clips),
                         "footage_fingerprint": result.fingerprint})
    return result.fingerprint
