"""Physics Transformer Blocks with Temporal Decoupling Experts (paper §3.2, Eq. 2-5).

Tokens of all N_f frames of a clip form one sequence (B, N_f·m, d), frame-major, so
attention and the experts' router see the whole clip at once. Choices the paper leaves
open, and ours:

- Overlapped patch embedding: a 3×3 convolution with stride 2 on each frame's h/4 map,
  so m = (h/8)·(w/8); stride 2 keeps joint attention over N_f frames affordable on CPU.
- Attention: multi-head over all N_f·m tokens; keys and values come from a per-frame
  strided convolution (spatial reduction, ``sr_ratio``, as in PVT/SegFormer).
- Fusion FFN (FuseFormer): the hidden tokens are folded back to each frame's grid and
  mixed by a depthwise 3×3 convolution before the second projection.
- Every PTB's second transformer uses the TDE (M1: a plain FFN instead); the experts of
  the last PTB give the physics components for the decoders.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

Grid = tuple[int, int, int]  # (frames, height, width) of the token grid


def tokens_to_maps(tokens: torch.Tensor, grid: Grid) -> torch.Tensor:
    """(B, N_f·h·w, C) tokens -> (B·N_f, C, h, w) per-frame maps."""
    frames, height, width = grid
    batch, _, channels = tokens.shape
    maps = tokens.reshape(batch, frames, height, width, channels).permute(0, 1, 4, 2, 3)
    return maps.reshape(batch * frames, channels, height, width)


def maps_to_tokens(maps: torch.Tensor, frames: int) -> torch.Tensor:
    """(B·N_f, C, h, w) per-frame maps -> (B, N_f·h·w, C) tokens."""
    batch_frames, channels, height, width = maps.shape
    tokens = maps.reshape(batch_frames // frames, frames, channels, height, width).permute(0, 1, 3, 4, 2)
    return tokens.reshape(batch_frames // frames, frames * height * width, channels)


class OverlapPatchEmbed(nn.Module):
    """Overlapped patch embedding of each frame's features: 3×3 conv, stride 2, LayerNorm."""

    stride = 2

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, 3, stride=self.stride, padding=1)
        self.norm = nn.LayerNorm(dim)

    def forward(self, maps: torch.Tensor, frames: int) -> tuple[torch.Tensor, Grid]:
        embedded = self.proj(maps)
        grid = (frames, embedded.shape[-2], embedded.shape[-1])
        return self.norm(maps_to_tokens(embedded, frames)), grid


class SpatialReductionAttention(nn.Module):
    """Multi-head attention of every token over spatially reduced keys/values of all frames."""

    def __init__(self, dim: int, heads: int, sr_ratio: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.reduce = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio) if sr_ratio > 1 else None
        self.reduce_norm = nn.LayerNorm(dim) if sr_ratio > 1 else None

    def forward(self, tokens: torch.Tensor, grid: Grid) -> torch.Tensor:
        batch, length, dim = tokens.shape
        context = tokens
        if self.reduce is not None and self.reduce_norm is not None:
            context = self.reduce_norm(maps_to_tokens(self.reduce(tokens_to_maps(tokens, grid)), grid[0]))
        head_dim = dim // self.heads
        query = self.query(tokens).reshape(batch, length, self.heads, head_dim).transpose(1, 2)
        key, value = self.key_value(context).reshape(batch, -1, 2, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(query, key, value)
        return self.proj(attended.transpose(1, 2).reshape(batch, length, dim))


class Mlp(nn.Module):
    """d -> hidden -> d with GELU: M1's plain FFN and each expert f_j (Eq. 4)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(tokens)))


class FusionFFN(nn.Module):
    """FuseFormer's fusion feed-forward network: hidden tokens mixed spatially per frame."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.mix = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, tokens: torch.Tensor, grid: Grid) -> torch.Tensor:
        hidden = tokens_to_maps(self.fc1(tokens), grid)
        return self.fc2(F.gelu(maps_to_tokens(self.mix(hidden), grid[0])))


@dataclass
class ExpertRouting:
    """What the TDE router computed for one clip: Q (Eq. 2), D (Eq. 5) and the expert outputs Ẽ (Eq. 4)."""

    q: torch.Tensor  # (B, N_f·m, n), softmax over tokens
    d: torch.Tensor  # (B, N_f·m, n), softmax over experts
    expert_tokens: torch.Tensor  # (B, n, d)

    def component(self, index: int) -> torch.Tensor:
        """P^j: expert j's contribution D_{:,j}·Ẽ_j to every token, (B, N_f·m, d); the P^j sum to C."""
        return self.d[..., index : index + 1] * self.expert_tokens[:, index : index + 1, :]


class TemporalDecouplingExperts(nn.Module):
    """Soft mixture of physics experts over all temporal tokens (Eq. 2-5).

    Experts 0, 1, 2 are snow S, transmission T and atmospheric light A; any further
    experts only add to the combined tokens C.
    """

    def __init__(self, dim: int, hidden: int, experts: int) -> None:
        super().__init__()
        self.router = nn.Parameter(torch.randn(dim, experts) * dim**-0.5)  # Γ ∈ R^{d×n}
        self.experts = nn.ModuleList(Mlp(dim, hidden) for _ in range(experts))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, ExpertRouting]:
        logits = tokens @ self.router  # ZΓ, (B, N_f·m, n)
        q = logits.softmax(dim=1)  # Eq. 2
        slots = q.transpose(1, 2) @ tokens  # Z̃ = Qᵀ Z, (B, n, d), Eq. 3
        expert_tokens = torch.stack([f(slots[:, j]) for j, f in enumerate(self.experts)], dim=1)  # Eq. 4
        d = logits.softmax(dim=2)  # Eq. 5
        return d @ expert_tokens, ExpertRouting(q=q, d=d, expert_tokens=expert_tokens)  # C = D Ẽ


class PhysicsTransformerBlock(nn.Module):
    """Two pre-norm transformers: attention + Fusion FFN, then attention + TDE (or a plain FFN for M1)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, sr_ratio: int, experts: int, tde: bool) -> None:
        super().__init__()
        hidden = max(1, round(dim * mlp_ratio))
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = SpatialReductionAttention(dim, heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim)
        self.fusion_ffn = FusionFFN(dim, hidden)
        self.norm3 = nn.LayerNorm(dim)
        self.attn2 = SpatialReductionAttention(dim, heads, sr_ratio)
        self.norm4 = nn.LayerNorm(dim)
        self.mixer: TemporalDecouplingExperts | Mlp = (TemporalDecouplingExperts(dim, hidden, experts) if tde
                                                       else Mlp(dim, hidden))

    def forward(self, tokens: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, ExpertRouting | None]:
        tokens = tokens + self.attn1(self.norm1(tokens), grid)
        tokens = tokens + self.fusion_ffn(self.norm2(tokens), grid)
        tokens = tokens + self.attn2(self.norm3(tokens), grid)
        if isinstance(self.mixer, TemporalDecouplingExperts):
            combined, routing = self.mixer(self.norm4(tokens))
            return tokens + combined, routing
        return tokens + self.mixer(self.norm4(tokens)), None
