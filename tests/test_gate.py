"""The promotion rule (semivdn.eval.gate.judge) on per-clip tables with known answers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from semivdn.config import METRIC_NAMES, Config, ConfigError, Promote
from semivdn.eval.gate import judge
from semivdn.eval.specs import METRICS

CLIPS = 12


def _table(real_psnr: np.ndarray, paired_psnr: np.ndarray | None = None, niqe: float = 5.0) -> pd.DataFrame:
    paired = paired_psnr if paired_psnr is not None else np.full(CLIPS, 25.0)
    rows = [{"clip_id": f"paired/test/clip_{i:03d}", "source": "paired", "frames": 12, "truth": True,
             "psnr": paired[i], "ssim": 0.9} for i in range(CLIPS)]
    rows += [{"clip_id": f"real/test/clip_{i:03d}", "source": "real", "frames": 12, "truth": True,
              "psnr": real_psnr[i], "ssim": 0.8, "niqe": niqe} for i in range(CLIPS)]
    return pd.DataFrame(rows)


@pytest.fixture()
def champion() -> np.ndarray:
    return np.random.default_rng(0).normal(21.0, 2.5, CLIPS)  # clips differ a lot among themselves


def test_the_champion_plus_noise_is_rejected(smoke_cfg: Config, champion: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    for trial in range(5):  # whatever the luck of the draw, noise never clears the lower bound
        candidate = champion + rng.normal(0.0, 0.3, CLIPS)
        decision = judge(_table(candidate), _table(champion), smoke_cfg)
        assert not decision.promoted, (trial, decision.reasons)
        assert decision.checks["real_psnr"]["low"] < 0 and not decision.checks["real_psnr"]["passed"]


def test_a_clearly_better_candidate_is_promoted(smoke_cfg: Config, champion: np.ndarray) -> None:
    candidate = champion + 0.6 + np.random.default_rng(2).normal(0.0, 0.1, CLIPS)
    decision = judge(_table(candidate), _table(champion), smoke_cfg)
    assert decision.promoted, decision.reasons
    assert decision.checks["real_psnr"]["low"] > 0.4
    assert decision.reasons[0].startswith("real_psnr: gain +0.6")


def test_min_gain_applies_to_the_lower_bound(smoke_cfg: Config, champion: np.ndarray) -> None:
    candidate = champion + 0.6 + np.random.default_rng(2).normal(0.0, 0.1, CLIPS)
    strict = dataclasses.replace(smoke_cfg, promote=dataclasses.replace(smoke_cfg.promote, min_gain=0.7))
    assert not judge(_table(candidate), _table(champion), strict).promoted  # the mean 0.6 < 0.7


def test_a_tracked_metric_dropping_beyond_its_tolerance_rejects(smoke_cfg: Config, champion: np.ndarray) -> None:
    better = champion + 1.0
    assert smoke_cfg.promote.tolerances["paired_psnr"] == 0.3 and smoke_cfg.promote.tolerances["real_niqe"] == 0.5
    paired_drop = judge(_table(better, paired_psnr=np.full(CLIPS, 24.5)), _table(champion), smoke_cfg)
    assert not paired_drop.promoted and any("paired_psnr" in r and "drops beyond" in r for r in paired_drop.reasons)
    niqe_rise = judge(_table(better, niqe=6.0), _table(champion), smoke_cfg)  # NIQE: lower is better
    assert not niqe_rise.promoted and not niqe_rise.checks["real_niqe"]["passed"]
    small = judge(_table(better, paired_psnr=np.full(CLIPS, 24.8), niqe=5.3), _table(champion), smoke_cfg)
    assert small.promoted, small.reasons


def test_a_candidate_that_harms_snow_free_clips_the_champion_leaves_alone_is_rejected(
        smoke_cfg: Config, champion: np.ndarray) -> None:
    better = _table(champion + 1.0)
    kind = {"meets_bar": True, "min_psnr_vs_input_db": 40.0}
    harmful = {"meets_bar": False, "min_psnr_vs_input_db": 26.5}
    assert judge(better, _table(champion), smoke_cfg, (kind, kind)).promoted
    rejected = judge(better, _table(champion), smoke_cfg, (harmful, kind))
    assert not rejected.promoted and not rejected.checks["do_no_harm"]["passed"]
    assert "26.5 dB" in rejected.reasons[-1] and "regression" in rejected.reasons[-1]
    assert judge(better, _table(champion), smoke_cfg, (harmful, harmful)).promoted  # no worse than the champion
    unknown = judge(better, _table(champion), smoke_cfg)
    assert unknown.promoted and "not compared" in unknown.reasons[-1]


def test_an_uncomputable_gate_rejects_and_different_clips_are_refused(smoke_cfg: Config,
                                                                      champion: np.ndarray) -> None:
    no_real = _table(champion)
    no_real = no_real[no_real.source == "paired"]
    decision = judge(no_real, no_real, smoke_cfg)
    assert not decision.promoted and "cannot judge" in decision.reasons[0]
    other = _table(champion).assign(clip_id=lambda t: t.clip_id.str.replace("clip", "shot"))
    with pytest.raises(ValueError, match="scored different clips"):
        judge(other, _table(champion), smoke_cfg)


def test_gate_keys_are_validated() -> None:
    assert set(METRIC_NAMES) == set(METRICS)  # config validates against the metric table without importing it
    with pytest.raises(ConfigError, match=r"promote\.gate"):
        Promote(gate="real_sharpness")
    with pytest.raises(ConfigError, match=r"promote\.tolerances\.real_psnr"):
        Promote(tolerances={"real_psnr": -1.0})
