"""The glue every Kubeflow component shares (components/step.py): a scoped tracking URI and the local truth folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from components.footage import footage_sensor
from components.step import TEST_SPLIT, TRACKING_URI_ENV, local_truth
from semivdn import storage

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


@pytest.mark.parametrize("before", [None, "sqlite:///elsewhere.db"])
def test_a_steps_tracking_uri_is_used_by_its_command_and_leaves_the_environment_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: str | None) -> None:
    if before is None:
        monkeypatch.delenv(TRACKING_URI_ENV, raising=False)
    else:
        monkeypatch.setenv(TRACKING_URI_ENV, before)
    (tmp_path / "incoming").mkdir()
    store = tmp_path / "step.db"
    assert footage_sensor(str(tmp_path / "incoming"), str(PARAMS), "smoke", f"sqlite:///{store}") == "sweep"
    assert store.is_file()  # the sensor asked this store for a champion
    assert os.environ.get(TRACKING_URI_ENV) == before


def test_a_local_truth_folder_is_used_as_it_is_and_an_empty_one_is_an_error(tmp_path: Path) -> None:
    truth = tmp_path / "real_truth"
    with pytest.raises(storage.StorageError, match="folder not found"), local_truth(str(truth), str(PARAMS), "smoke"):
        pass
    (truth / TEST_SPLIT / "clip_000").mkdir(parents=True)
    with pytest.raises(storage.StorageError, match="no held-back"), local_truth(str(truth), str(PARAMS), "smoke"):
        pass
    (truth / TEST_SPLIT / "clip_000" / "000.png").write_bytes(b"png")
    with local_truth(str(truth), str(PARAMS), "smoke") as folder:
        assert folder == str(truth)
    assert (truth / TEST_SPLIT / "clip_000" / "000.png").is_file()  # nothing of the user's is removed
