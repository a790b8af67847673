"""Distribution-driven Contrastive Regularization (paper §3.4, Eq. 11 and 12).

Real snow-layer features U_Snow^S are modelled by a K-component GMM (Eq. 11). A FIFO bank of
recent synthetic snow-layer features G_Snow^S is searched for the ultra-positive Ĝ_Ultra^S: the
candidate whose own GMM is closest to the real one in KL divergence. Eq. 12 then pulls the anchor
U_B^T + U_Snow^S toward U_B^S + Ĝ_Ultra^S (same background, realistic synthetic snow) and pushes it
away from G_B^S + Aug(U_Snow^T) (other background, same snow), so the network attends to the
snow-invariant background.

Feature maps become GMM samples through :class:`SnowDescriptor`: each spatial position is a sample
and channels are its dimensions, reduced for speed to at most 16×16 = 256 positions per map
(adaptive average pooling) and at most 16 dimensions (a fixed, seeded Gaussian random projection,
which preserves distances up to small distortion by Johnson–Lindenstrauss).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.mixture import GaussianMixture
from torch import Tensor, nn

from semivdn.config import Config
from semivdn.ranks import gather_across_ranks

GMM_REG_COVAR = 1e-4  # added to every variance: a flat (e.g. all-zero) snow channel would be singular
GMM_MAX_ITER = 100
GMM_WARM_ITER = 10  # EM steps from the previous step's GMM: it tracks slowly drifting features, not a new fit
GMM_STARTS = 3
GMM_TOL = 1e-3  # scikit-learn's default: stop when the mean log-likelihood changes less
KL_SAMPLES = 1024
REAL_GMM_SAMPLES = 1024  # at most this many descriptor samples fit the real GMM (Eq. 11); see DCR.forward


def fit_gmm(features: Tensor | np.ndarray, k: int = 3, seed: int = 0,
            start: GaussianMixture | None = None) -> GaussianMixture:
    """Fit Eq. 11's GMM to ``features`` of shape (N samples, d dims).

    Diagonal covariances keep the fit at O(N·K·d) per EM step (full ones cost O(d²) more and need
    more samples to estimate); ``reg_covar`` = 1e-4 keeps constant dimensions non-singular. From
    scratch, EM starts from k-means++ seeds instead of a full k-means run and keeps the best of
    ``GMM_STARTS`` starts, since one start occasionally merges two modes (1 fit in 60 on synthetic
    3-mode data, 0 with 3). Given ``start`` (a GMM of the same K and d, e.g. the previous step's),
    EM starts from its parameters, runs once and at most ``GMM_WARM_ITER`` steps: features drift slowly
    between training steps, so a few EM steps track them (instead of ~25 × 3 from scratch).
    """
    array = features.detach().float().cpu().numpy() if isinstance(features, Tensor) else np.asarray(features)
    if array.ndim != 2:
        raise ValueError(f"fit_gmm: expected (samples, dims), got shape {array.shape}")
    if array.shape[0] < k:
        raise ValueError(f"fit_gmm: {array.shape[0]} samples cannot fit {k} components")
    if not np.isfinite(array).all():
        raise ValueError("fit_gmm: features contain NaN or infinite values")
    if start is not None and start.means_.shape == (k, array.shape[1]):
        return warm_em(array.astype(np.float64), start, GMM_WARM_ITER, seed)
    gmm = GaussianMixture(n_components=k, covariance_type="diag", reg_covar=GMM_REG_COVAR, random_state=seed,
                          init_params="k-means++", n_init=GMM_STARTS, max_iter=GMM_MAX_ITER)
    return gmm.fit(array.astype(np.float64))


def warm_em(samples: np.ndarray, start: GaussianMixture, max_iter: int, seed: int = 0) -> GaussianMixture:
    """EM for a diagonal GMM from ``start``'s parameters: scikit-learn's warm-started ``fit``, in a few NumPy lines.

    The same E and M steps (responsibilities; weighted means; weighted variances + ``GMM_REG_COVAR``)
    and the same stop (mean log-likelihood changing by less than ``GMM_TOL``) as ``GaussianMixture``
    with ``weights_init``/``means_init``/``precisions_init``, without its per-call input validation
    and bookkeeping, which cost ~1 ms per EM step on DCR's 256 × 16 samples: two warm fits per
    training step were 15 % of the full variant's step time. Capped at ``max_iter`` steps; an
    unconverged fit continues from here at the next training step.
    """
    weights, means, covariances = start.weights_, start.means_, start.covariances_
    previous, lower_bound, converged, steps = -np.inf, -np.inf, False, 0
    while steps < max_iter:
        steps += 1
        joint = _joint_log_density(samples, weights[None], means[None], covariances[None])[:, 0]  # (n, K)
        log_norm = _logsumexp(joint)
        responsibilities = np.exp(joint - log_norm[:, None])
        counts = responsibilities.sum(0) + 10 * np.finfo(np.float64).eps
        means = responsibilities.T @ samples / counts[:, None]
        covariances = responsibilities.T @ samples**2 / counts[:, None] - means**2 + GMM_REG_COVAR
        weights = counts / len(samples)
        lower_bound = float(log_norm.mean())
        if abs(lower_bound - previous) < GMM_TOL:
            converged = True
            break
        previous = lower_bound
    return diagonal_gmm(weights, means, covariances, seed, converged=converged, steps=steps, lower_bound=lower_bound)


def kl_divergences(p: GaussianMixture, candidates: list[GaussianMixture], samples: int = KL_SAMPLES,
                   seed: int = 0) -> list[float]:
    """Monte Carlo estimates of KL(p ‖ q) = E_{x~p}[log p(x) − log q(x)] for every q in ``candidates``.

    KL between GMMs has no closed form. With x_1..x_n ~ p the mean of log p(x_i) − log q(x_i) is an
    unbiased, consistent estimate whose standard error is std(log p − log q)/√n (about 1–3 % of the
    value at n = 1024 for the well-separated mixtures we compare). We prefer it to the variational
    and Goldberger matching approximations (Hershey & Olsen, ICASSP 2007) because those are biased
    by an amount that depends on component overlap, while Monte Carlo error shrinks with n and is
    cheap here (n·K·d scoring, K = 3, d ≤ 16). All candidates are scored on one set of samples
    (common random numbers), so Monte Carlo noise largely cancels in their ranking; the same
    ``seed`` draws the same samples.
    """
    if samples < 1:
        raise ValueError(f"kl_divergences: samples must be >= 1, got {samples}")
    x = _sample(p, samples, seed)
    log_p = diagonal_log_density(x, [p])[0]
    return [float(np.mean(log_p - log_q)) for log_q in diagonal_log_density(x, candidates)]


def diagonal_log_density(x: np.ndarray, mixtures: list[GaussianMixture]) -> np.ndarray:
    """log q(x) of (n, d) samples under each diagonal GMM, shape (len(mixtures), n), in one matrix product.

    Σ_d (x_d − μ_d)²/σ²_d expands to x²·(1/σ²) − 2x·(μ/σ²) + Σ μ²/σ², so every component of every
    mixture is scored at once (16 candidates × K = 3 components: one (n, d) × (d, 48) product)
    instead of one scikit-learn call with its input validation per candidate.
    """
    joint = _joint_log_density(x, np.stack([m.weights_ for m in mixtures]), np.stack([m.means_ for m in mixtures]),
                               np.stack([m.covariances_ for m in mixtures]))
    return _logsumexp(joint).T


def _joint_log_density(x: np.ndarray, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray) -> np.ndarray:
    """log w_k + log N(x; μ_k, σ²_k) of (n, d) samples for M mixtures of K diagonal components: (n, M, K)."""
    inverse = 1.0 / covariances  # (M, K, d)
    dims = means.shape[-1]
    constant = np.log(weights) - 0.5 * (dims * np.log(2 * np.pi) - np.log(inverse).sum(-1)
                                        + (means**2 * inverse).sum(-1))
    flat_inverse, flat_scaled = inverse.reshape(-1, dims), (means * inverse).reshape(-1, dims)
    quadratic = -0.5 * (x**2) @ flat_inverse.T + x @ flat_scaled.T  # (n, M·K)
    return quadratic.reshape(len(x), *means.shape[:2]) + constant


def _logsumexp(values: np.ndarray) -> np.ndarray:
    """log Σ exp over the last axis, stable."""
    top = values.max(axis=-1, keepdims=True)
    return top[..., 0] + np.log(np.exp(values - top).sum(-1))


def _sample(gmm: GaussianMixture, samples: int, seed: int) -> np.ndarray:
    """Draw ``samples`` points from a fitted diagonal GMM with our own seed: component by weight, then
    μ_k + σ_k·z. Direct NumPy, since scikit-learn's ``sample`` re-validates the model on every call
    (~1.5 ms, 10 % of DCR's cost per training step)."""
    rng = np.random.default_rng(seed)
    component = rng.choice(len(gmm.weights_), size=samples, p=gmm.weights_ / gmm.weights_.sum())
    noise = rng.standard_normal((samples, gmm.means_.shape[1]))
    return gmm.means_[component] + np.sqrt(gmm.covariances_[component]) * noise


def gmm_state(gmm: GaussianMixture) -> dict[str, Tensor]:
    """A fitted diagonal GMM as tensors (checkpointable with ``weights_only=True``)."""
    return {name: torch.from_numpy(np.asarray(getattr(gmm, f"{name}_"), dtype=np.float64).copy())
            for name in ("weights", "means", "covariances")}


def gmm_from_state(state: dict[str, Tensor], seed: int = 0) -> GaussianMixture:
    """The inverse of :func:`gmm_state`: a GMM that scores, samples and warm-starts like the saved one."""
    weights, means, covariances = (state[name].double().numpy() for name in ("weights", "means", "covariances"))
    return diagonal_gmm(weights, means, covariances, seed)


def diagonal_gmm(weights: np.ndarray, means: np.ndarray, covariances: np.ndarray, seed: int = 0,
                 converged: bool = True, steps: int = 0, lower_bound: float = -np.inf) -> GaussianMixture:
    """A fitted scikit-learn diagonal GMM with these parameters: it scores, samples and warm-starts."""
    gmm = GaussianMixture(n_components=len(weights), covariance_type="diag", reg_covar=GMM_REG_COVAR,
                          max_iter=GMM_MAX_ITER, random_state=seed)
    gmm.weights_, gmm.means_, gmm.covariances_ = weights, means, covariances
    gmm.precisions_cholesky_ = 1.0 / np.sqrt(covariances)
    gmm.precisions_ = 1.0 / covariances
    gmm.converged_, gmm.n_iter_, gmm.lower_bound_ = converged, steps, lower_bound
    gmm.n_features_in_ = means.shape[1]
    return gmm


class SnowDescriptor:
    """Turns snow-layer feature maps into GMM samples: positions as samples, channels as dimensions.

    Args:
        max_positions: at most this many positions per map (average-pooled to a square grid).
        max_dims: channels above this are randomly projected down; the projection is fixed per
            channel count and seed, so real and synthetic features are projected the same way.
    """

    def __init__(self, max_positions: int = 256, max_dims: int = 16, seed: int = 0) -> None:
        self.grid = max(1, int(max_positions**0.5))
        self.max_dims = max_dims
        self.seed = seed
        self._projections: dict[int, Tensor] = {}

    def __call__(self, features: Tensor) -> np.ndarray:
        """(c, h, w) or (B, c, h, w) features → (B·positions, min(c, max_dims)) float64 samples."""
        maps = features.detach().float()
        maps = maps.unsqueeze(0) if maps.dim() == 3 else maps
        if maps.dim() != 4:
            raise ValueError(f"SnowDescriptor: expected (c, h, w) or (B, c, h, w), got {tuple(features.shape)}")
        pooled = F.adaptive_avg_pool2d(maps, (min(self.grid, maps.shape[-2]), min(self.grid, maps.shape[-1])))
        samples = pooled.flatten(2).transpose(1, 2).reshape(-1, maps.shape[1]).cpu()
        return (samples @ self._projection(maps.shape[1])).double().numpy()

    def _projection(self, channels: int) -> Tensor:
        if channels not in self._projections:
            if channels <= self.max_dims:
                matrix = torch.eye(channels)
            else:
                generator = torch.Generator().manual_seed(self.seed)
                matrix = torch.randn(channels, self.max_dims, generator=generator) / self.max_dims**0.5
            self._projections[channels] = matrix
        return self._projections[channels]


class SnowBank:
    """FIFO bank of recent synthetic snow-layer features G_Snow^S, each with its fitted GMM.

    Each candidate's GMM is fitted once, when it is added, warm-started from the newest
    candidate's (consecutive steps' snow features are alike). Selection ranks candidates by
    KL(real ‖ candidate): the forward KL penalises a candidate that misses any mode of the real
    snow (mode-covering), which is what a realistic stand-in must not do, and it lets all
    candidates be scored on one shared set of samples from the real GMM (:func:`kl_divergences`).
    """

    def __init__(self, capacity: int, components: int = 3, descriptor: SnowDescriptor | None = None,
                 seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"SnowBank: capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.components = components
        self.descriptor = descriptor or SnowDescriptor(seed=seed)
        self.seed = seed
        self._candidates: deque[tuple[Tensor, GaussianMixture]] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._candidates)

    def add(self, batch: Tensor) -> None:
        """Add each sample of a (B, c, h, w) batch (or one (c, h, w) map) as a detached candidate."""
        maps = batch.detach().unsqueeze(0) if batch.dim() == 3 else batch.detach()
        if maps.dim() != 4:
            raise ValueError(f"SnowBank.add: expected (c, h, w) or (B, c, h, w), got {tuple(batch.shape)}")
        if self._candidates and maps.shape[1:] != self._candidates[0][0].shape:
            raise ValueError(f"SnowBank.add: candidate shape {tuple(maps.shape[1:])} differs from the bank's "
                             f"{tuple(self._candidates[0][0].shape)}")
        for snow in maps:
            newest = self._candidates[-1][1] if self._candidates else None
            self._candidates.append((snow.clone(), fit_gmm(self.descriptor(snow), self.components, self.seed,
                                                           start=newest)))

    def candidates(self) -> list[Tensor]:
        """The stored candidates, oldest first."""
        return [snow for snow, _ in self._candidates]

    def divergences(self, real_gmm: GaussianMixture) -> list[float]:
        """KL(real ‖ candidate) for every candidate, oldest first."""
        if not self._candidates:
            raise ValueError("SnowBank: the bank is empty; add synthetic snow features first")
        return kl_divergences(real_gmm, [gmm for _, gmm in self._candidates], seed=self.seed)

    def closest(self, real_gmm: GaussianMixture) -> tuple[Tensor, float]:
        """Ĝ_Ultra^S of Eq. 12: the candidate (c, h, w) with the least KL(real ‖ candidate), and that KL."""
        divergences = self.divergences(real_gmm)
        best = int(np.argmin(divergences))
        return self._candidates[best][0], divergences[best]

    def state(self) -> dict[str, Any]:
        """Candidates and their GMMs as tensors: restoring them needs no refit, so resume is exact."""
        return {"snow": [snow.cpu() for snow, _ in self._candidates],
                "gmm": [gmm_state(gmm) for _, gmm in self._candidates]}

    def load(self, state: dict[str, Any]) -> None:
        self._candidates.clear()
        for snow, gmm in zip(state["snow"], state["gmm"], strict=True):
            self._candidates.append((snow, gmm_from_state(gmm, self.seed)))


def feature_augment(features: Tensor, generator: torch.Generator, jitter: float = 0.1) -> Tensor:
    """Aug() of Eq. 12: per sample, random flips, a random cyclic shift and per-channel gain.

    Flips (each with probability 1/2) and a roll by up to a quarter of the height and width move
    the snow pattern without changing its statistics; the gain multiplies each channel by a factor
    in [1 − jitter, 1 + jitter]. All randomness comes from ``generator`` (a CPU generator).
    """
    batch, channels, height, width = features.shape
    flips = torch.rand(batch, 2, generator=generator) < 0.5
    shifts = torch.stack([torch.randint(-(height // 4), height // 4 + 1, (batch,), generator=generator),
                          torch.randint(-(width // 4), width // 4 + 1, (batch,), generator=generator)], dim=1)
    gains = 1.0 + jitter * (2.0 * torch.rand(batch, channels, 1, 1, generator=generator) - 1.0)
    augmented = []
    for sample, (flip_v, flip_h), (shift_y, shift_x) in zip(features, flips.tolist(), shifts.tolist(), strict=True):
        dims = [d for d, flip in ((1, flip_v), (2, flip_h)) if flip]
        sample = sample.flip(dims) if dims else sample
        augmented.append(torch.roll(sample, shifts=(shift_y, shift_x), dims=(1, 2)))
    return torch.stack(augmented) * gains.to(device=features.device, dtype=features.dtype)


def _match_batch(tensor: Tensor, batch: int) -> Tensor:
    """Repeat (cyclically) or truncate ``tensor`` along dim 0 to ``batch`` samples."""
    return tensor[torch.arange(batch, device=tensor.device) % tensor.shape[0]]


def dcr_loss(u_b_t: Tensor, u_snow_s: Tensor, u_b_s: Tensor, g_ultra: Tensor, g_b_s: Tensor,
             aug_u_snow_t: Tensor, eps: float = 1e-7) -> Tensor:
    """Eq. 12: L1(U_B^T + U_Snow^S, U_B^S + Ĝ_Ultra^S) / (L1(U_B^T + U_Snow^S, G_B^S + Aug(U_Snow^T)) + ε).

    L1 is the mean absolute error. All U tensors are (B, c, h, w) from the unlabelled batch. The
    ultra-positive (c, h, w) or (1, c, h, w) is broadcast over B; G_B^S from the labelled batch may
    have another batch size and is repeated cyclically or truncated to B (labelled and unlabelled
    samples are unrelated, so any pairing is as good as another). Nothing is detached here: which
    inputs carry gradient is the caller's choice (see :class:`DCR`).
    """
    anchor = u_b_t + u_snow_s
    shape = tuple(anchor.shape)
    if anchor.dim() != 4 or any(tuple(t.shape) != shape for t in (u_b_s, aug_u_snow_t)):
        raise ValueError(f"dcr_loss: U tensors must share one (B, c, h, w) shape; got U_B^T+U_Snow^S {shape}, "
                         f"U_B^S {tuple(u_b_s.shape)}, Aug(U_Snow^T) {tuple(aug_u_snow_t.shape)}")
    ultra = g_ultra.unsqueeze(0) if g_ultra.dim() == 3 else g_ultra
    if tuple(ultra.shape) != (1, *shape[1:]) or tuple(g_b_s.shape[1:]) != shape[1:]:
        raise ValueError(f"dcr_loss: Ĝ_Ultra^S {tuple(g_ultra.shape)} and G_B^S {tuple(g_b_s.shape)} must match "
                         f"the U features' (c, h, w) = {shape[1:]}")
    positive = u_b_s + ultra
    negative = _match_batch(g_b_s, shape[0]) + aug_u_snow_t
    return F.l1_loss(anchor, positive) / (F.l1_loss(anchor, negative) + eps)


class DCR(nn.Module):
    """The DCR term: fit the real GMM (Eq. 11), pick the ultra-positive, return weight · Eq. 12.

    Gradients: teacher features (U_B^T, U_Snow^T) and bank entries are constants; the anchor's
    U_Snow^S and the positive's U_B^S train the student. The negative is detached, as negatives are
    in the contrastive losses this follows (refs [61, 65]): pushing a trainable negative away has no
    bound and would distort G_B^S, the labelled background features the supervised loss trains.

    Under DDP the bank and the real GMM are global: every rank gathers all ranks' synthetic snow
    maps and real snow descriptors, so all ranks hold the same state (the one rank 0 checkpoints)
    and a DDP run makes the choices a single process with the whole batch makes.

    Resume: the bank (maps and GMMs), the real GMM that warm-starts the next fit and the
    augmentation generator are the module's extra state, so ``state_dict()`` /
    ``load_state_dict()`` carry them (tensors only, loadable with ``torch.load(weights_only=True)``).

    Refresh: the distribution side of DCR (a bank entry, the real GMM fit of Eq. 11 and the KL
    search for the ultra-positive) runs every ``loss.dcr_refresh`` steps; the steps between reuse
    the chosen ultra-positive, while Eq. 12 itself is computed every step on that step's features.
    The distributions drift slowly (the warm-started EM already relies on it), and the bank then
    spans ``dcr_bank × dcr_refresh`` steps; with 1 (the paper's reading) everything runs per step.

    Args:
        cfg: uses ``loss.dcr`` (weight), ``loss.dcr_eps`` (ε), ``loss.gmm_components`` (K),
            ``loss.dcr_bank`` (bank capacity), ``loss.dcr_refresh`` and ``seed``.
    """

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.weight = cfg.loss.dcr
        self.eps = cfg.loss.dcr_eps
        self.components = cfg.loss.gmm_components
        self.seed = cfg.seed
        self.descriptor = SnowDescriptor(seed=cfg.seed)
        self.bank = SnowBank(cfg.loss.dcr_bank, cfg.loss.gmm_components, self.descriptor, cfg.seed)
        self.refresh = cfg.loss.dcr_refresh
        self.real_gmm: GaussianMixture | None = None
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.steps = 0  # forward calls so far: which ones refresh
        self.ultra: tuple[Tensor, float] | None = None  # Ĝ_Ultra^S of the last refresh and its KL

    def forward(self, g_b_s: Tensor, g_snow_s: Tensor, u_b_s: Tensor, u_snow_s: Tensor, u_b_t: Tensor,
                u_snow_t: Tensor) -> tuple[Tensor, dict[str, float]]:
        """On a refresh step, update the distributions (see the class docstring); then weight · L_DCR.

        A refresh adds one random synthetic snow map G_Snow^S of this step to the bank (not the
        whole batch: the bank stays spread over many steps, at one GMM fit instead of B·N_f), fits
        the real GMM to this step's U_Snow^S and picks the ultra-positive.

        Returns the weighted loss and ``{"dcr": unweighted L_DCR, "dcr_kl": KL of the chosen candidate}``.
        """
        if self.ultra is None or self.steps % self.refresh == 0:
            self._refresh(g_snow_s, u_snow_s)
        self.steps += 1
        assert self.ultra is not None
        ultra, divergence = self.ultra
        ultra = ultra.to(u_b_s.device)  # a resumed bank lives on the CPU
        negative_snow = feature_augment(u_snow_t.detach(), self.generator)
        value = dcr_loss(u_b_t.detach(), u_snow_s, u_b_s, ultra, g_b_s.detach(), negative_snow, self.eps)
        return self.weight * value, {"dcr": float(value.detach()), "dcr_kl": divergence}

    def _refresh(self, g_snow_s: Tensor, u_snow_s: Tensor) -> None:
        """Bank entry, Eq. 11's real GMM (warm-started from the last one) and the closest candidate."""
        synthetic = gather_across_ranks(g_snow_s.detach())
        pick = int(torch.randint(synthetic.shape[0], (1,), generator=self.generator))
        self.bank.add(synthetic[pick])
        real_samples = gather_across_ranks(torch.from_numpy(self.descriptor(u_snow_s)).to(u_snow_s.device))
        # every k-th sample, k fixed by the batch: a K = 3, d = 16 diagonal GMM is well determined by ~1000
        # samples, and a batch of 4 clips gives 3072 (EM costs O(samples): the fit was half of DCR's time)
        real_samples = real_samples[::max(1, math.ceil(len(real_samples) / REAL_GMM_SAMPLES))]
        self.real_gmm = fit_gmm(real_samples, self.components, self.seed, start=self.real_gmm)
        self.ultra = self.bank.closest(self.real_gmm)

    def get_extra_state(self) -> dict[str, Any]:
        return {"bank": self.bank.state(), "generator": self.generator.get_state(),
                "real_gmm": gmm_state(self.real_gmm) if self.real_gmm is not None else {},
                "steps": self.steps, "ultra": list(self.ultra) if self.ultra is not None else []}  # [map, KL]

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.bank.load(state["bank"])
        self.real_gmm = gmm_from_state(state["real_gmm"], self.seed) if state["real_gmm"] else None
        self.generator.set_state(state["generator"])
        self.steps = state["steps"]
        self.ultra = (state["ultra"][0], float(state["ultra"][1])) if state["ultra"] else None
