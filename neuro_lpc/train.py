"""Trainers: LPCTrainer (Algorithm 1) and VAETrainer on the same decoder/encoder.

Both share one loop (``Trainer.fit``): seeded per-epoch data order, one Adam optimiser over decoder,
likelihood and encoder (same learning rate alpha, Algorithm 1), tqdm progress, per-step metrics as
JSON lines (and TensorBoard when installed), a PNG sample grid every epoch, and crash-safe checkpoints
(``neuro_lpc.checkpoint``: atomic, checksummed) at the end of every epoch, every
``checkpoint_every_steps`` optimiser steps, every ``checkpoint_every_s`` seconds, and on Ctrl-C (SIGINT:
the current step is finished, checkpointed, and ``TrainingInterrupted`` raised). A checkpoint holds the
model, optimiser, every RNG (the trainer's generators, torch/numpy/python global streams) and the
position in the epoch's data order, so a resume continues mid-epoch bit for bit (docs/robustness.md).
Checkpoints hold only tensors and plain Python values and load with ``torch.load(weights_only=True)``:
no code runs on load.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import TrainConfig, atomic_write_text, resolve_device, write_run_metadata
from .checkpoint import atomic_save, capture_rng, restore_rng, verify
from .errors import CheckpointError, DivergenceError, TrainingInterrupted
from .langevin import LangevinSampler
from .likelihoods import make_likelihood
from .model import GenerativeModel
from .networks import build_decoder_encoder
from .objectives import negative_elbo, reparameterise, warm_start_loss

CHECKPOINT_FORMAT = "neuro_lpc-checkpoint-v2"          # v2: checksum, every RNG, position in the epoch
LEGACY_FORMATS = ("neuro_lpc-checkpoint-v1",)          # per-epoch checkpoints without a checksum: still read
# config keys a resume may change (they do not alter the trajectory of the run); any other change is refused
RESUMABLE_KEYS = frozenset({"epochs", "device", "data_root", "download", "max_wall_s", "sample_grid", "log_every",
                            "checkpoint_every_steps", "checkpoint_every_s", "fast"})


def build_model(config: TrainConfig, image_size: int, channels: int) -> tuple[GenerativeModel, nn.Module]:
    """The paper's decoder/encoder pair with the configured likelihood and prior.

    The initial weights are drawn under ``torch.manual_seed(config.seed)`` (torch's global CPU stream is
    restored afterwards), so that a run is reproducible from its config alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(config.seed))
        decoder, encoder = build_decoder_encoder(image_size, channels, config.latent_dim,
                                                  getattr(config, "architecture", "conv"))
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
    if not isinstance(ck, dict) or ck.get("format") not in (CHECKPOINT_FORMAT, *LEGACY_FORMATS):
        raise CheckpointError(f"{p} is not a neuro_lpc checkpoint (format tag missing)")
    if ck["format"] == CHECKPOINT_FORMAT:
        verify(ck, p)
    return ck


def changed_config_keys(saved: dict, current: dict, allowed=RESUMABLE_KEYS) -> list[str]:
    """Config keys whose values differ (as JSON: tuples equal lists) between a checkpoint and a resume."""
    keys = (set(saved) | set(current)) - set(allowed)
    return sorted(k for k in keys if json.dumps(saved.get(k, "<absent>"), sort_keys=True, default=str)
                  != json.dumps(current.get(k, "<absent>"), sort_keys=True, default=str))


def check_resume_config(config, ck: dict, path) -> None:
    """Refuse (one-line CheckpointError naming the keys) a resume whose ``config`` differs from the checkpoint
    ``ck``'s in anything but ``RESUMABLE_KEYS``: config.json would no longer describe the run."""
    saved = ck.get("config")
    if not isinstance(saved, dict):
        return
    current = config.to_dict()
    defaults = {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}
    for k in set(current) - set(saved):   # a field newer than the checkpoint: fine while it has its default
        if k in defaults and json.dumps(current[k], default=str) == json.dumps(defaults[k], default=str):
            saved = {**saved, k: current[k]}
    changed = changed_config_keys(saved, current)
    if changed:
        diffs = ", ".join(f"{k} (checkpoint {saved.get(k)!r}, now {getattr(config, k, None)!r})" for k in changed)
        raise CheckpointError(f"resume with a config that differs from the checkpoint's at {path}: {diffs}; "
                              f"start a new run in another folder, or resume without changing these settings")


def precheck_resume(config, out_dir) -> None:
    """Before any work (the CLIs' ``prepare``): with a checkpoint in ``out_dir``, read and verify it and refuse a
    changed config (:func:`check_resume_config`); without one nothing happens (the run starts fresh, noted)."""
    path = Path(out_dir) / "checkpoint.pt"
    if path.is_file():
        check_resume_config(config, read_checkpoint(path), path)


def _skip_batches(loader, n: int):
    """An iterator over ``loader`` without its first ``n`` batches; their indices are drawn from the sampler
    but no data is loaded for them (single-process loaders), so the batches that follow are the same."""
    it = iter(loader)
    index_iter = getattr(it, "_sampler_iter", None) if getattr(loader, "num_workers", 0) == 0 else None
    for _ in range(n):
        next(index_iter) if index_iter is not None else next(it)
    return it


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


@dataclasses.dataclass
class _TrainingClock:
    """``fit``'s wall clock: training time = time since ``t0`` less ``hooks_s``, the time spent in step hooks."""

    t0: float
    hooks_s: float = 0.0

    def training_s(self) -> float:
        return time.perf_counter() - self.t0 - self.hooks_s

    def budget_spent(self, budget: float | None) -> bool:
        """Whether a wall-time budget (seconds; None = none, and then the clock is not read) is spent."""
        return budget is not None and time.perf_counter() - self.t0 - self.hooks_s >= budget


class SGDThenAdam:
    """``TrainConfig.optimizer = "sgd"``: plain SGD, p <- p - lr g (no momentum, no weight decay: no per-weight state),
    on the decoder's parameters, and Adam on the rest (the likelihood's sigma and the encoder). The fair digital twin
    of ``in-memory-local`` (circuits.local_update), whose arrays (the decoder) carry no optimiser state either, while
    the digital parameters off the arrays (the warm start's amortiser, the output noise level) keep their Adam.
    One ``param_groups`` list over both (the lr schedule sets them all)."""

    def __init__(self, sgd_params: list, adam_params: list, lr: float, sgd_lr: float | None = None):
        self.sgd = torch.optim.SGD(sgd_params, lr=lr if sgd_lr is None else sgd_lr)
        self.adam = torch.optim.Adam(adam_params, lr=lr)
        self.param_groups = self.sgd.param_groups + self.adam.param_groups

    def step(self) -> None:
        self.sgd.step()
        self.adam.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.sgd.zero_grad(set_to_none=set_to_none)
        self.adam.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"sgd": self.sgd.state_dict(), "adam": self.adam.state_dict()}

    def load_state_dict(self, sd: dict) -> None:
        if set(sd) != {"sgd", "adam"}:
            raise ValueError("the checkpoint's optimiser state is not optimizer='sgd''s (SGD + Adam)")
        self.sgd.load_state_dict(sd["sgd"])
        self.adam.load_state_dict(sd["adam"])


def make_optimizer(kind: str, model: GenerativeModel, encoder: nn.Module, lr: float, decoder_lr: float | None = None):
    """The trainer's optimiser (``TrainConfig.optimizer``): "adam" over model and encoder (Table 3) or "sgd"
    (:class:`SGDThenAdam`: SGD on the decoder, Adam on the likelihood and the encoder). The decoder's parameters run
    at ``decoder_lr`` (None: ``lr``), every other at ``lr``; param group 0 is the decoder's."""
    dec = {id(p) for p in model.decoder.parameters()}
    rest = [p for p in model.parameters() if id(p) not in dec]
    if kind == "sgd":
        return SGDThenAdam(list(model.decoder.parameters()), rest + list(encoder.parameters()), lr, decoder_lr)
    if decoder_lr is None:    # Table 3's one rate: two groups, as every checkpoint before decoder_lr existed
        return torch.optim.Adam([{"params": list(model.parameters())}, {"params": list(encoder.parameters())}], lr=lr)
    return torch.optim.Adam([{"params": list(model.decoder.parameters()), "lr": decoder_lr}, {"params": rest},
                             {"params": list(encoder.parameters())}], lr=lr)


class Trainer:
    """Common loop; subclasses implement ``train_step(x) -> dict`` of float-able metrics."""

    method = "base"

    def __init__(self, model: GenerativeModel, encoder: nn.Module, config: TrainConfig, out_dir: str | os.PathLike | None = None):
        self.config = config.validate()
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.encoder = encoder.to(self.device)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.optimizer = make_optimizer(config.optimizer, self.model, self.encoder, config.lr, config.decoder_lr)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.epoch = 0
        self.global_step = 0
        self.epoch_batch = 0          # optimiser steps taken in the current epoch (its position in the data order)
        self.stopped_by_wall = False
        self.step_hooks: list = []    # hook(trainer) -> seconds spent (or None) after every optimiser step: work that
                                      # is not training (a learning-curve point) and is left out of the wall clock
        self.train_wall_s = 0.0       # this fit call's training wall time so far, without the hooks' time
        self._tb = None
        self._interrupt = False
        self._last_checkpoint_t = time.perf_counter()

    # ------------------------------------------------------------ one step
    def train_step(self, x: torch.Tensor) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _clip_and_step(self) -> None:
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(list(self.model.parameters()) + list(self.encoder.parameters()), self.config.grad_clip)
        self._set_lr()
        self.optimizer.step()

    def lr_factor(self) -> float:
        """The learning rate of this step relative to ``config.lr`` (``config.lr_schedule``): 1 for "constant";
        (1 + cos(pi p)) / 2 for "cosine", p = steps done / the run's total steps, or the training wall time spent /
        ``max_wall_s`` for a wall-time budget.  A function of the step (and the wall clock) only, so a resumed run
        continues the same schedule."""
        if getattr(self.config, "lr_schedule", "constant") != "cosine":
            return 1.0
        if self.config.max_wall_s:
            p = self.train_wall_s / self.config.max_wall_s
        else:
            total = getattr(self, "_total_steps", None)
            p = self.global_step / total if total else 0.0
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, p))))

    def decoder_rate(self) -> float:
        """The decoder's learning rate at this step: ``config.decoder_lr`` (None: ``config.lr``) times the schedule."""
        c = self.config
        return (c.lr if c.decoder_lr is None else c.decoder_lr) * self.lr_factor()

    def _set_lr(self) -> None:
        f = self.lr_factor()
        c = self.config
        for i, group in enumerate(self.optimizer.param_groups):   # group 0: the decoder's where decoder_lr is set
            group["lr"] = (c.decoder_lr if i == 0 and c.decoder_lr is not None else c.lr) * f

    # ---------------------------------------------------------- checkpoints
    def rng_generators(self) -> dict[str, torch.Generator]:
        """The torch.Generators this trainer draws from (subclasses add theirs); all go into checkpoints."""
        return {"generator": self.generator}

    def state_dict(self) -> dict:
        shape = self.model.output_shape
        return {
            "format": CHECKPOINT_FORMAT, "method": self.method, "epoch": self.epoch, "global_step": self.global_step,
            "epoch_batch": self.epoch_batch,
            "model": self.model.state_dict(), "encoder": self.encoder.state_dict(),
            "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
            "rng": capture_rng(self.rng_generators()),
            "config": self.config.to_dict(), "channels": shape[0], "image_size": shape[-1],
        }

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Atomic (tmp file, fsync, rename) and checksummed: a crash never leaves a half checkpoint."""
        atomic_save(self.state_dict(), path)
        self._last_checkpoint_t = time.perf_counter()

    def load_checkpoint(self, path: str | os.PathLike) -> dict:
        """Restore the trainer from a checkpoint (checksum verified); returns the checkpoint dict."""
        ck = read_checkpoint(path, map_location=self.device)
        if ck.get("method") != self.method:
            raise CheckpointError(f"checkpoint {path} was written by a {ck.get('method')!r} trainer, not {self.method!r}")
        try:
            self.model.load_state_dict(ck["model"])
            self.encoder.load_state_dict(ck["encoder"])
            self.optimizer.load_state_dict(ck["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"checkpoint {path} does not fit this model: {str(e).splitlines()[0]}") from None
        self.generator.set_state(ck["generator"].cpu())
        if "rng" in ck:
            restore_rng(ck["rng"], self.rng_generators())
        self.epoch, self.global_step = int(ck["epoch"]), int(ck["global_step"])
        self.epoch_batch = int(ck.get("epoch_batch", 0))
        return ck

    def check_resume_config(self, ck: dict, path) -> None:
        """Refuse (one-line CheckpointError naming the keys) a resume whose config differs from the
        checkpoint's in anything but ``RESUMABLE_KEYS``: config.json would no longer describe the run."""
        check_resume_config(self.config, ck, path)

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
        keep = []
        for ln in path.read_text().splitlines():
            try:
                rec = json.loads(ln)
            except ValueError:  # a line cut short by a kill
                continue
            if isinstance(rec, dict) and rec.get("step", 0) <= self.global_step:
                keep.append(ln)
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
        ``out_dir/checkpoint.pt`` (mid-epoch, bit for bit; a note and a fresh start when there is none yet;
        a CheckpointError naming the keys when the config differs from the checkpoint's outside
        ``RESUMABLE_KEYS``).  Returns per-step metric records of this call.

        Checkpoints: at the end of every epoch, after every ``config.checkpoint_every_steps``-th optimiser
        step, after the first step that ends ``config.checkpoint_every_s`` seconds after the previous
        checkpoint, and on SIGINT (the step in flight is finished first; then ``TrainingInterrupted``, a
        KeyboardInterrupt, is raised; a second SIGINT stops at once without a checkpoint).

        With ``config.max_wall_s`` the loop stops after the first optimiser step that ends past that
        many seconds of this call's wall time (``self.stopped_by_wall`` is then True) and checkpoints
        there, mid-epoch; ``epochs`` is only an upper bound.  Resuming such a run continues from that step."""
        epochs = epochs if epochs is not None else self.config.epochs
        ckpt = self._open_output_folder(resume)
        history = []
        clock = _TrainingClock(time.perf_counter())
        self._last_checkpoint_t = clock.t0
        self.stopped_by_wall = False
        self._total_steps = self.config.epochs * self._batches_in(self.make_epoch_loader(train_dataset))
        with self._sigint_deferred():                # the cosine horizon above: the config's epochs (lr_factor)
            while self.epoch < epochs and not self.stopped_by_wall:
                self._fit_epoch(train_dataset, epochs, ckpt, clock, history, progress)
        if self._tb is not None:
            self._tb.close()
        return history

    def _open_output_folder(self, resume: bool) -> Path | None:
        """Create ``out_dir`` (checked writable), restore its checkpoint when resuming, write the run metadata and
        open TensorBoard when installed.  Returns the checkpoint path (None without an output folder)."""
        ckpt = self.out_dir / "checkpoint.pt" if self.out_dir else None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if not os.access(self.out_dir, os.W_OK):
                raise PermissionError(f"output folder is not writable: {self.out_dir}")
            if resume and not ckpt.exists():
                print(f"note: --resume given but {ckpt} does not exist yet: starting a fresh run", file=sys.stderr)
            elif resume:
                ck = self.load_checkpoint(ckpt)
                self.check_resume_config(ck, ckpt)
                self._truncate_metrics()
            write_run_metadata(self.out_dir, self.config, {"method": self.method})
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional
                self._tb = SummaryWriter(str(self.out_dir / "tb"))
            except Exception:  # noqa: BLE001 - tensorboard not installed
                self._tb = None
        elif resume:
            raise ValueError("resume needs an output folder")
        return ckpt

    def _batches_in(self, loader) -> int:
        """Optimiser steps in an epoch of ``loader``: its length, at most ``config.max_batches_per_epoch``."""
        return len(loader) if self.config.max_batches_per_epoch is None else min(len(loader), self.config.max_batches_per_epoch)

    def _fit_epoch(self, train_dataset, epochs: int, ckpt, clock: _TrainingClock, history: list, progress: bool) -> None:
        """The optimiser steps of epoch ``self.epoch`` from batch ``self.epoch_batch`` on (> 0 when resuming
        mid-epoch): each step runs the step hooks, logs every ``log_every``-th record, then honours a SIGINT,
        the wall-time budget (stop mid-epoch) and the mid-epoch checkpoint policy; then :meth:`_end_epoch`."""
        loader = self.make_epoch_loader(train_dataset)
        nb = self._batches_in(loader)
        first = min(self.epoch_batch, nb)           # > 0 when resuming mid-epoch
        bar = tqdm(total=nb, initial=first, desc=f"{self.method} epoch {self.epoch + 1}/{epochs}",
                   disable=not progress, leave=False)
        batches = _skip_batches(loader, first)
        for i in range(first, nb):
            x, _ = next(batches)
            x = x.to(self.device, non_blocking=True)
            metrics = self._train_step_or_say_where(x, i, ckpt, bar)
            self.global_step += 1
            self.epoch_batch = i + 1
            self.train_wall_s = clock.training_s()
            for hook in self.step_hooks:
                clock.hooks_s += float(hook(self) or 0.0)
            if self.global_step % self.config.log_every == 0 or i == nb - 1:
                self._log_step(metrics, history, bar)
            bar.update(1)
            if self.stop_requested():
                bar.close()
                self._stop_on_interrupt(ckpt)
            if clock.budget_spent(self.config.max_wall_s):
                self.stopped_by_wall = True      # wall-time budget spent: stop mid-epoch, keep the checkpoint
                break
            if i < nb - 1 and self._checkpoint_due():
                self.save_checkpoint(ckpt)
        bar.close()
        self._end_epoch(ckpt, nb)

    def _train_step_or_say_where(self, x: torch.Tensor, i: int, ckpt, bar) -> dict:
        """``train_step(x)``; a DivergenceError is re-raised naming the epoch, batch and global step (and the
        last good checkpoint)."""
        try:
            return self.train_step(x)
        except DivergenceError as e:
            bar.close()
            raise DivergenceError(f"epoch {self.epoch + 1}, batch {i + 1} (global step {self.global_step + 1}): {e}"
                                  + (f"; last good checkpoint kept at {ckpt}" if ckpt and ckpt.exists() else ""),
                                  step=e.step, chain=e.chain, unit=e.unit) from None

    def _log_step(self, metrics: dict, history: list, bar) -> None:
        """One metrics record (step, epoch, training wall time, the step's metrics as floats): refused when not
        finite (DivergenceError), else kept in ``history``, written to metrics.jsonl / TensorBoard and shown."""
        rec = {"step": self.global_step, "epoch": self.epoch + 1, "wall_s": self.train_wall_s,
               **{k: float(v) for k, v in metrics.items()}}
        if not all(math.isfinite(v) for v in rec.values()):
            raise DivergenceError(f"non-finite training metric at global step {self.global_step}: {rec}", step=self.global_step)
        history.append(rec)
        self._log(rec)
        bar.set_postfix(loss=f"{rec['loss']:.4g}")

    def _end_epoch(self, ckpt, nb: int) -> None:
        """After an epoch's loop: count the epoch when all ``nb`` batches ran (not when the wall-time budget cut it
        short), then checkpoint and draw the epoch's sample grid."""
        if self.epoch_batch >= nb:
            self.epoch += 1
            self.epoch_batch = 0
        if self.out_dir is not None:
            self.save_checkpoint(ckpt)
            if self.config.sample_grid:
                self.save_samples(self.out_dir / f"samples_epoch{self.epoch:03d}.png")

    # ------------------------------------------------------- checkpoint policy
    def _checkpoint_due(self) -> bool:
        """A mid-epoch checkpoint after this step (config.checkpoint_every_steps / checkpoint_every_s)?"""
        if self.out_dir is None:
            return False
        every_n = getattr(self.config, "checkpoint_every_steps", None)
        every_s = getattr(self.config, "checkpoint_every_s", None)
        if every_n and self.global_step % every_n == 0:
            return True
        return bool(every_s) and time.perf_counter() - self._last_checkpoint_t >= every_s

    def stop_requested(self) -> bool:
        """Whether a SIGINT asked the loop to stop after this step (a data-parallel trainer reduces it over ranks)."""
        return self._interrupt

    def _stop_on_interrupt(self, ckpt) -> None:
        if self._tb is not None:
            self._tb.close()
        if ckpt is None:
            raise TrainingInterrupted(f"interrupted after global step {self.global_step} (no output folder: nothing saved)",
                                      step=self.global_step)
        self.save_checkpoint(ckpt)
        raise TrainingInterrupted(f"interrupted after global step {self.global_step}: checkpoint written to {ckpt} "
                                  f"(continue with --resume)", step=self.global_step, checkpoint=str(ckpt))

    @contextlib.contextmanager
    def _sigint_deferred(self):
        """While training, a first SIGINT only sets a flag read after the step in flight (which therefore
        ends consistently and is checkpointed); a second one raises KeyboardInterrupt at once."""
        self._interrupt = False
        if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            yield
            return

        def on_sigint(signum, frame):
            if self._interrupt:
                raise KeyboardInterrupt
            self._interrupt = True

        signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)


class LPCTrainer(Trainer):
    """Algorithm 1: warm start z(0) ~ q(z|x) (prior for the first ``prior_init_batches`` batches or with
    objective "none"), T Langevin steps with decoder gradients accumulated in one backward per step (eq. 8),
    the warm-start objective for the encoder, one Adam step on both."""

    method = "lpc"

    def __init__(self, model, encoder, config: TrainConfig, out_dir=None, sampler: LangevinSampler | None = None):
        super().__init__(model, encoder, config, out_dir)
        self.sampler = sampler or LangevinSampler(
            step_size=config.step_size, steps=config.langevin_steps, precondition=config.precondition,
            delta=config.precondition_delta, noise=config.noise_form, temperature=config.temperature,
            fast=getattr(config, "fast", None), dynamics=config.dynamics, skew=config.skew,
            skew_scale=config.skew_scale, friction=config.friction, mass=config.mass)
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
