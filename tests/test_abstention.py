"""benchmarks/abstention.py: the versions of a scene it compares the filmed clip with are what it says, and it
reads the model's haze estimate where Eq. 6 puts it."""

import torch
from scripts import load_script

from semivdn.config import Config, SnowParams
from semivdn.models import create_model
from semivdn.models.recovery import TRANSMISSION_FLOOR

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
    assert torch.equal(made["paired_snow_no_haze"], made["paired_snow"])  # no haze to take away


def test_snow_without_haze_keeps_the_flakes_and_drops_the_haze() -> None:
    truth = torch.rand(4, 3, 40, 48, generator=torch.Generator().manual_seed(1)) * 0.5
    made = abstention.versions(truth, SnowParams(haze_range=(0.5, 0.5)), seed=4)
    gain = made["paired_snow_no_haze"] - truth
    assert gain.min() >= -0.5 / 255 - 1e-6 and 0 < (gain > 0.1).float().mean() < 0.5  # flakes only
    clear = gain.abs().amax(dim=1, keepdim=True).expand_as(gain) <= 0.5 / 255 + 1e-6  # no flake over the pixel
    assert clear.float().mean() > 0.3
    haze = (made["paired_snow"] - truth)[clear]
    assert haze.mean() > 0.05  # the hazy version lifts those pixels toward the airlight


def test_haze_reading_is_the_models_airlight_and_transmission(smoke_cfg: Config) -> None:
    model = create_model(smoke_cfg.model).eval()
    clip = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    reading = abstention.haze_reading(model, clip, n_frames=3)
    with torch.no_grad():
        output = model(clip[:3][None])
    assert reading == {"airlight": round(float(output.airlight.mean()), 4),
                       "transmission": round(float(output.transmission.mean()), 4)}
    assert 0 < reading["airlight"] < 1 and TRANSMISSION_FLOOR < reading["transmission"] <= 1
