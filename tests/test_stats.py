"""Bootstrap intervals over clips (semivdn.eval.stats) on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from semivdn.eval.stats import bootstrap_mean, paired_difference


def test_interval_of_a_normal_sample_matches_the_textbook_width() -> None:
    """For n clips of spread σ the 95 % interval of the mean is ≈ mean ± 1.96 σ / √n."""
    rng = np.random.default_rng(1)
    values = rng.normal(25.0, 2.0, size=400)
    interval = bootstrap_mean(values, resamples=4000, confidence=0.95, seed=0)
    half = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert interval.mean == pytest.approx(values.mean())
    assert interval.low == pytest.approx(values.mean() - half, abs=0.25 * half)
    assert interval.high == pytest.approx(values.mean() + half, abs=0.25 * half)
    assert interval.n == 400 and interval.confidence == 0.95


def test_constant_values_have_no_spread_and_one_clip_has_no_interval() -> None:
    interval = bootstrap_mean([3.0] * 5)
    assert (interval.mean, interval.low, interval.high) == (3.0, 3.0, 3.0)
    single = bootstrap_mean([7.0])
    assert (single.mean, single.low, single.high, single.significant) == (7.0, None, None, False)
    assert single.format(2) == "7.00 (n=1, no interval)"


def test_pairing_resolves_a_shift_that_separate_intervals_cannot() -> None:
    """Clips differ by ±3 dB among themselves; the method adds +0.3 dB ± 0.05 on each: significant when paired."""
    rng = np.random.default_rng(2)
    base = rng.normal(22.0, 3.0, size=12)
    better = base + 0.3 + rng.normal(0, 0.05, size=12)
    separate = bootstrap_mean(better), bootstrap_mean(base)
    assert separate[0].low < separate[1].high  # the two intervals overlap
    difference = paired_difference(better, base, seed=0)
    assert difference.mean == pytest.approx(0.3, abs=0.05)
    assert difference.significant and 0.2 < difference.low < 0.3 < difference.high < 0.4
    noise = paired_difference(base + rng.normal(0, 0.1, size=12), base, seed=0)
    assert not noise.significant  # a candidate equal to the champion plus noise
    assert bootstrap_mean(better, seed=5) == bootstrap_mean(better, seed=5)  # seeded: reproducible


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="same clips"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        bootstrap_mean([1.0, float("nan")])
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_mean([])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_mean([1.0, 2.0], confidence=1.0)
