"""VDN, the video desnowing network of SemiVDN (paper §3.1-3.2, Fig. 3 and 5).

encoder (ConvNeXt, per frame) -> overlapped patch embedding -> Physics Transformer Blocks
over the tokens of all N_f frames -> component decoders (S, T, A) -> prior-guided
recovery (Eq. 6) -> RGB decoder. The RGB decoder predicts a residual added to the input
frame (J = I + decoder(F_B')), which lets the network start from the identity and spend
its capacity on snow and haze. Frames of any size are reflect-padded (bottom/right) to
a multiple of the total stride and cropped back.

``forward = restore ∘ encode``: streaming inference encodes each frame once and reuses
its features in every sliding window it belongs to (semivdn.inference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from semivdn.models.builder import register_model
from semivdn.models.encoder import ConvNeXtEncoder
from semivdn.models.ptb import ExpertRouting, Grid, OverlapPatchEmbed, PhysicsTransformerBlock, tokens_to_maps
from semivdn.models.recovery import (
    ComponentDecoder,
    RGBDecoder,
    prior_guided_recovery,
    to_airlight,
    to_transmission,
)

SNOW, TRANSMISSION, AIRLIGHT = 0, 1, 2  # expert indices


@dataclass
class VDNOutput:
    """Restored frames and the physics features behind them.

    ``frames`` is (B, N_f, 3, H, W), or (B, 1, 3, H, W) when ``restore`` decoded one frame;
    the features are per decoded frame, (B·N_f or B, C, H', W') at a quarter of the
    padded input size. ``router_q``/``router_d`` are Q and D of the last PTB (None for M1).
    """

    frames: torch.Tensor
    background: torch.Tensor  # F_B'
    snow: torch.Tensor  # F_S'
    transmission: torch.Tensor  # F_T', in (TRANSMISSION_FLOOR, 1)
    airlight: torch.Tensor  # F_A', 1 channel, one value per frame
    router_q: torch.Tensor | None  # (B, N_f·m, n), sums to 1 over tokens (Eq. 2)
    router_d: torch.Tensor | None  # (B, N_f·m, n), sums to 1 over experts (Eq. 5)
    snow_only: torch.Tensor | None = None  # like ``frames``, I + RGB(F_I' − F_S'): Eq. 6 with F_T' = 1, F_A' = 0


def _frame_maps(tokens: torch.Tensor, grid: Grid, frame_index: int | None) -> torch.Tensor:
    """Spatial maps of every frame's tokens, or of one frame's only."""
    if frame_index is None:
        return tokens_to_maps(tokens, grid)
    frames, height, width = grid
    one_frame = tokens.reshape(tokens.shape[0], frames, height * width, tokens.shape[-1])[:, frame_index]
    return tokens_to_maps(one_frame, (1, height, width))


@register_model("vdn")
class VDN(nn.Module):
    """The VDN; constructor arguments mirror params.yaml's ``model`` section.

    Args:
        encoder: timm ConvNeXt name.
        encoder_weights: ``none`` | ``imagenet`` | path to a weights file.
        encoder_stages: ConvNeXt stages used (stage 1 has stride 4).
        dim: token channels d (also the encoder's fused channels c).
        heads: attention heads.
        num_ptb: Physics Transformer Blocks.
        experts: n, the TDE experts (the first three are S, T, A).
        tde: False builds M1 (plain FFN, no router or experts).
        mlp_ratio: hidden width of FFNs and experts relative to d.
        sr_ratio: spatial reduction of attention keys/values.
        beta: β of Eq. 6.
        decoder_channels: channels of the component features F_S', F_T', F_I', F_B'.
        cache_dir: where ``imagenet`` encoder weights are looked up (None: standard caches).
    """

    def __init__(self, encoder: str = "convnext_atto", encoder_weights: str = "none", encoder_stages: int = 1,
                 dim: int = 64, heads: int = 2, num_ptb: int = 1, experts: int = 3, tde: bool = True,
                 mlp_ratio: float = 2.0, sr_ratio: int = 4, beta: float = 1e-8, decoder_channels: int = 32,
                 cache_dir: str | Path | None = None) -> None:
        super().__init__()
        self.beta = beta
        self.encoder = ConvNeXtEncoder(encoder, encoder_stages, dim, encoder_weights, cache_dir)
        self.patch_embed = OverlapPatchEmbed(dim, dim)
        self.blocks = nn.ModuleList(PhysicsTransformerBlock(dim, heads, mlp_ratio, sr_ratio, experts, tde)
                                    for _ in range(num_ptb))
        upscale = OverlapPatchEmbed.stride
        self.snow_decoder = ComponentDecoder(dim, decoder_channels, decoder_channels, upscale)
        self.transmission_decoder = ComponentDecoder(dim, decoder_channels, decoder_channels, upscale)
        self.airlight_decoder = ComponentDecoder(dim, decoder_channels, 1, upscale)
        self.input_projection = nn.Conv2d(dim, decoder_channels, 1)  # F_I'
        self.rgb_decoder = RGBDecoder(decoder_channels, self.encoder.base_stride)
        self.pad_multiple = math.lcm(self.encoder.stride, self.encoder.base_stride * upscale * sr_ratio)

    def _pad(self, frames: torch.Tensor) -> torch.Tensor:
        height, width = frames.shape[-2:]
        if min(height, width) < self.pad_multiple:
            raise ValueError(f"frames of {height}x{width} are too small; this model needs at least "
                             f"{self.pad_multiple}x{self.pad_multiple} pixels")
        pad_h, pad_w = -height % self.pad_multiple, -width % self.pad_multiple
        return F.pad(frames, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else frames

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Per-frame features (N, dim, H'/4, W'/4) of RGB frames (N, 3, H, W) in [0, 1]."""
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"encode expects frames of shape (N, 3, H, W), got {tuple(frames.shape)}")
        return self.encoder(self._pad(frames))

    def restore(self, features: torch.Tensor, clip: torch.Tensor, frame_index: int | None = None,
                snow_only: bool = False) -> VDNOutput:
        """Restore a clip (B, N_f, 3, H, W) from its encoded features (B, N_f, dim, h, w).

        ``frame_index`` decodes only that frame of each clip (streaming needs the centre
        frame only; the transformer still sees every frame's features). Only the decoded
        frames of ``clip`` are read (for the residual and the output size). ``snow_only``
        also decodes the frames with the haze terms of Eq. 6 neutral, for ``loss.snow_stream``.
        """
        if clip.ndim != 5 or clip.shape[2] != 3:
            raise ValueError(f"restore expects a clip of shape (B, N_f, 3, H, W), got {tuple(clip.shape)}")
        batch, frames, _, height, width = clip.shape
        if frame_index is not None and not 0 <= frame_index < frames:
            raise ValueError(f"frame_index {frame_index} is outside the clip's {frames} frames")
        chosen = slice(None) if frame_index is None else slice(frame_index, frame_index + 1)
        images = self._pad(clip[:, chosen].flatten(0, 1))
        expected = (batch, frames, images.shape[-2] // self.encoder.base_stride,
                    images.shape[-1] // self.encoder.base_stride)
        if (features.shape[0], features.shape[1], *features.shape[-2:]) != expected:
            raise ValueError(f"features of shape {tuple(features.shape)} do not belong to a clip of shape "
                             f"{tuple(clip.shape)}: expected (B, N_f) = {expected[:2]} and (h, w) = {expected[2:]}")

        tokens, grid = self.patch_embed(features.flatten(0, 1), frames)
        routing: ExpertRouting | None = None
        for block in self.blocks:
            tokens, routing = block(tokens, grid)

        combined = _frame_maps(tokens, grid, frame_index)  # X̂
        if routing is None:  # M1: every decoder sees concat(X̂, X̂)
            components = [combined] * 3
        else:  # P̂^j
            components = [_frame_maps(routing.component(j), grid, frame_index) for j in (SNOW, TRANSMISSION, AIRLIGHT)]
        snow = self.snow_decoder(components[SNOW], combined)
        transmission = to_transmission(self.transmission_decoder(components[TRANSMISSION], combined))
        airlight = to_airlight(self.airlight_decoder(components[AIRLIGHT], combined))
        encoded_input = self.input_projection(features[:, chosen].flatten(0, 1))
        background = prior_guided_recovery(encoded_input, snow, transmission, airlight, self.beta)
        restored = (images + self.rgb_decoder(background))[..., :height, :width]
        desnowed_only = None
        if snow_only:
            desnowed_only = (images + self.rgb_decoder(encoded_input - snow))[..., :height, :width]
            desnowed_only = desnowed_only.reshape(batch, -1, 3, height, width)
        return VDNOutput(frames=restored.reshape(batch, -1, 3, height, width), background=background, snow=snow,
                         transmission=transmission, airlight=airlight,
                         router_q=None if routing is None else routing.q,
                         router_d=None if routing is None else routing.d, snow_only=desnowed_only)

    def forward(self, clip: torch.Tensor, snow_only: bool = False) -> VDNOutput:
        """Restore every frame of a clip (B, N_f, 3, H, W) in [0, 1] (``snow_only``: see :meth:`restore`)."""
        if clip.ndim != 5:
            raise ValueError(f"VDN expects a clip of shape (B, N_f, 3, H, W), got {tuple(clip.shape)}")
        features = self.encode(clip.flatten(0, 1))
        return self.restore(features.reshape(*clip.shape[:2], *features.shape[1:]), clip, snow_only=snow_only)
