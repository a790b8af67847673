"""Model checkpoints: one safetensors file holding the weights, the model config and metadata.

The file is self-describing (the ``model`` params it was built from travel in its header),
so inference rebuilds the exact architecture without params.yaml. Writes are atomic
(temporary file + ``os.replace``): a crash never leaves a half-written checkpoint under the
final name. Loading checks the format version and every key and shape before touching the
model, and raises :class:`CheckpointError` instead of returning a half-loaded one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from semivdn.config import ConfigError, Model, config_from_dict
from semivdn.models.builder import create_model
from semivdn.models.ensemble import OutputEnsemble
from semivdn.weights import sha256_file

FORMAT = "semivdn-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, or does not match the architecture it names."""


@dataclass(frozen=True)
class CheckpointHeader:
    """What a checkpoint says about itself, read without loading the weights."""

    format_version: int
    model_config: Model
    meta: dict[str, Any]


def save_checkpoint(path: str | Path, model: nn.Module, model_cfg: Model, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s weights with ``model_cfg`` and ``meta`` (JSON-able) to ``path`` atomically."""
    path = Path(path)
    try:
        header = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
                  "model_config": json.dumps(dataclasses.asdict(model_cfg)), "meta": json.dumps(meta or {})}
    except TypeError as exc:
        raise ValueError(f"checkpoint meta for {path} must be JSON-serializable: {exc}") from exc
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    broken = [name for name, tensor in tensors.items() if tensor.is_floating_point() and not tensor.isfinite().all()]
    if broken:  # a diverged model must never look like a trained one
        raise CheckpointError(f"{path}: refusing to save non-finite weights ({len(broken)} tensors, "
                              f"e.g. {broken[0]}); training diverged")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(temporary), metadata=header)
        os.chmod(temporary, 0o666 & ~_umask())  # the mode a plain new file gets, whatever created it
        with temporary.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _parse_header(path: Path, metadata: dict[str, str] | None) -> CheckpointHeader:
    metadata = metadata or {}
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a SemiVDN checkpoint (header format {metadata.get('format')!r}, "
                              f"expected {FORMAT!r})")
    version = metadata.get("format_version", "")
    if version != str(FORMAT_VERSION):
        raise CheckpointError(f"{path}: checkpoint format version {version!r} is not supported "
                              f"(this code reads version {FORMAT_VERSION})")
    try:
        model_config = config_from_dict({"model": json.loads(metadata["model_config"])}, profile="demo").model
        meta = json.loads(metadata.get("meta", "{}"))
    except (KeyError, json.JSONDecodeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: invalid model config or meta in the header ({exc})") from exc
    return CheckpointHeader(format_version=FORMAT_VERSION, model_config=model_config, meta=meta)


def read_checkpoint_header(path: str | Path) -> CheckpointHeader:
    """The format version, model config and meta of a checkpoint, without loading weights."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
    except Exception as exc:  # safetensors raises its own error types for truncated/garbage files
        raise CheckpointError(f"{path}: unreadable checkpoint, truncated or not safetensors "
                              f"({type(exc).__name__}: {exc})") from exc
    return _parse_header(path, metadata)


def _header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from the safetensors header, without reading any weight."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read the tensor table ({type(exc).__name__}: {exc})") from exc


def _read_tensors(path: Path, map_location: str | torch.device) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read the weights ({type(exc).__name__}: {exc})") from exc


def _check_match(path: Path, shapes: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]],
                 model_cfg: Model) -> None:
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = [f"{name} {shapes[name]} != {expected[name]}"
             for name in sorted(set(shapes) & set(expected)) if shapes[name] != expected[name]]
    if missing or unexpected or wrong:
        details = ([f"missing {name}" for name in missing[:3]] + [f"unexpected {name}" for name in unexpected[:3]]
                   + wrong[:3])
        raise CheckpointError(f"{path}: weights do not match the architecture in its header "
                              f"(type={model_cfg.type}, encoder={model_cfg.encoder}, dim={model_cfg.dim}, "
                              f"tde={model_cfg.tde}): {len(missing)} missing, {len(unexpected)} unexpected, "
                              f"{len(wrong)} wrong shape; {'; '.join(details)}")


def _build(path: Path, model_cfg: Model, device: str | torch.device) -> nn.Module:
    try:
        with torch.device(device):
            return create_model(model_cfg)
    except ValueError as exc:
        raise CheckpointError(f"{path}: cannot build the model in its header ({exc})") from exc


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights; returns (model in eval mode, meta).

    The architecture in the header is first built on the ``meta`` device (no memory) and its shapes
    compared with the file's tensor table, so a crafted header naming a huge model fails before
    anything is allocated: the file must actually hold every weight the header asks for.
    """
    path = Path(path)
    header = read_checkpoint_header(path)
    # the weights come from the checkpoint, so the encoder must not look for ImageNet files
    model_cfg = dataclasses.replace(header.model_config, encoder_weights="none")
    expected = {name: tuple(t.shape) for name, t in _build(path, model_cfg, "meta").state_dict().items()}
    _check_match(path, _header_shapes(path), expected, model_cfg)
    model = _build(path, model_cfg, "cpu")
    model.load_state_dict(_read_tensors(path, map_location), strict=True)
    return model.to(map_location).eval(), header.meta


def assemble_ensemble(members: list[Path], out: Path) -> Path:
    """Write an output ensemble of the trained checkpoints ``members`` (one architecture) to ``out``.

    Its meta records each member's file hash and meta (their provenance: variant, data, commit,
    MLflow run), and the first member's variant and profile, which the registry's tags read.
    """
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least two member checkpoints, got {len(members)}")
    headers = [read_checkpoint_header(path) for path in members]
    configs = {json.dumps(dataclasses.asdict(header.model_config), sort_keys=True) for header in headers}
    if len(configs) > 1 or headers[0].model_config.members != 1:
        raise CheckpointError(f"ensemble members must be single networks of one architecture; got "
                              f"{[dataclasses.asdict(h.model_config) for h in headers]}")
    ensemble = OutputEnsemble([load_checkpoint(path)[0] for path in members])
    model_cfg = dataclasses.replace(headers[0].model_config, members=len(members))
    first = headers[0].meta
    ensemble_meta = {"variant": first.get("variant"), "profile": first.get("profile"),
                     "members": [{"checkpoint": str(path), "sha256": sha256_file(path), **header.meta}
                                 for path, header in zip(members, headers, strict=True)]}
    return save_checkpoint(out, ensemble, model_cfg, ensemble_meta)
