"""The snow gate: footage that shows no snow comes out as it went in.

A desnowing network trained on synthetic pairs also "restores" what it takes for snow or veil
in footage without any: grey gravel darkens, a low-contrast micrograph loses its texture. The
gate keeps that from reaching the output by measuring, from the input alone, whether a clip
shows falling snow:

- **snow adds light**: a flake is brighter than what it passes in front of, so a frame it
  crosses has *bright* outliers against the temporal median of the frame and its two
  neighbours, and no dark ones;
- what is fixed to the scene moves with the camera: each neighbour is first aligned to the
  frame by the global shift that phase correlation finds, and all three are blurred alike
  (σ = ``BLUR_SIGMA`` pixels) so that sub-pixel misalignment of fine texture, which leaves
  outliers of both signs, does not read as snow; moving objects and sensor noise also make
  outliers of both signs alike.

For every frame, ``P`` and ``N`` are the mean bright and dark outliers of its luma beyond
``threshold`` (of full scale), over the pixels both aligned neighbours cover; pooled over
``window`` frames either side, the balance
``b = (ΣP − ΣN) / (ΣP + ΣN + ε)`` lies in [−1, 1]. The gate maps it linearly to
``g = clip((b − low) / (high − low), 0, 1)`` (``balance = [low, high]``) and scales the
network's change: ``output = input + g · (network(input) − input)``. No bright excess, no
change; a clear one, the network's output unchanged.

What it cannot see: flakes darker than what is behind them (grey flakes against a bright
sky) read as no snow, and a clip of fewer than three frames has no temporal evidence, so its
gate stays open (the network's output as is).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F

from semivdn.config import SnowGate

log = logging.getLogger(__name__)

LUMA = (0.299, 0.587, 0.114)  # Rec. 601, as the do-no-harm report measures brightness
EPSILON = 1e-3  # keeps the balance of a clip with (almost) no outliers near 0: no evidence of snow
MIN_FRAMES = 3  # a frame and its two neighbours
BLUR_SIGMA = 0.7  # pixels: evens out the sub-pixel misalignment whole-pixel shifts leave in fine texture
BLUR_RADIUS = 2


def luma(frames: torch.Tensor) -> torch.Tensor:
    """Luma (..., H, W) of RGB frames (..., 3, H, W) in [0, 1]."""
    weights = torch.tensor(LUMA, dtype=frames.dtype, device=frames.device).view(3, 1, 1)
    return (frames * weights).sum(dim=-3)


def global_shift(reference: torch.Tensor, moving: torch.Tensor) -> tuple[int, int]:
    """The whole-pixel shift (dy, dx) that best aligns ``moving`` (H, W) to ``reference`` by
    ``torch.roll(moving, (dy, dx), (0, 1))``: the peak of the phase correlation."""
    spectrum = torch.fft.rfft2(reference - reference.mean()) * torch.fft.rfft2(moving - moving.mean()).conj()
    correlation = torch.fft.irfft2(spectrum / (spectrum.abs() + 1e-12), s=reference.shape)
    height, width = reference.shape
    dy, dx = divmod(int(torch.argmax(correlation)), width)
    return dy - height if dy > height // 2 else dy, dx - width if dx > width // 2 else dx


def _blur(frames: torch.Tensor) -> torch.Tensor:
    """A separable Gaussian blur (σ = BLUR_SIGMA) of luma frames (N, H, W), edges replicated."""
    taps = torch.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, dtype=frames.dtype, device=frames.device)
    kernel = torch.exp(-taps**2 / (2 * BLUR_SIGMA**2))
    kernel = kernel / kernel.sum()
    padded = F.pad(frames[:, None], (BLUR_RADIUS,) * 4, mode="replicate")
    return F.conv2d(F.conv2d(padded, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))[:, 0]


def _aligned(reference: torch.Tensor, moving: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``moving`` rolled onto ``reference`` (H, W), and the mask of pixels the roll did not wrap around."""
    dy, dx = global_shift(reference, moving)
    valid = torch.ones_like(reference, dtype=torch.bool)
    height, width = reference.shape
    valid[: max(dy, 0)] = valid[height + min(dy, 0):] = False
    valid[:, : max(dx, 0)] = valid[:, width + min(dx, 0):] = False
    return torch.roll(moving, (dy, dx), (0, 1)), valid


def outliers(previous: torch.Tensor, current: torch.Tensor, following: torch.Tensor,
             threshold: float) -> torch.Tensor:
    """(N, 2): mean bright and dark outliers of ``current`` luma (N, H, W) beyond ``threshold``,
    against the per-pixel median of it and its neighbours aligned to it (all three blurred alike)."""
    previous, current, following = _blur(previous), _blur(current), _blur(following)
    rows = []
    for before, frame, after in zip(previous, current, following, strict=True):
        before, valid_before = _aligned(frame, before)
        after, valid_after = _aligned(frame, after)
        median = torch.maximum(torch.minimum(before, frame), torch.minimum(torch.maximum(before, frame), after))
        excess = (frame - median)[valid_before & valid_after]
        if excess.numel() == 0:  # the neighbours share no pixel with the frame: no evidence
            rows.append(frame.new_zeros(2))
            continue
        rows.append(torch.stack([torch.relu(excess - threshold).mean(), torch.relu(-excess - threshold).mean()]))
    return torch.stack(rows)


def clip_outliers(clip: torch.Tensor, threshold: float) -> torch.Tensor:
    """(T − 2, 2): :func:`outliers` of every inner frame of a clip (T, 3, H, W), T >= 3."""
    lumas = luma(clip.float())
    return outliers(lumas[:-2], lumas[1:-1], lumas[2:], threshold)


def stream_outliers(frames: Iterable[torch.Tensor], threshold: float) -> Iterator[torch.Tensor]:
    """:func:`outliers` (2,) of every inner frame of a stream of frames (3, H, W); three frames held at a time."""
    window: list[torch.Tensor] = []
    for frame in frames:
        window = [*window[-2:], luma(frame.float())[None]]
        if len(window) == MIN_FRAMES:
            yield outliers(*window, threshold)[0]


def gates(inner_outliers: torch.Tensor, total: int, params: SnowGate) -> torch.Tensor:
    """The gate (T,) of each of ``total`` frames from the outliers (T − 2, 2) of the inner frames.

    Frame t pools the inner frames within ``params.window`` of it (the first and last frame
    have no neighbour pair of their own and borrow from the frames beside them).
    """
    if total < MIN_FRAMES:
        if total:  # an empty stream is its reader's error to report
            log.warning("snow gate: %d frame(s) give no temporal evidence of snow; the network's output is used "
                        "as is", total)
        return torch.ones(total)
    if inner_outliers.shape != (total - 2, 2):
        raise ValueError(f"gates: expected outliers of {total - 2} inner frames, shape ({total - 2}, 2), "
                         f"got {tuple(inner_outliers.shape)}")
    cumulative = torch.cat([torch.zeros(1, 2, dtype=torch.float64),
                            inner_outliers.detach().cpu().double().cumsum(dim=0)])  # a few numbers: on the CPU
    centre = torch.arange(total)
    first = (centre - params.window - 1).clamp(0, total - 2)  # inner frame i is frame i + 1
    last = (centre + params.window).clamp(0, total - 2)
    pooled = cumulative[last] - cumulative[first]
    balance = (pooled[:, 0] - pooled[:, 1]) / (pooled.sum(dim=1) + EPSILON * (last - first).clamp(min=1))
    low, high = params.balance
    return ((balance - low) / (high - low)).clamp(0.0, 1.0).float()


def clip_gates(clip: torch.Tensor, params: SnowGate) -> torch.Tensor:
    """The gate (T,) of every frame of a clip (T, 3, H, W) in [0, 1]."""
    total = clip.shape[0]
    inner = clip_outliers(clip, params.threshold) if total >= MIN_FRAMES else torch.zeros(0, 2)
    return gates(inner, total, params)


def stream_gates(frames: Iterable[torch.Tensor], params: SnowGate) -> torch.Tensor:
    """The gate (T,) of every frame of a stream of frames (3, H, W) in [0, 1], read once, three frames held."""
    count = 0

    def counted() -> Iterator[torch.Tensor]:
        nonlocal count
        for frame in frames:
            count += 1
            yield frame

    inner = list(stream_outliers(counted(), params.threshold))
    return gates(torch.stack(inner) if inner else torch.zeros(0, 2), count, params)


def apply_gate(inputs: torch.Tensor, restored: torch.Tensor, gate: torch.Tensor | float) -> torch.Tensor:
    """``inputs + gate · (restored − inputs)``, exactly ``inputs`` at 0 and ``restored`` at 1 (``torch.lerp``);
    a tensor ``gate`` (T,) applies per frame of (T, 3, H, W)."""
    if isinstance(gate, torch.Tensor):
        gate = gate.to(inputs.device, inputs.dtype).view(-1, *([1] * (inputs.ndim - 1)))
    return torch.lerp(inputs, restored, gate)
