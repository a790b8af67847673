"""The one table of pretrained weights, and their safe loading.

Nothing is downloaded at run time. Each setting is ``none`` (random init),
``imagenet`` (the file in its standard cache) or a path. A missing file raises
:class:`MissingWeightsError` naming the file and the folder it belongs in;
callers that are allowed to run without it (params ``weights.allow_missing`` /
``eval.allow_missing_weights``) catch it and report the reason, never a number.
Files load with safetensors or ``torch.load(weights_only=True)``; where the
filename carries a SHA-256 prefix (torchvision's convention) it is checked.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file


class MissingWeightsError(FileNotFoundError):
    """A pretrained weights file is not where it must be; the message says where."""


class CorruptWeightsError(RuntimeError):
    """A weights file exists but cannot be loaded or fails its hash check."""


@dataclass(frozen=True)
class WeightSpec:
    name: str
    filename: str
    cache: str  # "torch": $TORCH_HOME/hub/checkpoints; "pyiqa": $TORCH_HOME/hub/pyiqa; "hf:<repo>": the HF hub cache
    license: str
    origin: str
    sha256_prefix: str | None = None


_PYIQA_WEIGHTS = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main"

WEIGHTS: dict[str, WeightSpec] = {
    spec.name: spec
    for spec in (
        WeightSpec("convnext_atto", "model.safetensors", "hf:timm/convnext_atto.d2_in1k", "Apache-2.0",
                   "https://huggingface.co/timm/convnext_atto.d2_in1k"),
        WeightSpec("convnext_femto", "model.safetensors", "hf:timm/convnext_femto.d1_in1k", "Apache-2.0",
                   "https://huggingface.co/timm/convnext_femto.d1_in1k"),
        WeightSpec("convnext_pico", "model.safetensors", "hf:timm/convnext_pico.d1_in1k", "Apache-2.0",
                   "https://huggingface.co/timm/convnext_pico.d1_in1k"),
        WeightSpec("convnext_tiny", "model.safetensors", "hf:timm/convnext_tiny.fb_in1k", "Apache-2.0",
                   "https://huggingface.co/timm/convnext_tiny.fb_in1k"),
        WeightSpec("vgg16", "vgg16-397923af.pth", "torch", "BSD-3-Clause (torchvision)",
                   "https://download.pytorch.org/models/vgg16-397923af.pth", sha256_prefix="397923af"),
        # The evaluation metrics (semivdn.eval.metrics, pyiqa 0.1.16 defaults). pyiqa's own files are read from
        # its cache or eval.weights_dir; the backbones are read by torchvision / timm from their caches.
        # pyiqa's filename suffixes are not documented as SHA-256 prefixes, so they are not checked.
        WeightSpec("lpips_alex", "LPIPS_v0.1_alex-df73285e.pth", "pyiqa", "BSD-2-Clause (LPIPS)",
                   f"{_PYIQA_WEIGHTS}/LPIPS_v0.1_alex-df73285e.pth"),
        WeightSpec("alexnet", "alexnet-owt-7be5be79.pth", "torch", "BSD-3-Clause (torchvision)",
                   "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", sha256_prefix="7be5be79"),
        WeightSpec("nima_ava", "NIMA_InceptionV2_ava-b0c77c00.pth", "pyiqa",
                   "PolyForm-Noncommercial-1.0.0 (IQA-PyTorch)", f"{_PYIQA_WEIGHTS}/NIMA_InceptionV2_ava-b0c77c00.pth"),
        WeightSpec("inception_resnet_v2", "model.safetensors", "hf:timm/inception_resnet_v2.tf_in1k", "Apache-2.0",
                   "https://huggingface.co/timm/inception_resnet_v2.tf_in1k"),
        WeightSpec("musiq_koniq", "musiq_koniq_ckpt-e95806b9.pth", "pyiqa", "Apache-2.0 (google-research MUSIQ)",
                   f"{_PYIQA_WEIGHTS}/musiq_koniq_ckpt-e95806b9.pth"),
    )
}


def torch_cache_dir() -> Path:
    """torchvision/torch.hub's checkpoint folder ($TORCH_HOME/hub/checkpoints)."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    return Path(torch_home) / "hub" / "checkpoints"


def pyiqa_cache_dir() -> Path:
    """pyiqa's weights folder (its ``DEFAULT_CACHE_DIR``: $TORCH_HOME/hub/pyiqa)."""
    return torch_cache_dir().parent / "pyiqa"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache that timm's ``pretrained=True`` reads."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface")
    return Path(hf_home) / "hub"


def expected_location(spec: WeightSpec, cache_dir: str | Path | None = None) -> Path:
    """Where the file must be: ``cache_dir/<filename>`` when set, else its standard cache."""
    if cache_dir is not None:
        return Path(cache_dir) / spec.name / spec.filename if spec.cache.startswith("hf:") else Path(
            cache_dir) / spec.filename
    if spec.cache == "torch":
        return torch_cache_dir() / spec.filename
    if spec.cache == "pyiqa":
        return pyiqa_cache_dir() / spec.filename
    repo = spec.cache.removeprefix("hf:")
    return hf_cache_dir() / f"models--{repo.replace('/', '--')}" / "snapshots" / "<revision>" / spec.filename


def _find(spec: WeightSpec, cache_dir: str | Path | None) -> Path | None:
    location = expected_location(spec, cache_dir)
    if "<revision>" in location.parts:
        snapshots = location.parents[1]
        found = sorted(snapshots.glob(f"*/{spec.filename}")) if snapshots.is_dir() else []
        return found[-1] if found else None
    return location if location.is_file() else None


def locate_weights(name: str, cache_dir: str | Path | None = None) -> Path | None:
    """The file of table entry ``name`` where :func:`expected_location` says, or None when it is not there."""
    return _find(WEIGHTS[name], cache_dir)


def resolve_weights(name: str, setting: str, cache_dir: str | Path | None = None) -> Path | None:
    """Path of the weights file for ``setting`` (``none`` -> None); raise if it is missing."""
    if setting == "none":
        return None
    if setting != "imagenet":
        path = Path(setting).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"weights for {name}: file {path} does not exist")
        return path
    if name not in WEIGHTS:
        raise MissingWeightsError(f"no pretrained weights are known for {name!r}; known: {sorted(WEIGHTS)}")
    spec = WEIGHTS[name]
    found = _find(spec, cache_dir)
    if found is None:
        where = expected_location(spec, cache_dir)
        raise MissingWeightsError(
            f"pretrained weights for {name} not found: put {spec.filename} (from {spec.origin}, "
            f"license {spec.license}) at {where}, or set the setting to a file path or to 'none'")
    return found


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_state_dict(path: str | Path, name: str | None = None) -> dict[str, torch.Tensor]:
    """Load a state dict safely (safetensors, or a pickle-free ``torch.load``)."""
    path = Path(path)
    spec = WEIGHTS.get(name or "")
    if spec and spec.sha256_prefix and path.name == spec.filename:
        digest = sha256_file(path)
        if not digest.startswith(spec.sha256_prefix):
            raise CorruptWeightsError(f"{path}: SHA-256 {digest[:8]}… does not match the expected "
                                      f"{spec.sha256_prefix}…; re-download it from {spec.origin}")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any parse failure is a corrupt file to the caller
        raise CorruptWeightsError(f"{path}: cannot load weights ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CorruptWeightsError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state
