"""Registration of the candidate in the MLflow registry and the promotion gate."""

from kfp.dsl import Dataset, Input, Model


def register_candidate(models: Input[list[Model]], evaluations: Input[list[Dataset]], candidate: str,
                       footage_fingerprint: str, params_file: str, profile: str, mlflow_tracking_uri: str) -> int:
    """``semivdn register`` the ``candidate`` variant, tagged with the footage it was trained on; return its version."""
    import json

    from components.step import checkpoint, run_semivdn

    chosen = [m for m in models if m.metadata.get("variant") == candidate]
    evaluated = [e for e in evaluations if e.metadata.get("name") == candidate]
    if len(chosen) != 1 or len(evaluated) != 1:
        raise ValueError(f"candidate {candidate!r}: expected one trained model and one evaluation, got models "
                         f"{[m.metadata.get('variant') for m in models]} and evaluations "
                         f"{[e.metadata.get('name') for e in evaluations]}")
    result = run_semivdn(["register", "--model", checkpoint(chosen[0]), "--variant", candidate,
                          "--eval", evaluated[0].path], params_file, profile, mlflow_tracking_uri)
    print(json.dumps(result, indent=2, default=str))
    version = int(result["version"])
    run_semivdn(["footage", "record", "--version", str(version), "--fingerprint", footage_fingerprint],
                params_file, profile, mlflow_tracking_uri)
    return version


def promote_candidate(version: int, raw: Input[Dataset], curated: Input[Dataset], truth_uri: str, params_file: str,
                      profile: str, mlflow_tracking_uri: str) -> bool:
    """``semivdn promote``: re-scores candidate and champion on this run's test data (the proxy-real domain against
    the held-back frames at ``truth_uri``); the gate moves ``champion`` only if the candidate's gain is significant
    (semivdn/eval/gate.py)."""
    import json
    import tempfile

    from components.step import local_truth, run_semivdn

    with tempfile.TemporaryDirectory(prefix="promote-") as out, local_truth(truth_uri, params_file, profile) as truth:
        result = run_semivdn(["promote", "--raw", raw.path, "--curated", curated.path, "--truth", truth, "--out", out],
                             params_file, profile, mlflow_tracking_uri)
    print(json.dumps(result, indent=2, default=str))
    if int(result["candidate"]) != version:
        raise RuntimeError(f"promote judged version {result['candidate']}, but this run registered version {version}: "
                           "another run moved the candidate alias meanwhile")
    return bool(result["promoted"])
