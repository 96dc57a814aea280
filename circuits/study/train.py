"""Training the study's models, with a cache keyed by the training config, and the training row of the table.

Every trainer returns a :class:`Trained`: the networks, the loss curve and ``training`` -- the row's
optimiser steps, gradient evaluations (decoder forward+backward passes: batches x T for LPC, PC and the
circuit, batches for the VAE), wall time and budget.  A method that cannot run raises :class:`NotRun`.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from neuro_lpc.config import TrainConfig, atomic_write_text

from .curves import curve_status, read_curve


PROGRESS = True   # tqdm bars while training (off in parallel workers)


class NotRun(RuntimeError):
    """A method row that cannot run in this configuration (the message says why); reported as "not run"."""


@dataclass
class Trained:
    model: Any
    encoder: Any
    history: list[dict]
    training: dict          # optimiser_steps, grad_evals, grad_evals_per_step, wall_s, budget, cached, ...
    sampler: Any = None     # the model as it runs on the device (analog learning modes); None: ``model``
    array: Any = None       # the analog array the row's weights sit on (circuits.noise.arrays.AnalogArray)
    same_as: str | None = None  # the row whose model this is (its sample metrics are reused, not recomputed)


@dataclass
class FitResult:
    history: list[dict]
    wall_s: float           # wall time of the training (of the original run for a cached model)
    cached: bool            # the model came from the cache (no training in this run)
    stopped_by_wall: bool   # a wall-time budget ended the training
    optimiser_steps: int
    curve: list = field(default_factory=list)  # learning-curve points (circuits.study.curves)


IMAGE_SIZES = {"animal-mnist": 28, "mnist": 28, "fashion-mnist": 28, "cifar10": 32, "svhn": 32, "celeba64": 64}


def architecture_of(cfg) -> str:
    """The study's decoder/encoder pair (``StudyConfig.resolved_architecture`` for the data set's image size)."""
    if cfg.architecture != "auto":
        return cfg.architecture
    from neuro_lpc.config import resolve_device

    return cfg.resolved_architecture(IMAGE_SIZES.get(cfg.dataset, 32), resolve_device(cfg.device))


def train_config(cfg, method: str, n_train: int = 9000, **overrides) -> TrainConfig:
    """``train_batches`` optimiser steps (``train_epochs`` epochs of ``n_train`` images where set) as whole epochs of
    equal length (same data order for every method)."""
    if getattr(cfg, "train_epochs", None) is not None and hasattr(cfg, "resolve_train_batches"):
        cfg.resolve_train_batches(n_train)
    per_epoch = max(1, n_train // cfg.batch_size)
    epochs = math.ceil(cfg.train_batches / per_epoch)
    kw = dict(method=method, dataset=cfg.dataset, data_root=cfg.data_root, epochs=epochs, batch_size=cfg.batch_size,
              architecture=architecture_of(cfg), lr=getattr(cfg, "lr", 1e-3),
              lr_schedule=getattr(cfg, "lr_schedule", "constant"),
              langevin_steps=cfg.langevin_steps, step_size=cfg.step_size, precondition=cfg.precondition,
              warm_start=cfg.warm_start, prior_init_batches=cfg.prior_init_batches,
              max_batches_per_epoch=math.ceil(cfg.train_batches / epochs), seed=cfg.seed, device=cfg.device, sample_grid=0)
    kw.update(overrides)
    return TrainConfig(**kw)


def cache_folder(root: Path, name: str, config) -> Path:
    """models/<name>-<hash of the training config>: a cached model is reused only for the same config."""
    d = config.to_dict() if hasattr(config, "to_dict") else asdict(config)
    d = {k: v for k, v in d.items() if k not in ("device",)}
    h = hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:10]
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
    return root / f"{safe}-{h}"


def fit_cached(trainer, train_set, folder: Path, ctx=None, name: str | None = None, sample=None) -> FitResult:
    """Train, or reuse the model cached in ``folder``.

    ``train_wall_s.json`` marks a finished run (its wall time, optimiser steps, whether a wall-time budget
    stopped it): such a model is loaded, not trained again, and its original wall time is reported.  A run
    that crashed part-way resumes from its last checkpoint.

    With a study context ``ctx`` (and the row's ``name``), the training reports its progress
    (``ctx.progress``) and records its learning curve (``ctx.curve_recorder``; ``sample(trainer, n, generator)``
    draws the row's samples, default ``trainer.model.sample``): ``FitResult.curve``.  The curve's time is not
    training time (``Trainer.step_hooks``).
    """
    trainer.out_dir = folder
    ckpt, timing, metrics = folder / "checkpoint.pt", folder / "train_wall_s.json", folder / "metrics.jsonl"
    done = json.loads(timing.read_text()) if timing.is_file() else {}
    if done.get("done") and ckpt.is_file():
        trainer.load_checkpoint(ckpt)
        hist = [json.loads(ln) for ln in metrics.read_text().splitlines() if ln.strip()] if metrics.is_file() else []
        return FitResult(hist, float(done["wall_s"]), True, bool(done.get("stopped_by_wall")), trainer.global_step,
                         read_curve(folder))
    recorder = None
    if ctx is not None:
        total = trainer.config.epochs * (trainer.config.max_batches_per_epoch or ctx.cfg.steps_per_epoch(ctx.info.n_train))
        recorder = ctx.curve_recorder(name, folder, sample or _model_sample) if ctx.curve_recorder else None
        if recorder is not None:
            trainer.step_hooks.append(recorder)
        if ctx.progress is not None:
            trainer.step_hooks.append(ProgressHook(ctx.progress, name, total, recorder,
                                                   getattr(trainer.config, "max_wall_s", None)))
    t0 = time.perf_counter()
    resume = ckpt.is_file()
    hist = trainer.fit(train_set, resume=resume, progress=PROGRESS and (ctx is None or ctx.progress is None))
    wall = trainer.train_wall_s or (time.perf_counter() - t0)   # training only: the hooks' time left out
    if resume and "wall_s" in done:  # resumed after a crash: the earlier part's wall time is not known exactly
        wall = max(wall, float(done["wall_s"]))
    if metrics.is_file():  # the whole curve, including the part before a crash
        hist = [json.loads(ln) for ln in metrics.read_text().splitlines() if ln.strip()]
    stopped = bool(getattr(trainer, "stopped_by_wall", False))
    curve = read_curve(folder) if recorder is not None else []
    atomic_write_text(timing, json.dumps({"wall_s": wall, "done": True, "stopped_by_wall": stopped,
                                          "optimiser_steps": trainer.global_step}))
    return FitResult(hist, wall, False, stopped, trainer.global_step, curve)


def _model_sample(trainer, n: int, generator):
    return trainer.model.sample(n, generator=generator)


class ProgressHook:
    """A trainer step hook reporting ``{"row", "step", "total", "train_wall_s", "kid"}`` to ``report`` at most every
    ``every_s`` seconds and at the last step (the study's display; ``circuits.study.progress``)."""

    def __init__(self, report, name: str, total: int, recorder=None, max_wall_s=None, every_s: float = 1.0):
        self.report, self.name, self.total, self.recorder, self.every_s = report, name, int(total), recorder, every_s
        self.max_wall_s = max_wall_s
        self._last = 0.0

    def __call__(self, trainer) -> float:
        now = time.perf_counter()
        if now - self._last < self.every_s and trainer.global_step < self.total:
            return 0.0
        self._last = now
        kid = self.recorder.points[-1]["kid"] if self.recorder is not None and self.recorder.points else None
        self.report({"row": self.name, "step": int(trainer.global_step), "total": self.total,
                     "train_wall_s": float(trainer.train_wall_s), "kid": kid, "max_wall_s": self.max_wall_s})
        return time.perf_counter() - now


def training_row(fit: FitResult, grad_evals_per_step: int, budget: str, **extra) -> dict:
    """The training columns of a row: optimiser steps, gradient evaluations, wall time, the learning curve and its
    converged / still-improving flag (``circuits.study.curves.curve_status``)."""
    final = fit.history[-1].get("loss_per_dim") if fit.history else None
    return {"optimiser_steps": int(fit.optimiser_steps), "grad_evals_per_step": int(grad_evals_per_step),
            "grad_evals": int(fit.optimiser_steps) * int(grad_evals_per_step), "wall_s": float(fit.wall_s),
            "budget": budget, "cached": fit.cached, "stopped_by_wall": fit.stopped_by_wall,
            "final_train_loss_per_dim": final, "curve": list(fit.curve),
            "convergence": curve_status(fit.curve) if fit.curve else None, **extra}


# ------------------------------------------------------------------------------------------ trainers
def train_discrete(ctx) -> Trained:
    """Discrete LPC (Algorithm 1), or the model given with --model."""
    from neuro_lpc.train import LPCTrainer, build_model, load_trained

    cfg = ctx.cfg
    if cfg.model:
        ctx.log(f"      loading the model {cfg.model}")
        model, encoder, tc, ck = load_trained(cfg.model, ctx.device)
        steps = int(ck.get("global_step", 0))
        training = {"optimiser_steps": steps, "grad_evals_per_step": tc.langevin_steps, "grad_evals": steps * tc.langevin_steps,
                    "wall_s": float("nan"), "budget": f"loaded from {cfg.model} (training wall time unknown)",
                    "cached": True, "stopped_by_wall": False, "final_train_loss_per_dim": None}
        return Trained(model, encoder, [], training)
    tc = train_config(cfg, "lpc", ctx.info.n_train)
    model, encoder = build_model(tc, ctx.info.image_size, ctx.info.channels)
    fit = fit_cached(LPCTrainer(model, encoder, tc), ctx.train_set, cache_folder(ctx.models_dir, "discrete", tc), ctx,
                     "discrete")
    return Trained(model, encoder, fit.history, training_row(fit, tc.langevin_steps, "same optimiser steps"))


def train_pc(ctx) -> Trained:
    """Noise-free predictive coding: LPC's trainer at temperature 0 (deterministic gradient ascent on log p)."""
    from neuro_lpc.train import LPCTrainer, build_model

    tc = train_config(ctx.cfg, "lpc", ctx.info.n_train, temperature=0.0)
    model, encoder = build_model(tc, ctx.info.image_size, ctx.info.channels)
    fit = fit_cached(LPCTrainer(model, encoder, tc), ctx.train_set, cache_folder(ctx.models_dir, "pc", tc), ctx, "pc")
    return Trained(model, encoder, fit.history, training_row(fit, tc.langevin_steps, "same optimiser steps"))


def circuit_train_config(ctx, **overrides):
    """The circuit's training config: the discrete trainer's, presented for T Euler-Maruyama steps of dt = gamma tau_z."""
    from ..learn import CircuitTrainConfig

    cfg, noise = ctx.cfg, ctx.noise
    kw = dict(**{**train_config(cfg, "lpc", ctx.info.n_train).to_dict(), "method": "circuit", **cfg.dynamics_fields()},
              dt=cfg.step_size * cfg.tau_z, tau_z=cfg.tau_z, tau_e=cfg.tau_e,
              noise=noise if isinstance(noise, str) else noise.to_dict(), presentation_steps=cfg.langevin_steps)
    kw.pop("temperature", None)   # the circuit's temperature is the noise model's
    kw.pop("max_wall_s", None)
    kw.update(overrides)
    return CircuitTrainConfig(**kw)


def train_circuit(ctx, name: str = "circuit", **overrides) -> Trained:
    """Learning through the circuit under the chosen noise (``circuits.learn.CircuitTrainer``), in the learning mode
    ``overrides["learning"]`` (default the config's).  The row's samples (and its learning curve) come through the
    circuit's read-out path (``circuits.modes.readout_model``): the value units' non-idealities, the weights as they
    sit on the device (``CircuitTrainer.device_array``: a fresh programming, drift at ``deploy_time``, read noise
    per read) and the prediction's converters -- what the circuit trained with."""
    from neuro_lpc.train import build_model

    from ..learn import CircuitTrainer
    from ..modes import readout_model

    ctc = circuit_train_config(ctx, **overrides)
    model, encoder = build_model(train_config(ctx.cfg, "lpc", ctx.info.n_train), ctx.info.image_size, ctx.info.channels)
    trainer = CircuitTrainer(model, encoder, ctc)

    def sample(tr, n, generator):
        return readout_model(tr.model, device_circuit_config(tr), tr.device_array(), generator).sample(n, generator=generator)

    fit = fit_cached(trainer, ctx.train_set, cache_folder(ctx.models_dir, name, ctc), ctx, name, sample)
    gen = torch.Generator(device=ctx.device).manual_seed(ctx.cfg.seed + 55)
    array = trainer.device_array()
    row = training_row(fit, ctc.resolved_steps, "same optimiser steps", learning=ctc.learning,
                       deploy_time_s=ctc.resolved_deploy_time() if array is not None else None,
                       noise=overrides.get("noise", ctc.noise) if isinstance(overrides.get("noise", ctc.noise), str)
                       else "custom")
    return Trained(model, encoder, fit.history, row, sampler=readout_model(model, device_circuit_config(trainer), array, gen),
                   array=array)


def device_circuit_config(trainer):
    """The circuit a trained row is scored on: the trainer's circuit with every source of its noise model (a
    ``deploy`` trainer learned without the weight devices; scored, they are on)."""
    import dataclasses

    return dataclasses.replace(trainer.circuit_config, noise=trainer.noise)


def train_deploy(ctx) -> Trained:
    """Learning mode ``deploy``: the discrete-LPC model (learned digitally) programmed once onto the array, scored
    ``deploy_time`` after programming (``circuits.modes``) through the circuit's read-out path; no training of its
    own."""
    from ..learn import CircuitTrainer
    from ..modes import readout_model

    ref = ctx.trained["discrete"]
    ctc = circuit_train_config(ctx, learning="deploy")
    trainer = CircuitTrainer(ref.model, ref.encoder, ctc)       # only to program the array the same way
    array = trainer.device_array()
    gen = torch.Generator(device=ctx.device).manual_seed(ctx.cfg.seed + 55)
    row = dict(ref.training, budget="discrete LPC's training (digital), then one programming", learning="deploy",
               deploy_time_s=ctc.resolved_deploy_time() if array is not None else None)
    sampler = readout_model(ref.model, device_circuit_config(trainer), array, gen)
    return Trained(ref.model, ref.encoder, ref.history, row, sampler=sampler, array=array,
                   same_as="discrete" if sampler is ref.model else None)


IDEAL_SEED_OFFSET = 1000   # the ideal-circuit control's seeds: cfg.seed + 1000 + k (independent of discrete LPC's)


def train_ideal_circuit(ctx) -> Trained:
    """The control: the circuit trainer under preset ``ideal`` (adiabatic error units, dt = gamma tau_z unless
    ``--tau-e``), trained through the circuit path (``CircuitTrainer``).

    Its seeds are its own (cfg.seed + ``IDEAL_SEED_OFFSET`` + k: initial weights, data order, noise), so that "it
    matches discrete LPC within the seed error bars" is a statistical test between independent trainings.  With
    discrete LPC's seeds it would reproduce discrete LPC's model to rounding (the adiabatic limit: the circuit draws
    the same numbers in the same order, tests/test_circuit.py), a tautology in the table."""
    import dataclasses
    import copy

    c = copy.copy(ctx)
    c.cfg = dataclasses.replace(ctx.cfg, seed=ctx.cfg.seed + IDEAL_SEED_OFFSET)
    tr = train_circuit(c, name="circuit-ideal", noise="ideal")
    tr.training["seed"] = c.cfg.seed
    return tr


def train_vae(ctx) -> Trained:
    """The VAE on the same networks, data order, optimiser and number of optimiser steps."""
    from neuro_lpc.train import VAETrainer, build_model

    vc = train_config(ctx.cfg, "vae", ctx.info.n_train)
    model, encoder = build_model(vc, ctx.info.image_size, ctx.info.channels)
    fit = fit_cached(VAETrainer(model, encoder, vc), ctx.train_set, cache_folder(ctx.models_dir, "vae", vc), ctx, "vae")
    return Trained(model, encoder, fit.history, training_row(fit, 1, "same optimiser steps"))


def train_vae_same_wall(ctx, reference: str = "discrete", reference_label: str = "discrete LPC") -> Trained:
    """The VAE trained for the wall time of discrete LPC's training (stopped after the first step past it)."""
    from neuro_lpc.train import VAETrainer, build_model

    ref = ctx.trained.get(reference)
    wall = ref.training.get("wall_s") if ref is not None else None
    if wall is None or not math.isfinite(wall) or wall <= 0:
        raise NotRun(f"no {reference} training wall time to match (model loaded with --model, or not trained)")
    per_epoch = max(1, ctx.info.n_train // ctx.cfg.batch_size)
    base = train_config(ctx.cfg, "vae", ctx.info.n_train)
    # epochs is only an upper bound (1,000 steps per second of budget): the budget stops the run
    epochs = max(base.epochs, math.ceil(1000 * wall / min(per_epoch, base.max_batches_per_epoch or per_epoch)))
    vc = train_config(ctx.cfg, "vae", ctx.info.n_train, epochs=epochs, max_wall_s=float(wall))
    model, encoder = build_model(vc, ctx.info.image_size, ctx.info.channels)
    fit = fit_cached(VAETrainer(model, encoder, vc), ctx.train_set, cache_folder(ctx.models_dir, "vae-same-wall", vc), ctx,
                     "vae-wall")
    return Trained(model, encoder, fit.history,
                   training_row(fit, 1, f"same wall time as {reference_label} ({wall:.0f} s)", wall_budget_s=float(wall),
                                wall_reference=reference))
