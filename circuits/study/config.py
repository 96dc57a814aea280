"""Settings of the study (``StudyConfig``) and every check of user input, done before any work."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from neuro_lpc.errors import CheckpointError

DEFAULT_NOISE = "analog"
FEATURES = ("auto", "classifier", "inception")
PRECONDITIONERS = ("adam", "frozen")
ARCHITECTURE_CHOICES = ("auto", "mlp", "conv")
STUDY_MODES = ("hardware-aware", "deploy", "in-memory", "in-memory-local")   # --learning all, in table order
LOCAL_LR = 2e-4        # StudyConfig.local_lr: the largest of 3e-5 / 1e-4 / 2e-4 / 3e-4 at which the plain-SGD twin
                       # trained at the main job's budget (3e-4 diverged; docs/learning_modes.md)

# The budgets of the study (``--budget``): the fields each one sets (a flag given on the command line, or a field set
# away from its default in code, wins).  Sizes and measurements: docs/study.md ("budgets") and bench/RESULTS.md.
#   quick    a first look in <= 2 minutes: models NOT trained enough to rank (the report says so in its first line)
#   default  target <= 10 minutes on 2 CPU cores (measured 16.8: bench/RESULTS.md): the MLP decoder on 28x28 data,
#            5 epochs at lr 2e-3, 3 seeds of every
#            compared row
#   long     <= 30 minutes on 2 CPU cores: 16 epochs
#   paper    the paper's settings (Table 3 / Appendix A.1), for a GPU: T = 300, 15 epochs, the Table-2 conv networks,
#            the paper's FID protocol (50,000 samples against the training set's statistics)
BUDGETS = {
    "quick": dict(train_epochs=0.25, langevin_steps=5, prior_init_batches=4, seeds=1, posterior_chains=8,
                  posterior_steps=80, record_every=2, spread_chains=6, n_samples=200, onset_steps=40,
                  curve_points=2, curve_samples=128),
    "default": dict(train_epochs=5, langevin_steps=10, prior_init_batches=10, seeds=3),
    "long": dict(train_epochs=16, langevin_steps=10, prior_init_batches=10, seeds=3),
    "paper": dict(train_epochs=15, langevin_steps=300, prior_init_batches=50, seeds=3, architecture="conv",
                  full_protocol=True, lr=1e-3),
}


@dataclass
class StudyConfig:
    """Settings of the study; CPU-sized defaults (the paper trains with T = 300 Langevin steps).

    The defaults are the budget "default" (``BUDGETS``): measured 16.8 minutes on 2 CPU cores against a target of 10
    (stage split in bench/RESULTS.md, "Issue 14: the default run").
    """

    noise: str = DEFAULT_NOISE                 # preset name; or noise_config (a JSON file) overrides it
    noise_config: str | None = None
    model: str | None = None                   # a trained checkpoint (discrete LPC) to use instead of training
    out: str | None = None
    dataset: str = "animal-mnist"
    data_root: str | None = None
    quick: bool = False                        # the same as budget = "quick"
    budget: str = "default"                    # quick | default | long | paper (BUDGETS): sizes of training and metrics
    seed: int = 0
    seeds: int = 3                             # training seeds of the rows the verdict compares (discrete LPC and each
                                               # circuit row: seed, seed + 1, ...); the other rows run one seed
    device: str = "auto"
    skip: list[str] = field(default_factory=list)  # method rows not to run (reported as "not run")
    threads: int | None = 1                    # torch threads for training and posterior (many small ops: on a shared
                                               # 2-core CPU a second thread made a batch 4-10x slower, bench/RESULTS.md);
                                               # None = torch's default. Metrics use torch's default (large convs)
    train_workers: int | None = None           # rows training side by side in forked processes (None: as many
                                               # `threads`-thread processes as fit 2 cores; 1 = sequential)
    learning: str = "hardware-aware,deploy"    # analog learning modes of the circuit rows (circuits.modes): a comma list
                                               # of deploy, hardware-aware, in-memory, in-memory-local, or "all". Default:
                                               # the two that fit the 10-minute CPU budget (deploy reuses discrete LPC's
                                               # training)
    local_lr: float = LOCAL_LR                 # the in-memory-local row's decoder rate (its arrays' rule is plain SGD:
                                               # no Adam state; Adam's lr diverges there -- docs/learning_modes.md)
    # training (same data, optimiser and optimiser-step budget for every method; VAE also at the same wall time)
    train_epochs: float | None = 5             # the budget's epochs of the training split (sets train_batches; None: use it)
    train_batches: int = 700                   # optimiser steps (5 epochs of animal-mnist at batch 64 = 700)
    batch_size: int = 64
    architecture: str = "auto"                 # decoder/encoder: auto (mlp for 28x28 data on a CPU, else the paper's conv),
                                               # mlp (40-512-512-image), conv (Table 2) -- neuro_lpc.networks.ARCHITECTURES
    lr: float = 2e-3                           # Adam (the paper: 1e-3; 2e-3 reached FID 122-136 after 5 epochs of the MLP,
                                               # 1e-3 needed 7: docs/study.md "budgets"); the paper budget sets 1e-3
    lr_schedule: str = "constant"              # constant | cosine (TrainConfig.lr_schedule)
    langevin_steps: int = 10                   # T per batch (paper: 300; CPU-sized) -- named in the report
    step_size: float = 0.1                     # gamma with preconditioning beta = 0.25: the paper's CIFAR-10/CelebA setting
    precondition: float | None = 0.25          # (Appendix A.1). Without it early scores reach |s| ~ 1e5 and ULA diverges
                                               # unless gamma < 2 / lambda_max (docs/study.md)
    preconditioner: str = "adam"               # adam (Algorithm 1, G adapted every step) | frozen (G held after a warm-up)
    warm_start: str = "jeffreys"
    prior_init_batches: int = 10
    # circuit
    tau_z: float = 10e-3                       # value units, 10 ms (cortical range 10-20 ms)
    tau_e: float = 0.0                         # adiabatic error units by default: finite tau_e makes the z-eps loop of an
                                               # image model underdamped unless tau_e < tau_z / (4 lambda_max(P)); see docs/study.md
    # the circuit rows' value-unit family (docs/circuits_dynamics.md; the discrete rows are not changed by it):
    # overdamped | nonreversible (skew J: random | optimal, skew_scale) | underdamped (friction, mass; no gain units)
    dynamics: str = "overdamped"
    skew: str | None = None
    skew_scale: float = 1.0
    friction: float = 1.0
    mass: float = 1.0
    # posterior comparison
    posterior_chains: int = 16
    posterior_steps: int = 400
    record_every: int = 2
    spread_chains: int = 16
    onset_steps: int = 100                     # the onset experiment (diagnostics: variability quenching): spread_chains
                                               # chains of one image from the prior, recorded every step; 0: none
    # learning curves: a cheap sample-quality metric at curve_points optimiser steps of every training
    curve_points: int = 5                      # points per curve (log-spaced steps, the last at the end; 0: no curves)
    curve_samples: int = 256                   # samples per point: KID on the small classifier's features
    # sample quality
    n_samples: int = 500                       # per row (a row with several seeds pools n_samples / seeds per seed)
    feature: str = "auto"                      # auto (neuro_lpc.metrics.default_feature) | classifier | inception
    full_protocol: bool = False                # 50,000 samples with Inception features (paper)
    k: int = 5
    cache_dir: str | None = None
    quick_features: bool = False               # a 1-epoch feature classifier (set by --quick)

    def learning_modes(self) -> list[str]:
        """The learning modes of this run, in table order (validated by ``check_inputs``)."""
        from ..modes import LEARNING_MODES

        if self.learning == "all":
            return list(STUDY_MODES)
        modes = [m.strip() for m in str(self.learning).split(",") if m.strip()]
        bad = [m for m in modes if m not in LEARNING_MODES]
        if bad or not modes:
            raise StudyError(f"unknown learning mode {', '.join(map(repr, bad)) or repr(self.learning)}; choose "
                             f"{', '.join(LEARNING_MODES)}, a comma list of them, or all")
        return list(dict.fromkeys(modes))

    def apply_quick(self) -> "StudyConfig":
        """Apply the budget (``quick=True`` means budget "quick"): the fields it sets that are still at their
        class defaults (a field set in code or by a flag is kept); then the full protocol's sizes."""
        if self.quick:
            self.budget = "quick"
        if self.budget not in BUDGETS:
            raise StudyError(f"unknown budget {self.budget!r}; choose one of {', '.join(BUDGETS)}")
        if not getattr(self, "_budget_applied", False):
            defaults = StudyConfig.__dataclass_fields__
            for key, value in BUDGETS[self.budget].items():
                if getattr(self, key) == defaults[key].default:
                    setattr(self, key, value)
            if self.budget == "quick":
                self.quick_features = True
            self._budget_applied = True
        if self.full_protocol:
            self.n_samples, self.feature = 50_000, "inception"
        return self

    def dynamics_fields(self) -> dict:
        """The circuit rows' ``CircuitConfig`` / ``CircuitTrainConfig`` dynamics fields."""
        return dict(dynamics=self.dynamics, skew=self.skew, skew_scale=self.skew_scale, friction=self.friction,
                    mass=self.mass)

    def steps_per_epoch(self, n_train: int) -> int:
        return max(1, n_train // self.batch_size)

    def resolve_train_batches(self, n_train: int) -> int:
        """Optimiser steps of every training row: ``train_epochs`` epochs of the training split, or ``train_batches``."""
        if self.train_epochs is not None:
            self.train_batches = max(1, round(float(self.train_epochs) * self.steps_per_epoch(n_train)))
        return self.train_batches

    def resolved_architecture(self, image_size: int, device) -> str:
        """``auto``: the MLP pair for 28x28 data on a CPU (a step ~4.5x cheaper than Table 2's on one thread, and a
        better FID per CPU second: docs/study.md), the paper's conv pair otherwise (32x32 / 64x64 data, a GPU)."""
        if self.architecture != "auto":
            return self.architecture
        import torch

        return "mlp" if image_size == 28 and torch.device(device).type == "cpu" else "conv"

    def seeds_of(self, compared: bool) -> list[int]:
        """The training seeds of a row: ``seeds`` of them for a row the verdict compares, else one."""
        return [self.seed + k for k in range(self.seeds if compared else 1)]


class StudyError(ValueError):
    """Bad input to the study, detected before any work."""


def resolve_noise(cfg: StudyConfig):
    """The noise model (preset name or JSON file), validated before any work."""
    from .. import noise as noise_mod

    if cfg.noise_config:
        p = Path(cfg.noise_config)
        if not p.is_file():
            raise StudyError(f"noise config file not found: {p}")
        return noise_mod.NoiseModel.from_file(p)
    if cfg.noise not in noise_mod.PRESETS:
        raise StudyError(f"unknown noise preset {cfg.noise!r}; choose one of {', '.join(noise_mod.PRESETS)} or --noise-config FILE")
    return cfg.noise


def check_fields(cfg: StudyConfig) -> None:
    """Type and range of every field (StudyError naming it), the circuit's time constants against its dt, and the
    cache folder -- all before any work (these used to fail after training or at the metrics stage)."""
    from neuro_lpc.data import DATASETS
    from neuro_lpc.objectives import WARM_START_OBJECTIVES
    from neuro_lpc.validation import LIMITS, check_bool, check_cache_dir, check_choice, check_device, check_int, \
        check_number, check_text

    from ..config import CircuitConfig, check_dt_static

    try:
        for name in ("noise", "out", "learning"):
            check_text(name, getattr(cfg, name))
        for name in ("noise_config", "model", "data_root", "cache_dir"):
            check_text(name.replace("_", "-"), getattr(cfg, name), allow_none=True)
        check_choice("dataset", cfg.dataset, DATASETS)
        check_choice("warm-start", cfg.warm_start, WARM_START_OBJECTIVES)
        for name in ("quick", "full_protocol", "quick_features"):
            check_bool(name, getattr(cfg, name))
        if not isinstance(cfg.skip, list) or not all(isinstance(s, str) for s in cfg.skip):
            raise ValueError(f"skip must be a list of row names, got {cfg.skip!r}")
        check_device("device", cfg.device)
        check_int("seed", cfg.seed, lo=0, hi=LIMITS["seed"])
        sizes = {"train_batches": "batches", "batch_size": "batch_size", "langevin_steps": "steps",
                 "posterior_steps": "steps", "posterior_chains": "chains", "spread_chains": "chains",
                 "n_samples": "samples", "record_every": "steps", "k": "chains"}
        for name, limit in sizes.items():
            check_int(name.replace("_", "-"), getattr(cfg, name), hi=LIMITS[limit])
        check_int("prior-init-batches", cfg.prior_init_batches, lo=0, hi=LIMITS["batches"])
        check_choice("budget", cfg.budget, tuple(BUDGETS))
        check_choice("architecture", cfg.architecture, ARCHITECTURE_CHOICES)
        check_int("seeds", cfg.seeds, hi=100)
        check_int("curve-points", cfg.curve_points, lo=0, hi=100)
        check_int("curve-samples", cfg.curve_samples, lo=cfg.k + 1 if isinstance(cfg.k, int) else 2, hi=LIMITS["samples"])
        check_number("lr", cfg.lr, lo=0, lo_open=True)
        check_number("local-lr", cfg.local_lr, lo=0, lo_open=True)
        from neuro_lpc.config import LR_SCHEDULES
        check_choice("lr-schedule", cfg.lr_schedule, LR_SCHEDULES)
        if cfg.train_epochs is not None:
            check_number("train-epochs", cfg.train_epochs, lo=0, lo_open=True, hi=LIMITS["epochs"])
        check_int("onset-steps", cfg.onset_steps, lo=0, hi=LIMITS["steps"])
        check_int("threads", cfg.threads, hi=LIMITS["threads"], allow_none=True)
        check_int("train-workers", cfg.train_workers, hi=LIMITS["workers"], allow_none=True)
        check_number("step-size", cfg.step_size, lo=0, lo_open=True)
        check_number("tau-z", cfg.tau_z, lo=0, lo_open=True, unit=" of seconds")
        check_number("tau-e", cfg.tau_e, lo=0, unit=" of seconds (0 = adiabatic)")
        if cfg.precondition is not None:
            check_number("precondition (a decay beta; null = off)", cfg.precondition, lo=0, hi=1, hi_open=True)
        # the circuit rows run at dt = gamma tau_z: its stability bounds on tau_z / tau_e / tau_m need no network
        cc = CircuitConfig(dt=cfg.step_size * cfg.tau_z, tau_z=cfg.tau_z, tau_e=cfg.tau_e, noise=resolve_noise(cfg),
                           precondition=cfg.precondition or None,   # also the noise file's amplitudes
                           **cfg.dynamics_fields())
        check_dt_static(cc.validate())
        if cfg.cache_dir is not None:
            check_cache_dir(cfg.cache_dir, "cache folder (--cache-dir)")
    except ValueError as e:
        raise StudyError(str(e)) from None


def check_inputs(cfg: StudyConfig, method_names=None) -> Path:
    """Every check that can fail on user input, before training or sampling anything.

    ``method_names``: the rows of this run (``--skip`` must name some of them).
    """
    check_fields(cfg)
    resolve_noise(cfg)
    cfg.learning_modes()
    if cfg.feature not in FEATURES:
        raise StudyError(f"unknown feature network {cfg.feature!r}; choose {', '.join(FEATURES)}")
    if cfg.preconditioner not in PRECONDITIONERS:
        raise StudyError(f"unknown preconditioner {cfg.preconditioner!r}; choose {' or '.join(PRECONDITIONERS)}")
    if cfg.preconditioner == "frozen" and not cfg.precondition:
        raise StudyError("--preconditioner frozen needs preconditioning (a decay beta); this run has none")
    for name in ("train_batches", "langevin_steps", "posterior_chains", "posterior_steps", "n_samples", "record_every",
                 "spread_chains", "batch_size"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not (isinstance(v, int) and v >= 1):
            raise StudyError(f"{name.replace('_', '-')} must be a positive integer, got {v!r}")
    for name in ("step_size", "tau_z"):
        v = getattr(cfg, name)
        if not (isinstance(v, (int, float)) and 0 < v < float("inf")):
            raise StudyError(f"{name.replace('_', '-')} must be a positive finite number, got {v!r}")
    if not (isinstance(cfg.tau_e, (int, float)) and 0 <= cfg.tau_e < float("inf")):
        raise StudyError(f"tau-e must be a non-negative finite number of seconds, got {cfg.tau_e!r}")
    if cfg.threads is not None and (isinstance(cfg.threads, bool) or not isinstance(cfg.threads, int) or cfg.threads < 1):
        raise StudyError(f"threads must be a positive integer, got {cfg.threads!r}")
    if cfg.train_workers is not None and (isinstance(cfg.train_workers, bool) or not isinstance(cfg.train_workers, int)
                                          or cfg.train_workers < 1):
        raise StudyError(f"train-workers must be a positive integer, got {cfg.train_workers!r}")
    if cfg.posterior_steps // cfg.record_every < 8:
        raise StudyError("posterior_steps / record_every must give at least 8 records")
    if cfg.spread_chains < 2:
        raise StudyError("spread_chains must be at least 2")
    if cfg.n_samples <= cfg.k:
        raise StudyError(f"n_samples must exceed k = {cfg.k}")
    if method_names is not None:
        unknown = [s for s in cfg.skip if s not in method_names]
        if unknown:
            raise StudyError(f"--skip names unknown method(s) {', '.join(map(repr, unknown))}; the rows are "
                             f"{', '.join(method_names)}")
        if "discrete" in cfg.skip:
            raise StudyError("the discrete LPC row cannot be skipped: it is the reference of the posterior comparison "
                             "and of the same-wall-time VAE")
    out = Path(cfg.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise StudyError(f"output folder is not writable: {out} ({e.strerror})") from None
    if cfg.model is not None:
        from neuro_lpc.data import load_dataset
        from neuro_lpc.train import read_checkpoint

        p = Path(cfg.model)
        if not p.is_file():
            raise StudyError(f"model file not found: {p}")
        try:
            ck = read_checkpoint(p)
        except CheckpointError as e:
            raise StudyError(str(e)) from None
        _, _, info = load_dataset(cfg.dataset, cfg.data_root)
        if (ck.get("channels"), ck.get("image_size")) != (info.channels, info.image_size):
            raise StudyError(f"model {p} is for {ck.get('channels')}x{ck.get('image_size')}x{ck.get('image_size')} images "
                             f"but {cfg.dataset} has {info.channels}x{info.image_size}x{info.image_size}")
    return out
