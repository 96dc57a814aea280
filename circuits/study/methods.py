"""The rows of the method table: what each trains and which sampler (if any) gives its posterior row.

A :class:`Method` is one row.  ``default_methods`` is today's table; adding a row is one entry, e.g. a
circuit learning mode::

    Method("circuit · deploy", "circuit · deploy", "circuit",
           train=lambda ctx: train_circuit(ctx, name="circuit-deploy", learning_mode="deploy"),
           posterior=lambda ctx, inp: circuit_posterior(ctx, inp, name="circuit · deploy"))

and ``run_study(cfg, methods=default_methods(cfg, noise) + [that])`` (or an entry in ``default_methods``).
``train(ctx) -> Trained`` may raise ``NotRun`` (row "not run", reason given) or ``DivergenceError`` (row
"diverged"; for a ``required`` row the study stops).  ``posterior(ctx, inputs) -> PosteriorRun`` samples the
discrete-LPC model from the shared warm starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .posterior import circuit_posterior, discrete_posterior
from .train import train_circuit, train_discrete, train_pc, train_vae, train_vae_same_wall

KINDS = ("lpc", "pc", "circuit", "vae")


@dataclass
class Method:
    name: str                                   # key in report["methods"] (and in --skip)
    label: str                                  # the row's name in the tables and the verdict
    kind: str                                   # lpc | pc | circuit | vae: which comparisons the verdict makes
    train: Callable                             # (StudyContext) -> Trained
    posterior: Callable | None = None           # (StudyContext, PosteriorInputs) -> PosteriorRun
    required: bool = False                      # its divergence stops the study (the reference row)

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

    @staticmethod
    def slug(name: str) -> str:
        """A file-name form of a row name ('circuit · deploy' -> 'circuit-deploy')."""
        s = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
        while "--" in s:
            s = s.replace("--", "-")
        return s.strip("-") or "method"


def noise_label(cfg) -> str:
    return Path(cfg.noise_config).stem if cfg.noise_config else cfg.noise


def default_methods(cfg) -> list[Method]:
    """Today's table: discrete LPC (reference), the circuit under the run's noise, noise-free PC and two VAEs."""
    return [
        Method("discrete", "discrete LPC", "lpc", train_discrete, discrete_posterior, required=True),
        Method("circuit", f"circuit · {noise_label(cfg)}", "circuit", train_circuit, circuit_posterior),
        Method("pc", "PC (T = 0)", "pc", train_pc),
        Method("vae", "VAE · same steps", "vae", train_vae),
        Method("vae-wall", "VAE · same wall time", "vae", train_vae_same_wall),
    ]
