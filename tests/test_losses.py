"""Losses of Eq. 8, 9, 11, 12 against hand-computed values, plus the VGG weights policy."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from torchvision.models.vgg import cfgs, make_layers

from semivdn.config import Config, ConfigError, config_from_dict
from semivdn.losses import (
    DCR,
    CharbonnierLoss,
    DarkChannelLoss,
    FocalFrequencyLoss,
    PerceptualContrastiveLoss,
    PerceptualLoss,
    SnowBank,
    SnowDescriptor,
    SupervisedLoss,
    TotalVariationLoss,
    UnsupervisedLoss,
    VGGFeatures,
    dark_channel,
    dcr_loss,
    feature_augment,
    fit_gmm,
    kl_divergences,
    load_perceptual_backbone,
    ramp_up,
)
from semivdn.losses.dcr import GMM_REG_COVAR, diagonal_log_density, gmm_from_state, gmm_state, warm_em
from semivdn.weights import CorruptWeightsError, MissingWeightsError

VGG_FILE = "vgg16-397923af.pth"


@pytest.fixture(scope="module")
def vgg_state() -> dict[str, torch.Tensor]:
    """A random torchvision VGG16 ``features`` state dict, with torchvision's ``features.N.*`` keys."""
    torch.manual_seed(0)
    return {f"features.{key}": value for key, value in make_layers(cfgs["D"]).state_dict().items()}


@pytest.fixture(scope="module")
def vgg_file(vgg_state: dict[str, torch.Tensor], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vgg") / "vgg16_random.pth"
    torch.save(vgg_state, path)
    return path


@pytest.fixture(scope="module")
def features(vgg_file: Path) -> VGGFeatures:
    return VGGFeatures(str(vgg_file))


def make_cfg(**loss: object) -> Config:
    weights = loss.pop("weights", {})
    return config_from_dict({"loss": loss, "weights": weights})


# --- pixel ----------------------------------------------------------------------------------------

def test_charbonnier_known_values() -> None:
    x, y = torch.full((1, 3, 2, 2), 3.5), torch.full((1, 3, 2, 2), 0.5)
    assert CharbonnierLoss(eps=1e-6)(x, y).item() == pytest.approx(3.0, abs=1e-6)
    assert CharbonnierLoss(eps=1e-3)(y, y).item() == pytest.approx(1e-3)  # identical inputs give eps
    with pytest.raises(ValueError, match="eps"):
        CharbonnierLoss(eps=0.0)
    with pytest.raises(ValueError, match="shapes differ"):
        CharbonnierLoss()(x, y[..., :1])


# --- focal frequency ------------------------------------------------------------------------------

def test_focal_frequency_hand_computed_2x2() -> None:
    # ortho FFT of [[1, .5], [0, 0]] is [[.75, .25], [.75, .25]]: d = [.5625, .0625, .5625, .0625],
    # w = |F| / max = [1, 1/3, 1, 1/3], mean(w·d) = 2·(.5625 + .0625/3) / 4 = 7/24
    prediction = torch.tensor([[[[1.0, 0.5], [0.0, 0.0]]]])
    assert FocalFrequencyLoss()(prediction, torch.zeros_like(prediction)).item() == pytest.approx(7 / 24, rel=1e-6)


def _ffl_numpy(prediction: np.ndarray, target: np.ndarray, alpha: float) -> float:
    size = prediction.shape[-1] * prediction.shape[-2]
    difference = (np.fft.fft2(prediction) - np.fft.fft2(target)) / math.sqrt(size)
    distance = np.abs(difference) ** 2
    weight = np.abs(difference) ** alpha
    weight = weight / weight.max(axis=(-2, -1), keepdims=True)
    return float(np.mean(weight * distance))


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_focal_frequency_matches_numpy_per_image_channel_normalisation(alpha: float) -> None:
    generator = torch.Generator().manual_seed(1)
    prediction, target = torch.rand(2, 3, 4, 4, generator=generator), torch.rand(2, 3, 4, 4, generator=generator)
    prediction[1, 2] *= 5.0  # one channel with a much larger error must not shrink the others' weights
    expected = _ffl_numpy(prediction.numpy().astype(np.float64), target.numpy().astype(np.float64), alpha)
    assert FocalFrequencyLoss(alpha)(prediction, target).item() == pytest.approx(expected, rel=1e-5)


def test_focal_frequency_zero_for_identical_and_weight_detached() -> None:
    image = torch.rand(1, 3, 4, 4, requires_grad=True)
    assert FocalFrequencyLoss()(image, image.detach()).item() == 0.0  # 0/0 weights become 0, not NaN
    # with a detached weight, d(mean(w·d))/dx on a delta error is the gradient of a weighted L2
    prediction = torch.zeros(1, 1, 2, 2, requires_grad=True)
    target = torch.tensor([[[[-1.0, 0.0], [0.0, 0.0]]]])
    FocalFrequencyLoss()(prediction, target).backward()
    # spectrum of the error is flat (.5 everywhere), so w = 1 and the loss is mean|F(x - t)|² = |x - t|²/4
    assert torch.allclose(prediction.grad, torch.tensor([[[[0.5, 0.0], [0.0, 0.0]]]]))


# --- priors ---------------------------------------------------------------------------------------

def test_total_variation_of_ramps() -> None:
    columns = torch.arange(5.0).view(1, 1, 1, 5) * 0.1
    rows = torch.arange(4.0).view(1, 1, 4, 1) * 0.2
    horizontal_ramp = columns.expand(2, 3, 4, 5)
    assert TotalVariationLoss()(horizontal_ramp).item() == pytest.approx(0.1)
    assert TotalVariationLoss()(horizontal_ramp + rows).item() == pytest.approx(0.3)
    with pytest.raises(ValueError, match="2x2"):
        TotalVariationLoss()(torch.zeros(1, 3, 1, 5))


def test_dark_channel_known_images() -> None:
    constant = torch.full((2, 3, 9, 9), 0.4)
    assert torch.allclose(dark_channel(constant, patch=3), torch.full((2, 1, 9, 9), 0.4))
    assert DarkChannelLoss(patch=15)(constant).item() == pytest.approx(0.4)
    image = torch.full((1, 3, 9, 9), 0.8)
    image[0, 1, 4, 4] = 0.1  # one dark green pixel darkens exactly its 3x3 neighbourhood
    dark = dark_channel(image, patch=3)[0, 0]
    expected = torch.full((9, 9), 0.8)
    expected[3:6, 3:6] = 0.1
    assert torch.allclose(dark, expected)
    image[0, 2, 0, 0] = 0.0  # a corner pixel: padding is ignored, the window is clipped to the image
    assert dark_channel(image, patch=3)[0, 0, :2, :2].eq(0.0).all()
    with pytest.raises(ValueError, match="odd"):
        dark_channel(image, patch=4)


@pytest.mark.parametrize("patch", [1, 5, 15])
def test_dark_channel_is_the_minimum_over_each_clipped_square_window(patch: int) -> None:
    images = torch.rand(2, 3, 11, 13, generator=torch.Generator().manual_seed(patch))
    channel_min, half = images.amin(1), patch // 2
    expected = torch.empty(2, 11, 13)
    for y in range(11):
        for x in range(13):
            window = channel_min[:, max(0, y - half):y + half + 1, max(0, x - half):x + half + 1]
            expected[:, y, x] = window.amin(dim=(1, 2))
    assert torch.equal(dark_channel(images, patch)[:, 0], expected)


# --- ramp-up --------------------------------------------------------------------------------------

def test_ramp_up_known_points() -> None:
    assert ramp_up(0, 100, 2.0) == pytest.approx(2.0 * math.exp(-5.0))
    assert ramp_up(100, 100, 2.0) == pytest.approx(2.0)
    assert ramp_up(50, 100, 2.0) == pytest.approx(2.0 * math.exp(-1.25))
    assert ramp_up(500, 100, 2.0) == ramp_up(100, 100, 2.0)  # clamped
    assert ramp_up(-5, 100, 2.0) == ramp_up(0, 100, 2.0)
    with pytest.raises(ValueError, match="r_max"):
        ramp_up(1, 0, 1.0)


# --- DCR (Eq. 11, 12) -----------------------------------------------------------------------------

def test_dcr_loss_ratio_on_constants_and_batch_matching() -> None:
    ones, zeros = torch.ones(3, 2, 4, 4), torch.zeros(3, 2, 4, 4)
    # anchor 1 + 1 = 2, positive 1 + 0 = 1, negative 0 + 0 = 0: ratio |2 - 1| / |2 - 0| = 0.5
    assert dcr_loss(ones, ones, ones, torch.zeros(2, 4, 4), zeros, zeros, eps=0.0).item() == 0.5
    # G_B^S with batch 1 is repeated over the U batch of 3, the ultra-positive is broadcast
    assert dcr_loss(ones, ones, ones, torch.zeros(1, 2, 4, 4), zeros[:1], zeros, eps=0.0).item() == 0.5
    # G_B^S is matched to the U batch cyclically: [3, 2] -> [3, 2, 3], distances to the anchor 1, 0, 1
    levels = torch.tensor([3.0, 2.0, 2.0, 100.0, 100.0]).view(5, 1, 1, 1).expand(5, 2, 4, 4)
    assert dcr_loss(ones, ones, ones, torch.zeros(2, 4, 4), levels[:2], zeros, eps=0.0).item() == pytest.approx(1.5)
    # ... or truncated: [3, 2, 2, 100, 100] -> [3, 2, 2], mean distance 1/3; ε = 1e-7 barely moves the ratio
    assert dcr_loss(ones, ones, ones, torch.zeros(2, 4, 4), levels, zeros).item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="c, h, w"):
        dcr_loss(ones, ones, ones, torch.zeros(2, 5, 5), zeros, zeros)


def _mixture_maps(count: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    """(count, 4, 16, 16) maps whose 256 positions each are samples of a 3-mode mixture in 4-D."""
    rng = np.random.default_rng(seed)
    means = np.array([[0.0, 0.0, 0.0, 0.0], [3.0, -2.0, 1.0, 0.0], [-2.0, 3.0, 0.0, 2.0]])
    modes = rng.choice(3, size=(count, 256), p=[0.5, 0.3, 0.2])
    points = (means[modes] + 0.5 * rng.standard_normal((count, 256, 4))) * scale + shift
    return torch.from_numpy(points).float().transpose(1, 2).reshape(count, 4, 16, 16)


def test_kl_divergences_zero_for_itself_positive_otherwise() -> None:
    rng = np.random.default_rng(0)
    p = fit_gmm(rng.standard_normal((600, 3)), k=3)
    q = fit_gmm(rng.standard_normal((600, 3)) + 1.0, k=3)
    same, other = kl_divergences(p, [p, q])
    assert same == 0.0
    assert other > 0.3
    assert kl_divergences(p, [q], seed=1) == kl_divergences(p, [q], seed=1)  # seeded


def test_kl_divergences_match_closed_form_for_single_gaussians() -> None:
    rng = np.random.default_rng(3)
    p = fit_gmm(rng.standard_normal((4000, 2)), k=1)
    q = fit_gmm(rng.standard_normal((4000, 2)) * 1.5 + 0.7, k=1)
    mean_p, var_p, mean_q, var_q = p.means_[0], p.covariances_[0], q.means_[0], q.covariances_[0]
    exact = 0.5 * np.sum(np.log(var_q / var_p) + (var_p + (mean_p - mean_q) ** 2) / var_q - 1.0)
    assert kl_divergences(p, [q], samples=20_000)[0] == pytest.approx(exact, rel=0.05)


def test_vectorized_log_density_matches_scikit_learn() -> None:
    rng = np.random.default_rng(4)
    mixtures = [fit_gmm(rng.standard_normal((300, 5)) * scale + shift, k=3) for scale, shift in ((1, 0), (2, 1))]
    x = rng.standard_normal((40, 5))
    expected = np.stack([m.score_samples(x) for m in mixtures])
    assert np.allclose(diagonal_log_density(x, mixtures), expected)


def test_warm_started_fit_converges_fast_to_the_same_mixture() -> None:
    maps = _mixture_maps(2, seed=0)
    samples = SnowDescriptor()(maps)
    cold = fit_gmm(samples, k=3)
    drifted = samples + 0.01 * np.random.default_rng(1).standard_normal(samples.shape)
    warm = fit_gmm(drifted, k=3, start=cold)
    assert warm.n_iter_ < cold.n_iter_
    assert np.allclose(np.sort(warm.means_, axis=0), np.sort(cold.means_, axis=0), atol=0.05)
    assert fit_gmm(samples[:, :2], k=3, start=cold).means_.shape == (3, 2)  # other dims: a cold start


@pytest.mark.parametrize("max_iter", [1, 3, 100])
def test_numpy_warm_em_is_scikit_learns_warm_fit(max_iter: int) -> None:
    """Same start, same data: the same parameters and step count as GaussianMixture's warm-started fit."""
    rng = np.random.default_rng(4)
    start = fit_gmm(rng.standard_normal((300, 4)) * [1, 2, 0.5, 1], k=3)
    samples = rng.standard_normal((256, 4)) * [1.1, 1.8, 0.6, 1] + 0.2
    reference = GaussianMixture(3, covariance_type="diag", reg_covar=GMM_REG_COVAR, weights_init=start.weights_,
                                means_init=start.means_, precisions_init=start.precisions_, max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference.fit(samples)
    ours = warm_em(samples, start, max_iter)
    assert ours.n_iter_ == reference.n_iter_ and ours.converged_ == reference.converged_
    for name in ("weights_", "means_", "covariances_"):
        assert np.allclose(getattr(ours, name), getattr(reference, name), rtol=1e-9, atol=1e-12), name
    assert ours.lower_bound_ == pytest.approx(reference.lower_bound_, rel=1e-9)
    assert np.allclose(ours.score_samples(samples), reference.score_samples(samples))


def test_gmm_state_round_trip_scores_identically() -> None:
    gmm = fit_gmm(np.random.default_rng(2).standard_normal((300, 4)), k=3)
    restored = gmm_from_state(gmm_state(gmm))
    x = np.random.default_rng(3).standard_normal((50, 4))
    assert np.allclose(restored.score_samples(x), gmm.score_samples(x))


def test_snow_bank_selects_candidate_from_the_real_distribution() -> None:
    descriptor = SnowDescriptor()
    real_gmm = fit_gmm(descriptor(_mixture_maps(2, seed=0)), k=3)
    bank = SnowBank(capacity=8, components=3, descriptor=descriptor)
    same = _mixture_maps(1, seed=1)
    bank.add(_mixture_maps(1, seed=2, shift=1.5))
    bank.add(torch.cat([_mixture_maps(1, seed=3, scale=2.5), same, _mixture_maps(1, seed=4, shift=-1.0)]))
    divergences = bank.divergences(real_gmm)
    assert int(np.argmin(divergences)) == 2
    ultra, divergence = bank.closest(real_gmm)
    assert torch.equal(ultra, same[0]) and divergence == min(divergences)
    restored = SnowBank(capacity=8, components=3, descriptor=descriptor)
    restored.load(bank.state())
    assert restored.divergences(real_gmm) == divergences  # resume needs no refit


def test_snow_bank_is_fifo_and_rejects_bad_input() -> None:
    bank = SnowBank(capacity=2)
    with pytest.raises(ValueError, match="empty"):
        bank.divergences(fit_gmm(np.random.default_rng(0).standard_normal((50, 4)), k=1))
    oldest, middle, newest = (_mixture_maps(1, seed=s) for s in (5, 6, 7))
    for maps in (oldest, middle, newest):
        bank.add(maps)
    assert len(bank) == 2
    stored = [candidate for candidate, _ in bank._candidates]
    assert torch.equal(stored[0], middle[0]) and torch.equal(stored[1], newest[0])
    with pytest.raises(ValueError, match="differs"):
        bank.add(torch.zeros(1, 4, 8, 8))


def test_snow_descriptor_limits_samples_and_dims() -> None:
    samples = SnowDescriptor(max_positions=256, max_dims=16)(torch.rand(2, 40, 64, 48))
    assert samples.shape == (2 * 256, 16)
    descriptor = SnowDescriptor(seed=3)
    first = descriptor(torch.ones(1, 40, 4, 4))
    assert np.allclose(first, SnowDescriptor(seed=3)(torch.ones(1, 40, 4, 4)))  # fixed projection per seed
    assert SnowDescriptor()(torch.rand(3, 5, 4)).shape == (20, 3)  # small map, few channels: kept as is


def test_feature_augment_is_seeded_and_keeps_values_without_jitter() -> None:
    x = torch.rand(3, 4, 8, 8)
    first = feature_augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(first, feature_augment(x, torch.Generator().manual_seed(0)))
    assert first.shape == x.shape and not torch.equal(first, x)
    moved = feature_augment(x, torch.Generator().manual_seed(1), jitter=0.0)
    # flips and rolls only permute positions: each (sample, channel) keeps its values
    assert torch.equal(moved.flatten(2).sort(dim=2).values, x.flatten(2).sort(dim=2).values)


def test_dcr_module_gradients_and_parts() -> None:
    dcr = DCR(make_cfg(dcr_bank=4, dcr=0.1))
    generator = torch.Generator().manual_seed(0)

    def feats(batch: int, grad: bool = False) -> torch.Tensor:
        return torch.rand(batch, 8, 8, 8, generator=generator).requires_grad_(grad)

    g_b_s, u_b_s, u_snow_s = feats(2, True), feats(3, True), feats(3, True)
    weighted, parts = dcr(g_b_s, feats(2), u_b_s, u_snow_s, feats(3), feats(3))
    weighted.backward()
    assert weighted.item() == pytest.approx(0.1 * parts["dcr"], rel=1e-5)
    assert parts["dcr"] > 0 and math.isfinite(parts["dcr_kl"])
    assert u_snow_s.grad.abs().sum() > 0 and u_b_s.grad.abs().sum() > 0
    assert g_b_s.grad is None  # the negative is a constant
    assert len(dcr.bank) == 1  # one synthetic snow map joins the bank per step
    dcr(g_b_s, feats(2), u_b_s, u_snow_s, feats(3), feats(3))
    assert len(dcr.bank) == 2


def test_dcr_refreshes_its_distributions_every_dcr_refresh_steps() -> None:
    dcr = DCR(make_cfg(dcr_bank=8, dcr_refresh=3))
    generator = torch.Generator().manual_seed(1)
    sizes, choices = [], []
    for _ in range(7):
        _, parts = dcr(*(torch.rand(2, 4, 8, 8, generator=generator) for _ in range(6)))
        assert dcr.ultra is not None
        sizes.append(len(dcr.bank))
        choices.append((dcr.ultra[0], parts["dcr_kl"]))
    assert sizes == [1, 1, 1, 2, 2, 2, 3]  # steps 0, 3 and 6 refresh
    for held in (1, 2, 4, 5):  # between refreshes: the same ultra-positive map and its KL
        assert choices[held][0] is choices[held - 1][0] and choices[held][1] == choices[held - 1][1]
    with pytest.raises(ConfigError, match=r"loss\.dcr_refresh"):
        make_cfg(dcr_refresh=0)


# --- VGG features and the missing-weights policy --------------------------------------------------

def test_vgg_imagenet_missing_names_file_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError) as error:
        VGGFeatures("imagenet")
    assert VGG_FILE in str(error.value) and str(tmp_path / "hub" / "checkpoints") in str(error.value)


def test_vgg_imagenet_file_failing_hash_is_corrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   vgg_state: dict[str, torch.Tensor]) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(vgg_state, tmp_path / "hub" / "checkpoints" / VGG_FILE)  # random weights, wrong SHA-256
    with pytest.raises(CorruptWeightsError, match="397923af"):
        VGGFeatures("imagenet")


def test_vgg_loads_exact_torchvision_keys(features: VGGFeatures, vgg_state: dict[str, torch.Tensor],
                                          tmp_path: Path) -> None:
    assert torch.equal(features.layers[14].weight, vgg_state["features.14.weight"])
    outputs = features(torch.rand(2, 3, 16, 12))
    assert [tuple(o.shape) for o in outputs] == [(2, 64, 16, 12), (2, 128, 8, 6), (2, 256, 4, 3)]
    assert not any(p.requires_grad for p in features.parameters())
    features.train()
    assert not features.training
    path = tmp_path / "vgg.safetensors"
    save_file(vgg_state, str(path))
    assert torch.equal(VGGFeatures(str(path)).layers[0].bias, vgg_state["features.0.bias"])


def test_vgg_refuses_none_and_files_without_vgg_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="random VGG"):
        VGGFeatures("none")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CorruptWeightsError, match=re.escape("features.0.weight")):
        VGGFeatures(str(tmp_path / "other.pth"))
    with pytest.raises(MissingWeightsError, match="does not exist"):
        VGGFeatures(str(tmp_path / "absent.pth"))


def test_perceptual_losses_known_values(features: VGGFeatures) -> None:
    image = torch.rand(1, 3, 16, 16)
    assert PerceptualLoss(features)(image, image).item() == 0.0
    contrastive = PerceptualContrastiveLoss(features)
    # anchor equal to the positive: the ratio is 0; anchor equal to the negative: each layer gives w_l·d/(d+eps)
    assert contrastive(image, image, torch.zeros_like(image)).item() == 0.0
    assert contrastive(image, torch.zeros_like(image), image).item() > 1e4


def test_perceptual_terms_unavailable_with_none() -> None:
    cfg = make_cfg(vgg_weights="none")
    supervised, unsupervised = SupervisedLoss(cfg), UnsupervisedLoss(cfg)
    assert supervised.unavailable == {"perceptual": "loss.vgg_weights is none"}
    assert unsupervised.unavailable == {"contrastive": "loss.vgg_weights is none"}
    image = torch.rand(2, 3, 16, 16)
    assert set(supervised(image, image)[1]) == {"pixel", "frequency", "total"}
    assert set(unsupervised(image, image, image)[1]) == {"consistency", "dcp", "tv", "total"}


def test_missing_imagenet_vgg_raises_unless_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match=re.escape(VGG_FILE)):
        SupervisedLoss(make_cfg(vgg_weights="imagenet"))
    backbone = load_perceptual_backbone(make_cfg(vgg_weights="imagenet", weights={"allow_missing": True}))
    assert backbone.features is None and VGG_FILE in backbone.reason
    assert VGG_FILE in UnsupervisedLoss(make_cfg(), backbone).unavailable["contrastive"]


def test_supervised_loss_total_and_gradient(vgg_file: Path) -> None:
    cfg = make_cfg(vgg_weights=str(vgg_file), perceptual=0.03, frequency=10.0)
    loss = SupervisedLoss(cfg)
    assert loss.unavailable == {}
    prediction = torch.rand(1, 3, 3, 16, 16, requires_grad=True)  # (B, N_f, 3, H, W) clips
    total, parts = loss(prediction, torch.rand(1, 3, 3, 16, 16))
    total.backward()
    expected = parts["pixel"] + 0.03 * parts["perceptual"] + 10.0 * parts["frequency"]
    assert parts["total"] == pytest.approx(expected, rel=1e-5)
    assert prediction.grad is not None and prediction.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="share one shape"):
        loss(prediction, torch.rand(1, 3, 3, 8, 8))


def test_snow_stream_term_adds_its_weighted_charbonnier_and_needs_the_snow_only_frames() -> None:
    generator = torch.Generator().manual_seed(0)
    prediction, target, snow_only = (torch.rand(1, 3, 3, 16, 16, generator=generator) for _ in range(3))
    plain = SupervisedLoss(make_cfg())
    assert not plain.wants_snow_only
    base, base_parts = plain(prediction, target, snow_only)  # ignored at weight 0
    assert "snow_stream" not in base_parts
    weighted = SupervisedLoss(make_cfg(snow_stream=0.5))
    assert weighted.wants_snow_only
    total, parts = weighted(prediction, target, snow_only)
    expected = CharbonnierLoss(1e-3)(snow_only.flatten(0, 1), target.flatten(0, 1))
    assert parts["snow_stream"] == pytest.approx(float(expected), rel=1e-6)
    assert float(total) == pytest.approx(float(base) + 0.5 * float(expected), rel=1e-6)
    with pytest.raises(ValueError, match="snow_only=True"):
        weighted(prediction, target)
    with pytest.raises(ValueError, match="share one shape"):
        weighted(prediction, target, snow_only[..., :8, :8])
    with pytest.raises(ConfigError, match=r"loss\.snow_stream"):
        make_cfg(snow_stream=-1.0)


def test_unsupervised_loss_total_and_gradient(vgg_file: Path) -> None:
    cfg = make_cfg(vgg_weights=str(vgg_file))
    backbone = load_perceptual_backbone(cfg)
    loss = UnsupervisedLoss(cfg, backbone)
    j_stu = torch.rand(2, 3, 16, 16, requires_grad=True)
    j_tea = torch.rand(2, 3, 16, 16, requires_grad=True)
    total, parts = loss(j_stu, j_tea, torch.rand(2, 3, 16, 16))
    total.backward()
    expected = 2.0 * parts["consistency"] + 0.1 * parts["contrastive"] + 0.1 * parts["dcp"] + 0.5 * parts["tv"]
    assert parts["total"] == pytest.approx(expected, rel=1e-5)
    assert j_stu.grad.abs().sum() > 0
    assert j_tea.grad is None  # the teacher learns by EMA only


def test_dcr_state_round_trip_resumes_identically(tmp_path: Path) -> None:
    cfg = make_cfg(dcr_bank=3, dcr_refresh=2)
    generator = torch.Generator().manual_seed(5)

    def step() -> list[torch.Tensor]:
        return [torch.rand(2, 4, 8, 8, generator=generator) for _ in range(6)]

    original = DCR(cfg)
    for _ in range(7):  # a candidate every 2nd step: the bank of 3 is full and has dropped one; mid-cycle
        original(*step())
    torch.save(original.state_dict(), tmp_path / "dcr.pt")
    resumed = DCR(cfg)
    resumed.load_state_dict(torch.load(tmp_path / "dcr.pt", weights_only=True))
    assert [torch.equal(a, b) for a, b in zip(original.bank.candidates(), resumed.bank.candidates(), strict=True)] \
        == [True, True, True]
    for _ in range(2):  # a held step, then a refresh: same bank, GMMs, ultra-positive and augmentation draw
        inputs = step()
        expected, resumed_value = original(*inputs)[0], resumed(*inputs)[0]
        assert resumed_value.item() == expected.item()

