"""The rows of the method table: what each trains and which sampler (if any) gives its posterior row.

A :class:`Method` is one row.  ``default_methods`` is today's table; adding a row is one entry, e.g. a
circuit learning mode::

    Method("circuit · deploy", "circuit · deploy", "circuit",
           train=lambda ctx: train_circuit(ctx, name="circuit-deploy", learning_mode="deploy"),
           posterior=lambda ctx, inp: circuit_posterior(ctx, inp, name="circuit · deploy"))

and ``run_study(cfg, methods=default_methods(cfg, noise) + [that])`` (or an entry in ``default_methods``).
``train(ctx) -> Trained`` may raise ``NotRun`` (row "not run", reason given) or ``DivergenceError`` (row
"diverged"; for a ``required`` row the study stops).  ``pretrain=True`` marks a train() that caches its model
(``train.fit_cached``): it may first run in a worker process beside another row (``parallel.pretrain``),
with its ``after`` rows loaded from their caches.  ``posterior(ctx, inputs) -> PosteriorRun`` samples the
discrete-LPC model from the shared warm starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .posterior import circuit_posterior, discrete_posterior, device_posterior
from .train import (train_circuit, train_deploy, train_discrete, train_ideal_circuit, train_pc, train_vae,
                    train_vae_same_wall)

KINDS = ("lpc", "pc", "circuit", "vae")


@dataclass
class Method:
    name: str                                   # key in report["methods"] (and in --skip)
    label: str                                  # the row's name in the tables and the verdict
    kind: str                                   # lpc | pc | circuit | vae: which comparisons the verdict makes
    train: Callable                             # (StudyContext) -> Trained
    posterior: Callable | None = None           # (StudyContext, PosteriorInputs) -> PosteriorRun
    required: bool = False                      # its divergence stops the study (the reference row)
    pretrain: bool = False                      # train() caches its model on disk: it may run in a worker process first
    after: tuple = ()                           # rows whose trained models train() uses (ctx.trained[...])
    compared: bool = False                      # a row the verdict compares: trained with cfg.seeds seeds
    replica_of: str | None = None               # a seed replica's base row (its name is "<base>@<k>")
    seed_index: int = 0                         # k: the replica trains with seed cfg.seed + k

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Method kind must be one of {KINDS}, got {self.kind!r}")


@dataclass
class StudyContext:
    """What a row's trainer and sampler see."""

    cfg: Any
    device: Any
    noise: Any                                  # preset name or NoiseModel
    out: Path
    models_dir: Path
    train_set: Any
    test_set: Any
    info: Any
    log: Callable = print
    trained: dict = field(default_factory=dict)  # name -> Trained, in table order (rows trained so far)
    preconditioner: dict = field(default_factory=dict)
    train_walls: dict = field(default_factory=dict)  # name -> training wall seconds in this run (workers overlap)
    train_cpu: dict = field(default_factory=dict)    # name -> its CPU seconds
    worker_samples: dict = field(default_factory=dict)  # name -> {"images", "features"} drawn in its training worker
    worker_metric_walls: dict = field(default_factory=dict)  # name -> wall seconds of that work in the worker
    worker_jobs: dict = field(default_factory=dict)  # "job:<label>" -> outcome of an extra worker job
    onsets: dict = field(default_factory=dict)       # row label -> (t, z (R, S, d)) of the onset experiment
    train_workers: int = 1
    curve_recorder: Callable | None = None      # (row name, folder, sample) -> CurveRecorder | None (learning curves)
    progress: Callable | None = None            # (dict) -> None: a training's progress (circuits.study.progress)
    board: Any = None                           # the parent's ProgressBoard (polls the workers' progress files)

    @staticmethod
    def slug(name: str) -> str:
        """A file-name form of a row name ('circuit · deploy' -> 'circuit-deploy')."""
        s = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
        while "--" in s:
            s = s.replace("--", "-")
        return s.strip("-") or "method"


class SeedView(dict):
    """``ctx.trained`` as a seed replica k sees it: row ``name`` is the replica ``name@k`` where one exists."""

    def __init__(self, base: dict, k: int):
        super().__init__()
        self.base, self.k = base, k

    def _key(self, name):
        return f"{name}@{self.k}" if self.k and f"{name}@{self.k}" in self.base else name

    def __getitem__(self, name):
        return self.base[self._key(name)]

    def get(self, name, default=None):
        return self.base.get(self._key(name), default)

    def __contains__(self, name):
        return self._key(name) in self.base

    def __setitem__(self, name, value):
        self.base[f"{name}@{self.k}" if self.k else name] = value


def seeded(ctx: StudyContext, k: int) -> StudyContext:
    """The context of seed replica k: the config's seed is cfg.seed + k (initial weights, data order, noise draws,
    samples), ``trained`` maps a row to its replica k, and progress / curves are reported under the replica's name."""
    import copy
    import dataclasses

    if k == 0:
        return ctx
    c = copy.copy(ctx)
    c.cfg = dataclasses.replace(ctx.cfg, seed=ctx.cfg.seed + k)
    c.trained = SeedView(ctx.trained, k)
    if ctx.curve_recorder is not None:
        c.curve_recorder = lambda name, folder, sample: ctx.curve_recorder(f"{name}@{k}", folder, sample)
    if ctx.progress is not None:
        c.progress = lambda d: ctx.progress({**d, "row": f"{d['row']}@{k}"})
    return c


def with_seed_replicas(methods: list[Method], seeds: int) -> list[Method]:
    """Each ``compared`` row followed by its replicas ``name@1`` ... ``name@{seeds-1}`` (seed cfg.seed + k); a
    replica's ``after`` rows are their replicas of the same seed.  Replicas have no posterior row (the posterior
    comparison runs on one model: the base row's)."""
    compared = {m.name for m in methods if m.compared}
    out = []
    for m in methods:
        out.append(m)
        if not m.compared:
            continue
        for k in range(1, seeds):
            def train(ctx, base=m, k=k):
                return base.train(seeded(ctx, k))
            out.append(Method(f"{m.name}@{k}", f"{m.label} · seed {k}", m.kind, train, None, False, m.pretrain,
                              tuple(f"{a}@{k}" if a in compared else a for a in m.after), True, m.name, k))
    return out


def noise_label(cfg) -> str:
    return Path(cfg.noise_config).stem if cfg.noise_config else cfg.noise


def _has_weight_devices(cfg) -> bool:
    from ..modes import split_weight_sources
    from .config import resolve_noise
    from ..noise import NoiseModel

    noise = resolve_noise(cfg)
    return bool(split_weight_sources(noise if isinstance(noise, NoiseModel) else NoiseModel.resolve(noise))[0])


def mode_methods(cfg) -> list[Method]:
    """One circuit row per analog learning mode (``cfg.learning_modes()``; the first is the row "circuit"), or one
    circuit row when the noise model has no weight devices (the modes then coincide).

    Posterior rows compare samplers on ONE model, discrete LPC's: the first circuit row's posterior is the circuit
    under the run's noise sampling the discrete-LPC model programmed onto its devices (``circuit_posterior`` with no
    array: programmed from the model at construction); the other mode rows have the same sampler on that model, so
    they add no posterior row."""
    label = noise_label(cfg)
    if not _has_weight_devices(cfg):
        return [Method("circuit", f"circuit · {label}", "circuit", train_circuit, circuit_posterior, pretrain=True,
                       compared=True)]
    rows = []
    for i, mode in enumerate(cfg.learning_modes()):
        name = "circuit" if i == 0 else f"circuit-{mode}"
        if mode == "deploy":
            train = train_deploy
        elif mode == "in-memory-local":
            def train(ctx, name=name):
                return train_circuit(ctx, name=name, **local_overrides(ctx))
        else:
            def train(ctx, name=name, mode=mode):
                return train_circuit(ctx, name=name, learning=mode)

        def post(ctx, inp, name=name):
            return device_posterior(ctx, inp, name)
        rows.append(Method(name, f"circuit · {label} · {mode}", "circuit", train, post if i == 0 else None,
                           pretrain=mode != "deploy", after=("discrete",) if mode == "deploy" else (), compared=True))
    return rows


def local_overrides(ctx) -> dict:
    """The in-memory-local row's training: the study's ``local_lr`` for the decoder (the arrays' local rule is plain
    SGD: Adam's rate diverges there; the encoder and sigma keep Adam at ``lr``),
    and the run's noise without ``feedback_mismatch`` -- a locally learning array reads its own transpose for the
    error feedback (the backward read, with ``weight_read``'s noise where ``reads`` includes it), so there is no
    separate feedback array to mismatch (circuits.learn refuses one in this mode)."""
    from ..noise import NoiseModel

    noise = ctx.noise if isinstance(ctx.noise, NoiseModel) else NoiseModel.resolve(ctx.noise)
    d = noise.to_dict()
    d["sources"] = [s for s in d["sources"] if s["type"] != "feedback_mismatch"]
    return {"learning": "in-memory-local", "decoder_lr": ctx.cfg.local_lr, "noise": d}


def default_methods(cfg) -> list[Method]:
    """The table: discrete LPC (reference), the ideal circuit (a control trained through the circuit path), the
    circuit under the run's noise (one row per analog learning mode), noise-free PC and two VAEs.  The rows the
    verdict compares (discrete LPC and each circuit row) train ``cfg.seeds`` seeds (``with_seed_replicas``)."""
    ideal = [] if noise_label(cfg) == "ideal" else [
        Method("circuit-ideal", "circuit · ideal", "circuit", train_ideal_circuit,
               lambda ctx, inp: circuit_posterior(ctx, inp, name="circuit-ideal", noise="ideal"), pretrain=True,
               compared=True)]
    return [
        Method("discrete", "discrete LPC", "lpc", train_discrete, discrete_posterior, required=True,
               pretrain=not cfg.model, compared=not cfg.model),
        *ideal,
        *mode_methods(cfg),
        Method("pc", "PC (T = 0)", "pc", train_pc, pretrain=True),
        Method("vae", "VAE · same steps", "vae", train_vae, pretrain=True),
        Method("vae-wall", "VAE · same wall time", "vae", train_vae_same_wall, pretrain=True, after=("discrete",)),
    ]
