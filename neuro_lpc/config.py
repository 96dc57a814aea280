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
    latent_dim: int = 40                     # Table 2
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

    def validate(self) -> "TrainConfig":
        from .likelihoods import LIKELIHOODS
        from .objectives import check_objective

        if self.method not in ("lpc", "vae"):
            raise ValueError(f"method must be 'lpc' or 'vae', got {self.method!r}")
        check_objective(self.warm_start)
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {sorted(LIKELIHOODS)}")
        for name in ("epochs", "batch_size", "langevin_steps", "latent_dim"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("lr", "step_size", "likelihood_sigma", "prior_std"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v == v and 0 < v < float("inf")):
                raise ValueError(f"{name} must be a positive finite number, got {v!r}")
        t = self.temperature
        # None only where a subclass declares it as its default (CircuitTrainConfig: the noise model's temperature)
        none_ok = t is None and next(f.default for f in fields(self) if f.name == "temperature") is None
        if not none_ok and (isinstance(t, bool) or not isinstance(t, (int, float)) or not (0 <= t < float("inf"))):
            raise ValueError(f"temperature must be a finite number >= 0 (0 = noise-free PC), got {t!r}")
        w = self.max_wall_s
        if w is not None and (isinstance(w, bool) or not isinstance(w, (int, float)) or not (0 < w < float("inf"))):
            raise ValueError(f"max_wall_s must be a positive finite number of seconds or None, got {w!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        return self

    # ------------------------------------------------------------- file I/O
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
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
        d = json.loads(p.read_text())
        return cls.from_dict(d.get("config", d))


def resolve_device(name: str):
    import torch

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
