"""benchmarks/abstention.py: the two versions of a scene it compares the filmed clip with are what it says."""

import torch
from scripts import load_script

from semivdn.config import SnowParams

abstention = load_script("benchmarks/abstention.py")


def test_veil_only_is_the_truth_under_a_uniform_veil_and_paired_snow_adds_light() -> None:
    truth = torch.rand(4, 3, 40, 48, generator=torch.Generator().manual_seed(0)) * 0.6
    made = abstention.versions(truth, SnowParams(haze_range=(1.0, 1.0)), seed=3)
    colour = torch.tensor(abstention.VEIL_COLOUR).view(1, 3, 1, 1)
    expected = truth * (1 - abstention.VEIL) + abstention.VEIL * colour
    assert made["veil_only"].shape == truth.shape
    assert (made["veil_only"] - expected).abs().max() <= 0.5 / 255 + 1e-6  # only 8-bit rounding
    gain = made["paired_snow"] - truth
    assert made["paired_snow"].shape == truth.shape and gain.min() >= -0.5 / 255 - 1e-6  # flakes never darken
    assert 0 < (gain > 0.1).float().mean() < 0.5  # flakes, not a wash over the frame
    again = abstention.versions(truth, SnowParams(haze_range=(1.0, 1.0)), seed=3)
    assert torch.equal(again["paired_snow"], made["paired_snow"])  # seeded: the benchmark reruns exactly
