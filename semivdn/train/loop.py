"""Training of one variant: supervised warm-up (M1, M2) and mean teacher (M3) with DCR (full).

Paper §3.3–3.4: L_overall = L_sup + μ(r)·L_un (Eq. 10), L_un = Eq. 9 (+ λ·L_DCR,
Eq. 12, for the full model), teacher = EMA of the student (Eq. 7). Every random
choice is a function of ``(seed, iteration)`` and the checkpoint holds all state,
so ``--resume`` after a kill continues bit-exactly on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from semivdn.config import Config, ConfigError, Variant
from semivdn.data.datasets import WindowDataset, clip_refs, load_manifest, read_clip, window_loader
from semivdn.devices import describe_device, resolve_device
from semivdn.eval.metrics import Metric, create_metric
from semivdn.inference import desnow_clip
from semivdn.losses import DCR, SupervisedLoss, UnsupervisedLoss, load_perceptual_backbone, ramp_up
from semivdn.models import create_model
from semivdn.models.checkpoint import save_checkpoint
from semivdn.ranks import gather_across_ranks
from semivdn.registry import load_model_ref, log_model
from semivdn.tracking import configure_mlflow, git_commit
from semivdn.train.augment import ToneJitter, strong_augment
from semivdn.train.distributed import DistContext, init_distributed, shutdown_distributed
from semivdn.train.ema import TeacherAverager, poly_decay
from semivdn.train.state import STATE_FILE, load_state, save_state

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
CURVE_FILE = "curve.csv"
CURVE_FIELDS = ("step", "loss", "sup", "unsup", "dcr", "mu", "lr")


@contextlib.contextmanager
def numpy_blas_single_threaded() -> Iterator[None]:
    """Hold NumPy's BLAS to one thread while PyTorch trains.

    Its work in a training step (DCR's GMMs and KL, Eq. 11-12, on 256 × 16 samples) is too small
    to share, and OpenBLAS threads keep spinning after each call, starving PyTorch's own threads
    in the backward pass: that alone made the full variant's step 60 % slower than M3's. PyTorch
    threads through OpenMP, which this leaves alone.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def data_hash(manifest_rows: Any) -> str:
    """One digest over the content hashes of the clips a run trains on."""
    digest = hashlib.sha256()
    for value in sorted(manifest_rows["content_hash"]):
        digest.update(str(value).encode())
    return digest.hexdigest()[:16]


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _flatten(f"{prefix}.{key}" if prefix else str(key), inner)
    else:
        yield prefix, value


@dataclass
class TrainState:
    """Where a run is, besides the modules and optimizer (which the checkpoint holds too)."""

    iteration: int = 0
    run_id: str | None = None


@dataclass
class Batch:
    """One step's clips; ``real`` (unlabelled) only where the teacher labels (:meth:`Trainer.labels_at`)."""

    labelled_snowy: torch.Tensor
    clean: torch.Tensor
    real: torch.Tensor | None


@dataclass
class PseudoLabels:
    """The teacher's output on one batch of unlabelled clips, kept for the ``train.teacher_reuse`` steps it serves.

    Under DDP it holds every rank's batch in rank order (:meth:`across_ranks`), as DCR's bank is global, so
    rank 0's checkpoint resumes every rank; each rank trains on its own share (:meth:`rank_share`).
    """

    real: torch.Tensor  # the plain clips (B, N_f, 3, H, W)
    frames: torch.Tensor  # the teacher's restoration of them
    background: torch.Tensor  # U_B^T (Eq. 12), (B·N_f, C, h, w)
    snow: torch.Tensor  # U_Snow^T (Eq. 12)

    def state(self) -> dict[str, torch.Tensor]:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def across_ranks(self) -> PseudoLabels:
        """Every rank's pseudo-labels, concatenated in rank order (a collective: all ranks call it); alone, itself."""
        return PseudoLabels(**{name: gather_across_ranks(tensor) for name, tensor in self.state().items()})

    def rank_share(self, rank: int, world: int) -> PseudoLabels:
        """The part of :meth:`across_ranks`' result that ``rank`` of ``world`` labelled."""
        return PseudoLabels(**{name: tensor.chunk(world)[rank] for name, tensor in self.state().items()})


class Trainer:
    """Owns the student, the optional teacher, the losses and the optimisation step."""

    def __init__(self, cfg: Config, variant_name: str, device: torch.device, dist_ctx: DistContext) -> None:
        self.cfg = cfg
        self.variant_name = variant_name
        self.variant: Variant = cfg.variant(variant_name)
        self.model_cfg = cfg.model_for(variant_name)
        if self.model_cfg.members != 1:
            raise ConfigError(f"model.members={self.model_cfg.members}: an ensemble is assembled from trained "
                              "checkpoints (`semivdn ensemble`), not trained; train its members one by one")
        self.device = device
        self.dist = dist_ctx
        torch.manual_seed(cfg.seed)
        self.student = create_model(self.model_cfg, cfg.weights.cache_dir).to(device)
        self.teacher: nn.Module | None = None
        self.averager: TeacherAverager | None = None
        self.pseudo: PseudoLabels | None = None
        self.student_params = list(self.student.parameters())  # collected once: gradient clipping walks them each step
        backbone = load_perceptual_backbone(cfg)  # one VGG16 shared by Eq. 8 and Eq. 9
        self.sup_loss = SupervisedLoss(cfg, backbone).to(device)
        self.unsup_loss = UnsupervisedLoss(cfg, backbone).to(device) if self.variant.mean_teacher else None
        self.dcr = DCR(cfg).to(device) if self.variant.dcr else None
        # fused: one kernel over all parameters instead of a Python loop over ~200 small tensors
        self.optimizer = torch.optim.AdamW(self.student_params, lr=cfg.train.lr,
                                           weight_decay=cfg.train.weight_decay, fused=True)
        total, power = cfg.train.iters, cfg.train.poly_power
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda it: poly_decay(it, total, power))
        self.wrapped: nn.Module = (DistributedDataParallel(self.student) if dist_ctx.enabled else self.student)

    def init_from(self, checkpoint: nn.Module) -> None:
        """Start from another variant's weights (M3 and full start from M2)."""
        try:
            self.student.load_state_dict(checkpoint.state_dict(), strict=True)
        except RuntimeError as exc:
            raise RuntimeError(f"initial weights do not match variant {self.variant_name}'s architecture: {exc}"
                               ) from exc

    def start_teacher(self) -> None:
        """The teacher starts as a copy of the student (Eq. 7).

        It only runs forward, so its weights are stored channels-last, the layout its convolutions
        receive inside the network: mkldnn would otherwise re-lay every conv weight out at each call.
        """
        if self.variant.mean_teacher:
            self.teacher = copy.deepcopy(self.student).eval().to(memory_format=torch.channels_last)
            for param in self.teacher.parameters():
                param.requires_grad_(False)
            self.averager = TeacherAverager(self.teacher, self.student)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda" and self.cfg.train.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def labels_at(self, iteration: int) -> bool:
        """Whether the teacher labels a new unlabelled batch at this step (the batch must then carry ``real``).

        Each pseudo-label serves ``train.teacher_reuse`` steps, each under its own strong augmentation:
        the teacher's forward pass, most of what a mean-teacher step costs beyond a supervised one,
        then runs at every k-th step only.
        """
        return self.teacher is not None and iteration % self.cfg.train.teacher_reuse == 0

    def step(self, batch: Batch, iteration: int) -> dict[str, float]:
        """One optimisation step, Eq. 10; returns the logged loss parts.

        Labelled and (augmented) unlabelled clips go through the student in one
        forward pass: cheaper, and DDP needs exactly one forward per backward.
        Run it under :func:`numpy_blas_single_threaded`, as ``run_training`` does.
        """
        self.student.train()
        labelled = batch.labelled_snowy.shape[0]
        inputs, real_aug, tone = batch.labelled_snowy, None, None
        if self.teacher is not None:
            if self.labels_at(iteration):
                if batch.real is None:
                    raise ValueError(f"step {iteration}: the teacher labels unlabelled clips at this step, "
                                     "but the batch has none")
                self.pseudo = self._label(batch.real).across_ranks()
            if self.pseudo is None:
                raise ValueError(f"step {iteration}: no pseudo-labels yet; the teacher labels at multiples of "
                                 f"train.teacher_reuse = {self.cfg.train.teacher_reuse}")
            pseudo = self.pseudo.rank_share(self.dist.rank, self.dist.world)
            generator = torch.Generator().manual_seed(_derived_seed(self.cfg.seed, iteration, 7))
            real_aug, tone = strong_augment(pseudo.real, generator)
            inputs = torch.cat([inputs, real_aug])
        with self.autocast():
            out = self.wrapped(inputs, snow_only=self.sup_loss.wants_snow_only)
            pred = out.frames[:labelled].flatten(0, 1).float()
            snow_only = None if out.snow_only is None else out.snow_only[:labelled].flatten(0, 1).float()
            loss, sup_parts = self.sup_loss(pred, batch.clean.flatten(0, 1), snow_only)
            parts = {"sup": float(loss.detach()), **_prefixed("sup", sup_parts)}
            if real_aug is not None:
                assert tone is not None
                unsup, unsup_parts = self._unsupervised(out, labelled, pseudo, real_aug, tone)
                mu = ramp_up(iteration, self.cfg.train.iters, self.cfg.train.mu_max)
                loss = loss + mu * unsup
                parts.update(unsup_parts, unsup=float(unsup.detach()), mu=mu)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.student_params, self.cfg.train.grad_clip, foreach=True)
        self.optimizer.step()
        self.scheduler.step()
        if self.averager is not None:
            self.averager.update(self.cfg.train.ema)
        parts["loss"] = float(loss.detach())
        parts["lr"] = self.optimizer.param_groups[0]["lr"]
        return parts

    @torch.inference_mode()
    def _label(self, real: torch.Tensor) -> PseudoLabels:
        """The teacher's output on the plain unlabelled clips (Eq. 9's target, Eq. 12's U^T features)."""
        assert self.teacher is not None
        with self.autocast():
            out = self.teacher(real)
        return PseudoLabels(real, out.frames.float(), out.background, out.snow)

    def _unsupervised(self, out: Any, labelled: int, pseudo: PseudoLabels, real_aug: torch.Tensor,
                      tone: ToneJitter) -> tuple[torch.Tensor, dict[str, float]]:
        """Eq. 9 on unlabelled clips, plus Eq. 12 for the full model.

        The student sees the strong augmentation; its target is the teacher's output on the plain clip
        under the augmentation's tone map (see :mod:`semivdn.train.augment`).
        """
        assert self.unsup_loss is not None
        with torch.inference_mode():
            target = tone(pseudo.frames).clamp(0.0, 1.0)
        unsup, unsup_parts = self.unsup_loss(out.frames[labelled:].flatten(0, 1).float(),
                                             target.flatten(0, 1), real_aug.flatten(0, 1))
        parts = _prefixed("unsup", unsup_parts)
        if self.dcr is not None:
            split = labelled * self.cfg.data.frames_per_clip
            # Eq. 12 on (G_B^S, G_Snow^S, U_B^S, U_Snow^S, U_B^T, U_Snow^T); already weighted
            dcr, dcr_parts = self.dcr(out.background[:split], out.snow[:split], out.background[split:],
                                      out.snow[split:], pseudo.background, pseudo.snow)
            unsup = unsup + dcr
            parts.update(dcr_parts)
        return unsup, parts

    def unavailable(self) -> dict[str, str]:
        """Loss terms that are off for lack of weights, with the reason (logged, never hidden)."""
        terms = dict(self.sup_loss.unavailable)
        if self.unsup_loss is not None:
            terms.update(self.unsup_loss.unavailable)
        return terms

    def state_dict(self, state: TrainState) -> dict[str, Any]:
        return {
            "iteration": state.iteration,
            "run_id": state.run_id or "",
            "student": self.student.state_dict(),
            "teacher": self.teacher.state_dict() if self.teacher is not None else {},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "dcr": self.dcr.state_dict() if self.dcr is not None else {},
            "pseudo": self.pseudo.state() if self.pseudo is not None else {},
        }

    def load_state_dict(self, saved: dict[str, Any]) -> TrainState:
        self.student.load_state_dict(saved["student"])
        if self.teacher is not None:
            self.teacher.load_state_dict(saved["teacher"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if self.dcr is not None:
            self.dcr.load_state_dict(saved["dcr"])
        pseudo = saved.get("pseudo")  # absent in checkpoints from before train.teacher_reuse
        self.pseudo = PseudoLabels(**{k: v.to(self.device) for k, v in pseudo.items()}) if pseudo else None
        torch.set_rng_state(saved["torch_rng"])
        return TrainState(iteration=int(saved["iteration"]), run_id=saved["run_id"] or None)


@torch.no_grad()
def validate(model: nn.Module, clips: list[tuple[Path, Path]], n_frames: int, device: torch.device,
             metrics: dict[str, Metric]) -> dict[str, float]:
    """Mean PSNR/SSIM over every frame of the paired val clips (scenes held out from training and from test)."""
    model.eval()
    scores: dict[str, list[float]] = {name: [] for name in metrics}
    for snowy_path, clean_path in clips:
        restored = desnow_clip(model, read_clip(snowy_path).to(device), n_frames).cpu()
        clean = read_clip(clean_path)
        for name, metric in metrics.items():
            scores[name].extend(metric(restored, clean).tolist())
    return {f"val_{name}": float(np.mean(values)) for name, values in scores.items()}


def _image_grid(snowy: torch.Tensor, restored: torch.Tensor, clean: torch.Tensor) -> np.ndarray:
    """Input | output | ground truth of one centre frame, as uint8 HWC."""
    row = torch.cat([snowy, restored.clamp(0, 1), clean], dim=-1)
    return (row.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def _prefixed(prefix: str, parts: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{name}": value for name, value in parts.items() if name != "total"}


def _derived_seed(seed: int, iteration: int, stream: int) -> int:
    """A reproducible seed for one random stream at one iteration (resume-safe)."""
    return int(np.random.default_rng([seed, iteration, stream]).integers(2**31 - 1))


def run_training(cfg: Config, variant: str, raw_root: Path, curated: Path, out_dir: Path, resume: bool = False,
                 init: str | None = None, metrics_path: str | None = None,
                 curve_path: str | None = None) -> dict[str, Any]:
    """Train ``variant`` and write ``out_dir/model.safetensors``; returns the final metrics."""
    cfg = dataclasses.replace(cfg, train=cfg.train_for(variant))  # the variant's overrides, logged as such
    device = resolve_device(cfg.train.device)
    dist_ctx = init_distributed(device)
    if device.type == "cuda":
        device = torch.device("cuda", dist_ctx.local_rank)
        torch.cuda.set_device(device)
    try:
        curve = Path(curve_path) if curve_path else Path(out_dir) / CURVE_FILE
        with numpy_blas_single_threaded():
            return _run(cfg, variant, raw_root, curated, Path(out_dir), resume, init, metrics_path, curve, device,
                        dist_ctx)
    finally:
        shutdown_distributed(dist_ctx)


def _run(cfg: Config, variant: str, raw_root: Path, curated: Path, out_dir: Path, resume: bool, init: str | None,
         metrics_path: str | None, curve_path: Path, device: torch.device, dist_ctx: DistContext) -> dict[str, Any]:
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    trainer = Trainer(cfg, variant, device, dist_ctx)
    spec = trainer.variant
    if init == "none":  # explicitly from scratch, whatever the variant's default
        init_ref = None
    else:
        init_ref = init or (str(Path(cfg.paths.models) / spec.init / MODEL_FILE) if spec.init else None)
    state_path = out_dir / STATE_FILE
    resuming = resume and state_path.is_file()
    if resume and not resuming:
        log.info("no checkpoint at %s: starting %s from scratch", state_path, variant)
    if init_ref and not resuming:
        model, meta = load_model_ref(init_ref, cfg)
        trainer.init_from(model)
        log.info("%s starts from %s (%s)", variant, init_ref, meta.get("variant", "?"))
    trainer.start_teacher()
    state = trainer.load_state_dict(load_state(state_path)) if resuming else TrainState()
    if state.iteration > cfg.train.iters:  # would relabel the model and overwrite its state
        raise ValueError(f"{state_path} is at iteration {state.iteration}, beyond train.iters={cfg.train.iters} "
                         f"for {variant}; resume with iters >= {state.iteration} or train into a new --out")

    manifest = load_manifest(curated)
    manifest_hash, commit = data_hash(manifest), git_commit()  # the data and code this process trains on
    n_frames = cfg.data.frames_per_clip
    paired_clips = clip_refs(manifest, raw_root, "paired", "train")
    paired = WindowDataset(paired_clips, n_frames, cfg.data.crop, cfg.data.flip, paired=True,
                           permute_colors=cfg.data.permute_colors, identity_fraction=cfg.data.identity_fraction)
    start, stop = state.iteration, cfg.train.iters
    paired_iter = iter(window_loader(paired, cfg.train.batch_size, cfg.seed, start, stop, cfg.data.workers,
                                         dist_ctx.rank, dist_ctx.world))
    real_iter = None
    if spec.mean_teacher:
        real = WindowDataset(clip_refs(manifest, raw_root, "real", "train"), n_frames, cfg.data.crop,
                             cfg.data.flip, paired=False)
        real_iter = iter(window_loader(real, cfg.train.unlabelled_batch_size, cfg.seed + 1, start, stop,
                                       cfg.data.workers, dist_ctx.rank, dist_ctx.world, cfg.train.teacher_reuse))
    val_clips = [(c.snowy, c.clean) for c in clip_refs(manifest, raw_root, "paired", "val") if c.clean]

    out_dir.mkdir(parents=True, exist_ok=True)
    main = dist_ctx.is_main
    run = contextlib.nullcontext()
    if main:
        configure_mlflow(cfg)
        run = mlflow.start_run(run_id=state.run_id, run_name=None if state.run_id else f"train-{variant}")
    with run as active:
        if main:
            assert active is not None
            if state.run_id is None:
                state.run_id = active.info.run_id
                params = dict(_flatten("", {k: v for k, v in cfg.to_dict().items() if k != "variants"}))
                params.update({f"variant.{k}": v for k, v in dataclasses.asdict(spec).items()})
                mlflow.log_params(params)  # MLflow batches them itself (MAX_PARAMS_TAGS_PER_BATCH)
                mlflow.set_tags({
                    "variant": variant, "git_commit": commit, "profile": cfg.profile,
                    "data.paired_train_hash": data_hash(manifest[(manifest.source == "paired")
                                                                 & (manifest.split == "train")]),
                    "data.manifest_hash": manifest_hash, "init": init_ref or "",
                    **{f"loss_unavailable.{term}": reason for term, reason in trainer.unavailable().items()},
                })
            curve_path.parent.mkdir(parents=True, exist_ok=True)
            _truncate_curve(curve_path, start)
        metrics = _loop(cfg, trainer, state, paired_iter, real_iter, val_clips, start, stop, out_dir, curve_path,
                        main, n_frames)
        if main:
            final = out_dir / MODEL_FILE
            save_checkpoint(final, trainer.student, trainer.model_cfg,
                            meta={"variant": variant, "mlflow_run_id": state.run_id, "iteration": stop,
                                  "data_hash": manifest_hash, "profile": cfg.profile, "git_commit": commit})
            mlflow.log_metrics({f"final_{k}": v for k, v in metrics.items() if isinstance(v, float)})
            log_model(cfg, final)
            metrics.update(variant=variant, mlflow_run_id=state.run_id, checkpoint=str(final),
                           recipe={"init": init_ref, "lr": spec.lr or cfg.train.lr, "crop": cfg.data.crop,
                                   "batch_size": cfg.train.batch_size, "device": describe_device(device),
                                   "real_batch_size": cfg.train.unlabelled_batch_size if spec.mean_teacher else 0,
                                   "teacher_reuse": cfg.train.teacher_reuse if spec.mean_teacher else 0,
                                   "identity_fraction": cfg.data.identity_fraction,
                                   "snow_stream": cfg.loss.snow_stream,
                                   "data_hash": manifest_hash, "git_commit": commit})
            if metrics_path:
                Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
                Path(metrics_path).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


class TrainingDiverged(RuntimeError):
    """A loss term became NaN or infinite: training stops before any checkpoint of the broken weights."""


def _stop_if_diverged(parts: dict[str, float], iteration: int) -> None:
    broken = {name: value for name, value in parts.items() if not math.isfinite(value)}
    if broken:
        terms = ", ".join(f"{name}={value}" for name, value in broken.items())
        raise TrainingDiverged(f"training diverged at iteration {iteration}: non-finite loss ({terms}); "
                               "nothing was checkpointed from this step; lower train.lr or check the data")


def _truncate_curve(path: Path, start: int) -> None:
    """Keep the loss curve rows from before ``start`` (a resume re-logs the rest)."""
    rows = []
    if start > 0 and path.is_file():
        with path.open() as handle:
            rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= start]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CURVE_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _loop(cfg: Config, trainer: Trainer, state: TrainState, paired_iter: Iterator, real_iter: Iterator | None,
          val_clips: list[tuple[Path, Path]], start: int, stop: int, out_dir: Path, curve_path: Path, main: bool,
          n_frames: int) -> dict[str, Any]:
    device = trainer.device
    tcfg = cfg.train
    began = time.perf_counter()
    val_metrics = {name: create_metric(name, cfg, device) for name in ("psnr", "ssim")} if main else {}
    parts: dict[str, float] = {}
    val: dict[str, float] = {}
    progress = tqdm(range(start, stop), initial=start, total=stop, desc=f"train {trainer.variant_name}",
                    disable=not main, dynamic_ncols=True)
    for iteration in progress:
        paired_batch = next(paired_iter)
        real_batch = next(real_iter)["snowy"].to(device) if real_iter is not None and trainer.labels_at(iteration) \
            else None
        batch = Batch(paired_batch["snowy"].to(device), paired_batch["clean"].to(device), real_batch)
        parts = trainer.step(batch, iteration)
        done = iteration + 1
        _stop_if_diverged(parts, done)
        progress.set_postfix(loss=f"{parts['loss']:.4f}", lr=f"{parts['lr']:.2e}")
        if not main:
            continue
        if done % tcfg.log_every == 0 or done == stop:
            mlflow.log_metrics({f"train_{k}": v for k, v in parts.items()}, step=done)
            with curve_path.open("a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=CURVE_FIELDS, extrasaction="ignore").writerow(
                    {"step": done, **{k: parts.get(k, "") for k in CURVE_FIELDS[1:]}})
        if val_clips and (done % tcfg.val_every == 0 or done == stop):
            val = validate(trainer.student, val_clips, n_frames, device, val_metrics)
            mlflow.log_metrics(val, step=done)
        if done % tcfg.image_every == 0 or done == stop:
            with torch.no_grad():
                trainer.student.eval()
                restored = trainer.student(batch.labelled_snowy[:1]).frames[0, n_frames // 2]
            grid = _image_grid(batch.labelled_snowy[0, n_frames // 2], restored, batch.clean[0, n_frames // 2])
            mlflow.log_image(grid, artifact_file=f"images/step_{done:07d}.png")
        if done % tcfg.checkpoint_every == 0 and done < stop:
            state.iteration = done
            save_state(out_dir / STATE_FILE, trainer.state_dict(state))
    state.iteration = stop
    seconds = time.perf_counter() - began
    if main:
        save_state(out_dir / STATE_FILE, trainer.state_dict(state))
    return {"iterations": stop, "final_loss": parts.get("loss"), **val,
            "seconds": round(seconds, 2), "it_per_s": round((stop - start) / max(seconds, 1e-9), 3)}
