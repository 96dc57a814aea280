"""Trainers: LPCTrainer (Algorithm 1) and VAETrainer on the same decoder/encoder.

Both share one loop (``Trainer.fit``): seeded per-epoch data order, one Adam optimiser over decoder,
likelihood and encoder (same learning rate alpha, Algorithm 1), tqdm progress, per-step metrics as
JSON lines (and TensorBoard when installed), a PNG sample grid and an atomic checkpoint every epoch,
and exact resume (model, optimiser and RNG states).  Checkpoints hold only tensors and plain Python
values and load with ``torch.load(weights_only=True)``: no code runs on load.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import TrainConfig, atomic_write_text, resolve_device, write_run_metadata
from .errors import CheckpointError, DivergenceError
from .langevin import LangevinSampler
from .likelihoods import make_likelihood
from .model import GenerativeModel
from .models import build_decoder_encoder
from .objectives import negative_elbo, reparameterise, warm_start_loss

CHECKPOINT_FORMAT = "neuro_lpc-checkpoint-v1"


def build_model(config: TrainConfig, image_size: int, channels: int) -> tuple[GenerativeModel, nn.Module]:
    """The paper's decoder/encoder pair with the configured likelihood and prior."""
    decoder, encoder = build_decoder_encoder(image_size, channels, config.latent_dim)
    kw = {"sigma": config.likelihood_sigma, "learn_sigma": config.learn_sigma} if config.likelihood != "bernoulli" else {}
    model = GenerativeModel(decoder, make_likelihood(config.likelihood, **kw), prior_std=config.prior_std)
    return model, encoder


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint without executing code; a clear CheckpointError when it is missing or corrupt."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        ck = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to parse is a corrupt file
        raise CheckpointError(f"cannot read checkpoint {p}: the file is truncated or not a neuro_lpc checkpoint ({type(e).__name__})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p} is not a neuro_lpc checkpoint (format tag missing)")
    return ck


def load_trained(path: str | os.PathLike, device="cpu") -> tuple[GenerativeModel, nn.Module, TrainConfig, dict]:
    """Rebuild (model, encoder, config, checkpoint) from a checkpoint written by a trainer."""
    ck = read_checkpoint(path, map_location=device)
    config = TrainConfig.from_dict(ck["config"])
    model, encoder = restore_networks(config, ck, path, device)
    return model, encoder, config, ck


def restore_networks(config, ck: dict, path, device="cpu") -> tuple[GenerativeModel, nn.Module]:
    """Build the networks a checkpoint's config describes and load its weights (CheckpointError on mismatch)."""
    model, encoder = build_model(config, ck["image_size"], ck["channels"])
    try:
        model.load_state_dict(ck["model"])
        encoder.load_state_dict(ck["encoder"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit the model it describes: {str(e).splitlines()[0]}") from None
    return model.to(device), encoder.to(device)


class Trainer:
    """Common loop; subclasses implement ``train_step(x) -> dict`` of float-able metrics."""

    method = "base"

    def __init__(self, model: GenerativeModel, encoder: nn.Module, config: TrainConfig, out_dir: str | os.PathLike | None = None):
        self.config = config.validate()
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.encoder = encoder.to(self.device)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.optimizer = torch.optim.Adam(
            [{"params": list(self.model.parameters())}, {"params": list(self.encoder.parameters())}], lr=config.lr)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.epoch = 0
        self.global_step = 0
        self.stopped_by_wall = False
        self._tb = None

    # ------------------------------------------------------------ one step
    def train_step(self, x: torch.Tensor) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _clip_and_step(self) -> None:
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(list(self.model.parameters()) + list(self.encoder.parameters()), self.config.grad_clip)
        self.optimizer.step()

    # ---------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        shape = self.model.output_shape
        return {
            "format": CHECKPOINT_FORMAT, "method": self.method, "epoch": self.epoch, "global_step": self.global_step,
            "model": self.model.state_dict(), "encoder": self.encoder.state_dict(),
            "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
            "config": self.config.to_dict(), "channels": shape[0], "image_size": shape[-1],
        }

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Atomic: written to a temporary file, then renamed, so a crash never leaves a half checkpoint."""
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, p)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        ck = read_checkpoint(path, map_location=self.device)
        if ck.get("method") != self.method:
            raise CheckpointError(f"checkpoint {path} was written by a {ck.get('method')!r} trainer, not {self.method!r}")
        try:
            self.model.load_state_dict(ck["model"])
            self.encoder.load_state_dict(ck["encoder"])
            self.optimizer.load_state_dict(ck["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"checkpoint {path} does not fit this model: {str(e).splitlines()[0]}") from None
        self.generator.set_state(ck["generator"].cpu() if self.device.type == "cpu" else ck["generator"].cpu())
        self.epoch, self.global_step = int(ck["epoch"]), int(ck["global_step"])

    # ------------------------------------------------------------- logging
    def _log(self, record: dict) -> None:
        if self.out_dir is None:
            return
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self._tb.add_scalar(f"{self.method}/{k}", v, record["step"])

    def _truncate_metrics(self) -> None:
        """On resume drop metric lines written after the checkpoint (a crash mid-epoch)."""
        path = self.out_dir / "metrics.jsonl" if self.out_dir else None
        if path is None or not path.exists():
            return
        keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= self.global_step]
        atomic_write_text(path, "".join(ln + "\n" for ln in keep))

    def save_samples(self, path: str | os.PathLike, n: int | None = None) -> None:
        from torchvision.utils import save_image

        n = n or self.config.sample_grid
        g = torch.Generator(device=self.device).manual_seed(12345)  # fixed, separate from the training stream
        imgs = self.model.sample(n, generator=g)
        if imgs.dim() == 4:
            save_image((imgs.clamp(-1, 1) + 1) / 2, path, nrow=int(math.ceil(math.sqrt(n))))

    # ----------------------------------------------------------------- loop
    def make_epoch_loader(self, train_dataset):
        """The loader of epoch ``self.epoch``: its order fixed by the seed and the epoch (the data-parallel
        trainer of neuro_lpc.distributed overrides this with its shard of the same order)."""
        from .data import make_loader

        return make_loader(train_dataset, self.config.batch_size, shuffle=True, seed=self.config.seed * 100003 + self.epoch)

    def fit(self, train_dataset, epochs: int | None = None, resume: bool = False, progress: bool = True) -> list[dict]:
        """Train for ``epochs`` (default config.epochs) epochs in total; with ``resume`` continue from
        ``out_dir/checkpoint.pt``.  Returns per-step metric records of this call.

        With ``config.max_wall_s`` the loop stops after the first optimiser step that ends past that
        many seconds of this call's wall time (``self.stopped_by_wall`` is then True) and checkpoints
        there, mid-epoch; ``epochs`` is only an upper bound.  Such a run is finished: resuming it
        starts a fresh budget from the beginning of the interrupted epoch."""
        from .data import make_loader

        epochs = epochs if epochs is not None else self.config.epochs
        ckpt = self.out_dir / "checkpoint.pt" if self.out_dir else None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if not os.access(self.out_dir, os.W_OK):
                raise PermissionError(f"output folder is not writable: {self.out_dir}")
            if resume:
                if not ckpt.exists():
                    raise CheckpointError(f"--resume given but no checkpoint at {ckpt}")
                self.load_checkpoint(ckpt)
                self._truncate_metrics()
            write_run_metadata(self.out_dir, self.config, {"method": self.method})
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional
                self._tb = SummaryWriter(str(self.out_dir / "tb"))
            except Exception:  # noqa: BLE001 - tensorboard not installed
                self._tb = None
        elif resume:
            raise ValueError("resume needs an output folder")
        history = []
        t0 = time.perf_counter()
        self.stopped_by_wall = False
        budget = self.config.max_wall_s
        while self.epoch < epochs and not self.stopped_by_wall:
            loader = self.make_epoch_loader(train_dataset)
            nb = len(loader) if self.config.max_batches_per_epoch is None else min(len(loader), self.config.max_batches_per_epoch)
            bar = tqdm(total=nb, desc=f"{self.method} epoch {self.epoch + 1}/{epochs}", disable=not progress, leave=False)
            for i, (x, _) in enumerate(loader):
                if i >= nb:
                    break
                x = x.to(self.device, non_blocking=True)
                try:
                    metrics = self.train_step(x)
                except DivergenceError as e:
                    bar.close()
                    raise DivergenceError(f"epoch {self.epoch + 1}, batch {i + 1} (global step {self.global_step + 1}): {e}"
                                          + (f"; last good checkpoint kept at {ckpt}" if ckpt and ckpt.exists() else ""),
                                          step=e.step, chain=e.chain, unit=e.unit) from None
                self.global_step += 1
                if self.global_step % self.config.log_every == 0 or i == nb - 1:
                    rec = {"step": self.global_step, "epoch": self.epoch + 1, "wall_s": time.perf_counter() - t0,
                           **{k: float(v) for k, v in metrics.items()}}
                    if not all(math.isfinite(v) for v in rec.values()):
                        raise DivergenceError(f"non-finite training metric at global step {self.global_step}: {rec}", step=self.global_step)
                    history.append(rec)
                    self._log(rec)
                    bar.set_postfix(loss=f"{rec['loss']:.4g}")
                bar.update(1)
                if budget is not None and time.perf_counter() - t0 >= budget:
                    self.stopped_by_wall = True      # wall-time budget spent: stop mid-epoch, keep the checkpoint
                    break
            bar.close()
            if not self.stopped_by_wall:
                self.epoch += 1
            if self.out_dir is not None:
                self.save_checkpoint(ckpt)
                if self.config.sample_grid:
                    self.save_samples(self.out_dir / f"samples_epoch{self.epoch:03d}.png")
        if self._tb is not None:
            self._tb.close()
        return history


class LPCTrainer(Trainer):
    """Algorithm 1: warm start z(0) ~ q(z|x) (prior for the first ``prior_init_batches`` batches or with
    objective "none"), T Langevin steps with decoder gradients accumulated in one backward per step (eq. 8),
    the warm-start objective for the encoder, one Adam step on both."""

    method = "lpc"

    def __init__(self, model, encoder, config: TrainConfig, out_dir=None, sampler: LangevinSampler | None = None):
        super().__init__(model, encoder, config, out_dir)
        self.sampler = sampler or LangevinSampler(
            step_size=config.step_size, steps=config.langevin_steps, precondition=config.precondition,
            delta=config.precondition_delta, noise=config.noise_form, temperature=config.temperature)
        self.encoder_params = list(self.encoder.parameters())

    def initial_state(self, x, mean, var) -> torch.Tensor:
        if self.config.warm_start == "none" or self.global_step < self.config.prior_init_batches:
            return self.model.prior_sample(x.shape[0], self.generator, like=mean)
        return reparameterise(mean.detach(), var.detach(), self.generator)

    def train_step(self, x):
        cfg = self.config
        self.optimizer.zero_grad(set_to_none=True)
        mean, var = self.encoder(x)
        z0 = self.initial_state(x, mean, var)
        track = cfg.warm_start in ("forward", "jeffreys")
        res = self.sampler.sample(self.model, x, z0, generator=self.generator, accumulate_grad=True, track_moments=track)
        enc_loss = warm_start_loss(cfg.warm_start, self.model, x, mean, var, res, self.generator)
        if cfg.warm_start != "none":
            torch.autograd.backward(enc_loss, inputs=self.encoder_params)
        self._clip_and_step()
        n_dim = x[0].numel()
        loss = -res.log_joint_sum / (x.shape[0] * res.steps)
        return {"loss": loss, "loss_per_dim": loss / n_dim, "encoder_loss": enc_loss.detach(),
                "sigma": self.model.likelihood.sigma.detach() if hasattr(self.model.likelihood, "sigma") else torch.tensor(0.0)}


class VAETrainer(Trainer):
    """The VAE baseline on the same networks: minimise the negative ELBO (one reparameterised sample)."""

    method = "vae"

    def train_step(self, x):
        self.optimizer.zero_grad(set_to_none=True)
        mean, var = self.encoder(x)
        loss = negative_elbo(self.model, x, mean, var, self.generator).mean()
        loss.backward()
        self._clip_and_step()
        return {"loss": loss.detach(), "loss_per_dim": loss.detach() / x[0].numel(),
                "sigma": self.model.likelihood.sigma.detach() if hasattr(self.model.likelihood, "sigma") else torch.tensor(0.0)}


TRAINERS = {"lpc": LPCTrainer, "vae": VAETrainer}
