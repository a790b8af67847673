"""The student's strong augmentation and the tone map that carries it over to the teacher's target."""

from __future__ import annotations

import torch

from semivdn.train.augment import ToneJitter, strong_augment


def _tone(saturation: float, contrast: float, brightness: float, pivot: float) -> ToneJitter:
    return ToneJitter(*(torch.full((1, 1, 1, 1, 1), value) for value in (saturation, contrast, brightness, pivot)))


def test_tone_jitter_known_values() -> None:
    clip = torch.rand(1, 3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(_tone(1.0, 1.0, 0.0, 0.4)(clip), clip)  # the neutral map changes nothing
    grey = torch.full((1, 2, 3, 4, 4), 0.5)
    # a grey pixel keeps its grey under saturation; contrast 2 about 0.3 and +0.1 brightness: 0.3 + 2·0.2 + 0.1
    assert torch.allclose(_tone(1.7, 2.0, 0.1, 0.3)(grey), torch.full_like(grey, 0.8))
    colour = torch.tensor([0.2, 0.5, 0.8]).view(1, 1, 3, 1, 1)
    # saturation 0 turns a colour into its grey (the channel mean)
    assert torch.allclose(_tone(0.0, 1.0, 0.0, 0.0)(colour), torch.full_like(colour, 0.5))


def test_tone_jitter_maps_a_snowy_clean_pair_to_a_pair() -> None:
    """The map is affine in colour: what snow adds to a clip is scaled, never shifted, by it."""
    generator = torch.Generator().manual_seed(1)
    clean = torch.rand(2, 3, 3, 8, 8, generator=generator)
    snow = 0.3 * torch.rand(2, 3, 1, 8, 8, generator=generator).expand(-1, -1, 3, -1, -1)  # white flakes
    _, tone = strong_augment(clean + snow, generator)
    # a grey addition is untouched by saturation, so the added snow only scales by the contrast
    assert torch.allclose(tone(clean + snow) - tone(clean), tone.contrast * snow, atol=1e-6)


def test_strong_augment_is_the_tone_map_plus_noise_and_is_seeded() -> None:
    clip = 0.3 + 0.4 * torch.rand(4, 3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    augmented, tone = strong_augment(clip, torch.Generator().manual_seed(3))
    again, _ = strong_augment(clip, torch.Generator().manual_seed(3))
    assert torch.equal(augmented, again)
    assert augmented.min() >= 0.0 and augmented.max() <= 1.0
    inside = (augmented > 0.0) & (augmented < 1.0)  # not clamped: the rest is the noise (σ <= 0.03)
    residual = (augmented - tone(clip))[inside]
    assert residual.abs().mean() < 0.03 and residual.mean().abs() < 0.005
    assert not torch.allclose(tone(clip), clip, atol=0.01)  # the tone really changes
    for field in (tone.saturation, tone.contrast, tone.brightness, tone.pivot):
        assert field.shape == (4, 1, 1, 1, 1)  # one draw per clip, the same for all its frames
