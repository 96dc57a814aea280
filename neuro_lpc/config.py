"""Run configuration (a dataclass saved with every run) and run metadata (seed, versions, git commit)."""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


LR_SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adam", "sgd")          # TrainConfig.optimizer: the decoder's optimiser (likelihood and encoder: always Adam)


@dataclass
class TrainConfig:
    """Everything a training run depends on.  Defaults are the paper's (Table 3, Appendix A.1) unless noted."""

    method: str = "lpc"                      # lpc | vae
    dataset: str = "animal-mnist"
    data_root: str | None = None
    download: bool = False
    epochs: int = 1
    batch_size: int = 64                     # Table 3
    lr: float = 1e-3                         # Table 3 (Adam), decoder and encoder
    optimizer: str = "adam"                  # adam (Table 3: decoder, likelihood and encoder) | sgd: plain SGD (no momentum,
                                             # no per-weight state) on the decoder, Adam on the likelihood and the
                                             # encoder: the digital twin of the in-memory-local rule (issue 17)
    decoder_lr: float | None = None          # the decoder's learning rate where it differs from lr (None: lr); the rate of
                                             # optimizer="sgd"'s SGD and of in-memory-local's arrays (plain SGD needs a
                                             # far smaller rate than Adam: docs/learning_modes.md)
    lr_schedule: str = "constant"            # constant (the paper) | cosine: lr * (1 + cos(pi * progress)) / 2, progress =
                                             # optimiser steps / the run's total (of the wall budget with max_wall_s)
    latent_dim: int = 40                     # Table 2
    architecture: str = "conv"               # decoder/encoder (neuro_lpc.networks.ARCHITECTURES): conv = Table 2 (the paper);
                                             # mlp = 40 -> 512 -> 512 -> image (the main job's CPU default on 28x28)
    likelihood: str = "discretized_gaussian"  # Table 3
    likelihood_sigma: float = 0.1            # initial sigma of the output likelihood (learned)
    learn_sigma: bool = True
    prior_std: float = 1.0
    langevin_steps: int = 300                # Table 3, T
    step_size: float = 0.1                   # Appendix A.1: inference rate 1e-1 (CIFAR10, CelebA)
    precondition: float | None = 0.25        # Appendix A.1: beta 0.25 with step 0.1; None/0 = off
    precondition_delta: float = 1e-8
    noise_form: str = "correct"              # "correct" N(0, 2 gamma G) or "literal" N(0, 2 gamma m_hat)
    temperature: float = 1.0                 # T of the training chains' noise sqrt(2 gamma T G): 1 = LPC (the paper),
                                             # 0 = classic noise-free predictive coding (deterministic gradient ascent)
    warm_start: str = "jeffreys"             # none | forward | reverse | jeffreys (section 1.2)
    prior_init_batches: int = 50             # first batches start the chain from the prior (section 3.1)
    max_batches_per_epoch: int | None = None
    max_wall_s: float | None = None          # stop after this much training wall time (checked after every optimiser
                                             # step; epochs is then an upper bound): wall-clock-matched baselines
    grad_clip: float | None = None
    seed: int = 0
    device: str = "auto"                     # auto | cpu | cuda
    sample_grid: int = 64                    # samples in the per-epoch PNG grid (0 = none)
    log_every: int = 1
    fast: str | None = None                  # LangevinSampler fast path: None (eager) | fused | graphs (CUDA graphs,
                                             # eager off CUDA): the same chain (docs/scale.md)
    checkpoint_every_steps: int | None = None  # also checkpoint after every N-th optimiser step (None: not by steps)
    checkpoint_every_s: float | None = 600.0   # ... and after the first step ending this many seconds after the last
                                               # checkpoint (None: not by time); plus every epoch end and SIGINT
    dynamics: str = "overdamped"             # sampler family (neuro_lpc.dynamics, docs/dynamics.md): overdamped (the
                                             # paper) | nonreversible (drift (G + J) s) | underdamped (BAOAB, needs
                                             # precondition off)
    skew: str | None = None                  # J of "nonreversible": None | random | optimal (or a (d, d) tensor, in code)
    skew_scale: float = 1.0                  # scale of the named skew ("random": spectral norm of J)
    friction: float = 1.0                    # gamma_f of "underdamped"
    mass: float = 1.0                        # M of "underdamped" (a number; or a (d,) tensor, in code)

    def validate(self) -> "TrainConfig":
        """Check every field's type and range (one-line ValueError naming the field); returns self.

        Sizes that would hang a run (T, grids, batch) are bounded by ``neuro_lpc.validation.LIMITS``."""
        from .data import DATASETS
        from .likelihoods import LIKELIHOODS
        from .objectives import check_objective
        from .validation import LIMITS, check_bool, check_choice, check_device, check_int, check_number, check_text

        if self.method not in ("lpc", "vae"):
            raise ValueError(f"method must be 'lpc' or 'vae', got {self.method!r}")
        check_choice("dataset", self.dataset, DATASETS)
        check_text("data_root", self.data_root, allow_none=True)
        check_bool("download", self.download)
        check_objective(self.warm_start)
        from .networks import ARCHITECTURES
        check_choice("architecture", self.architecture, tuple(ARCHITECTURES))
        if not isinstance(self.likelihood, str) or self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {sorted(LIKELIHOODS)}")
        check_choice("noise_form", self.noise_form, ("correct", "literal"))
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_int("epochs", self.epochs, hi=LIMITS["epochs"])
        check_int("batch_size", self.batch_size, hi=LIMITS["batch_size"])
        check_int("langevin_steps", self.langevin_steps, hi=LIMITS["steps"])
        check_int("latent_dim", self.latent_dim, hi=LIMITS["latent_dim"])
        check_int("prior_init_batches", self.prior_init_batches, lo=0, hi=LIMITS["batches"])
        check_int("max_batches_per_epoch", self.max_batches_per_epoch, hi=LIMITS["batches"], allow_none=True)
        check_int("seed", self.seed, lo=0, hi=LIMITS["seed"])
        check_int("sample_grid", self.sample_grid, lo=0, hi=LIMITS["sample_grid"])
        check_int("log_every", self.log_every, hi=LIMITS["batches"])
        check_int("checkpoint_every_steps", self.checkpoint_every_steps, hi=LIMITS["batches"], allow_none=True)
        check_choice("fast", self.fast, ("fused", "graphs"), allow_none=True)
        check_number("checkpoint_every_s", self.checkpoint_every_s, lo=0, lo_open=True, allow_none=True, unit=" (seconds)")
        check_number("decoder_lr", self.decoder_lr, lo=0, lo_open=True, allow_none=True)
        for name in ("lr", "step_size", "likelihood_sigma", "prior_std", "precondition_delta"):
            check_number(name, getattr(self, name), lo=0, lo_open=True)
        check_bool("learn_sigma", self.learn_sigma)
        if self.precondition is not None:   # CircuitTrainConfig checks its own ("rms", True) in CircuitConfig
            check_number("precondition (a decay beta; 0 or null = off)", self.precondition, lo=0, hi=1, hi_open=True)
        t = self.temperature
        # None only where a subclass declares it as its default (CircuitTrainConfig: the noise model's temperature)
        none_ok = t is None and next(f.default for f in fields(self) if f.name == "temperature") is None
        if not none_ok:
            check_number("temperature", t, lo=0)
        check_number("max_wall_s", self.max_wall_s, lo=0, lo_open=True, allow_none=True, unit=" of seconds")
        check_number("grad_clip", self.grad_clip, lo=0, lo_open=True, allow_none=True,
                     unit=" (the largest gradient norm; null = no clipping)")
        check_device("device", self.device)
        self._validate_dynamics()
        return self

    def _validate_dynamics(self) -> None:
        """The sampler family's fields (neuro_lpc.dynamics.check_dynamics) and, for LPC, its one conflict."""
        from .dynamics import check_dynamics

        check_dynamics(self.dynamics, self.skew, self.skew_scale, self.friction, self.mass, where="TrainConfig")
        if self.method == "lpc" and self.dynamics == "underdamped" and self.precondition not in (None, 0):
            raise ValueError(f"TrainConfig: dynamics='underdamped' does not support preconditioning; set precondition "
                             f"to 0 (off), got {self.precondition!r}")

    # ------------------------------------------------------------- file I/O
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        if not isinstance(d, dict):
            raise ValueError(f"a config must be a JSON object of fields, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "TrainConfig":
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        try:
            d = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"config file {p} is not valid JSON: {e}") from None
        except OSError as e:
            raise ValueError(f"cannot read config file {p}: {e.strerror}") from None
        if isinstance(d, dict) and "config" in d:   # a config.json written by a run: the fields sit under "config"
            d = d["config"]
        if not isinstance(d, dict):
            raise ValueError(f"config file {p} must hold a JSON object of fields, got {type(d).__name__}")
        return cls.from_dict(d)


def resolve_device(name: str):
    import torch

    from .validation import check_device

    check_device("device", name)   # also: a cuda:N that does not exist on this machine
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA device is available")
    return torch.device(name)


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict:
    from importlib import metadata

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("torch", "torchvision", "numpy", "scipy", "h5py", "brian2", "torchdiffeq", "matplotlib", "tqdm"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, p)


def write_run_metadata(out_dir: str | os.PathLike, config, extra: dict | None = None, name: str = "config.json") -> Path:
    """Write the full config with seed, package versions and git commit; the file re-runs the job (--config)."""
    cfg = config.to_dict() if hasattr(config, "to_dict") else (asdict(config) if dataclasses.is_dataclass(config) else dict(config))
    meta = {"config": cfg, "seed": cfg.get("seed"), "versions": package_versions(), "git_commit": git_commit(),
            "argv": sys.argv}
    if extra:
        meta.update(extra)
    path = Path(out_dir) / name
    atomic_write_text(path, json.dumps(meta, indent=2, default=str))
    return path
