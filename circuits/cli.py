"""Command-line front end of ``sims/train_circuit.py``: train the decoder/encoder with the circuit.

    python sims/train_circuit.py --dataset NAME --epochs N --out DIR [--resume] [--config FILE]
        [--noise PRESET | --noise-config FILE] [--dt S] [--tau-z S] [--tau-e S] [--temperature T]
        [--presentation-steps P] [--online --tau-theta S] ...

Flags default to None so that only the flags given override a ``--config`` file (a config.json
written by an earlier run; with --resume the run's own OUT/config.json). Bad input (unknown preset, unstable dt,
missing data folder, ...) is reported as one line ``error: ...`` with exit code 2 before
any training; a divergence during training exits with code 1 and names the batch and unit.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from neuro_lpc.cli import _FLAGS as _LPC_FLAGS
from neuro_lpc.cli import check_run
from neuro_lpc.validation import DEBUG_ENV, OneLineParser, check_path_text, check_text, cli_boundary, one_line_errors

from .learn import CircuitTrainConfig

_SHARED = {k: v for k, v in _LPC_FLAGS.items() if k not in ("method", "noise_form", "precondition", "fast")}
_CIRCUIT_FLAGS = {
    "dt": (float, "Euler-Maruyama step in seconds (default: step_size * tau_z, the discrete-LPC limit)"),
    "tau_z": (float, "value-unit time constant in seconds (default 0.01)"),
    "tau_e": (float, "error-unit time constant in seconds (default 0: adiabatic error units; finite needs dt < 2 tau_e)"),
    "temperature": (float, "temperature T of the intrinsic Langevin noise (default: the noise preset's)"),
    "presentation_steps": (int, "EM steps per batch (default: --langevin-steps)"),
    "record_every": (int, "record interval of a presentation (loss metric, forward-KL sums; default 1)"),
    "precondition_tau": (float, "time constant of the gain units with --precondition rms (seconds)"),
    "error_form": (str, "error | bogacz (Gaussian likelihood only)"),
    "learning_rule": (str, "hebbian | exact"),
    "timescales": (str, "time-constant model: uniform | heterogeneous | mismatch | adiabatic"),
    "tau_theta": (float, "weight time constant of the online rule in seconds (>> tau_z; inf = no online movement)"),
    "check_every": (int, "steps between NaN/inf checks of the circuit"),
    "learning": (str, "how the decoder's weights live on the analog array: deploy | hardware-aware (default) | "
                      "in-memory | in-memory-local (circuits.modes; matters with weight-device noise sources)"),
    "deploy_time": (float, "seconds since programming (in-memory: since the last write) at which the trained "
                           "weights are scored on the array (default: the drift source's t_start)"),
    "seconds_per_batch": (float, "in-memory learning: device-clock seconds per batch (default: the presentation's "
                                 "duration)"),
}
# the value units' family (issue 16; docs/circuits_dynamics.md), unless the discrete CLI already shares the flag
_DYNAMICS_FLAGS = {
    "dynamics": (str, "value-unit dynamics: overdamped (default) | nonreversible | underdamped"),
    "skew": (str, "nonreversible: the antisymmetric lateral connections J: none | random | optimal"),
    "skew_scale": (float, "nonreversible: scale of the named skew (random: spectral norm; optimal: 1 = the optimum)"),
    "friction": (float, "underdamped: friction gamma_f of the momentum units (default 1)"),
    "mass": (float, "underdamped: mass M of the momentum units (default 1)"),
    "integrator": (str, "underdamped: euler (Euler-Maruyama, default) | baoab (Leimkuhler & Matthews 2013 splitting)"),
}
_CIRCUIT_FLAGS.update({k: v for k, v in _DYNAMICS_FLAGS.items() if k not in _SHARED})


def _precondition(text: str):
    """none/off/0 -> None; rms/true -> "rms"; a number in (0, 1) -> that decay beta."""
    t = text.strip().lower()
    if t in ("none", "off", "false", "0", "0.0"):
        return None
    if t in ("rms", "true", "on"):
        return "rms"
    try:
        beta = float(t)
    except ValueError:
        beta = math.nan
    if not 0 < beta < 1:   # also NaN; 1 would be read as True by a comparison and never decay
        raise argparse.ArgumentTypeError(f"precondition must be none, rms or a decay beta in (0, 1), got {text!r}")
    return beta


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        description="Train a generative model with circuit Langevin predictive coding (circuits.learn.CircuitTrainer).",
        epilog=f"Errors are one line; --debug (or {DEBUG_ENV}=1) shows the traceback.")
    p.add_argument("--out", required=True, help="output folder (checkpoints, metrics.jsonl, config.json, sample grids)")
    p.add_argument("--config", help="a config.json written by an earlier run (flags given here override it)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--download", action="store_true", help="let torchvision download the data set (needs a network)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    noise = p.add_mutually_exclusive_group()
    noise.add_argument("--noise", help="noise preset: none | ideal | thermal | analog | cortical (or a .json noise config)")
    noise.add_argument("--noise-config", help="JSON file with a noise config (circuits.noise.NoiseModel.from_dict)")
    online = p.add_mutually_exclusive_group()
    online.add_argument("--online", dest="online", action="store_const", const=True, default=None,
                        help="weights also move during the presentation (online_lr = dt / tau_theta)")
    online.add_argument("--offline", dest="online", action="store_const", const=False,
                        help="weights move only at the Adam step after each presentation (default)")
    p.add_argument("--no-online-adam", dest="online_adam", action="store_const", const=False, default=None,
                   help="online variant: no Adam step on the decoder after the presentation")
    p.add_argument("--precondition", type=_precondition, default=argparse.SUPPRESS,
                   help="none (default) | rms | a decay beta in (0, 1) (gain units with tau_m = dt / (1 - beta))")
    for name, (typ, help_) in {**_SHARED, **_CIRCUIT_FLAGS}.items():
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=None, help=help_)
    return p


def _noise_from_file(path: str):
    from .noise import NoiseModel

    check_path_text("noise config file", path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"noise config file not found: {path}")
    return NoiseModel.from_file(path).to_dict()


def config_from_args(args) -> CircuitTrainConfig:
    if args.config is not None:
        check_path_text("--config", args.config)
    elif args.resume and args.out and (Path(args.out) / "config.json").is_file():
        args.config = str(Path(args.out) / "config.json")   # resume: the run's own config, the flags given on top
    cfg = CircuitTrainConfig.from_file(args.config).to_dict() if args.config else CircuitTrainConfig().to_dict()
    for name in {**_SHARED, **_CIRCUIT_FLAGS}:
        v = getattr(args, name)
        if v is not None:
            cfg[name] = v
    if isinstance(cfg.get("skew"), str) and cfg["skew"].strip().lower() == "none":
        cfg["skew"] = None
    if hasattr(args, "precondition"):
        cfg["precondition"] = args.precondition
    if args.online is not None:
        cfg["online"] = args.online
    if args.online_adam is not None:
        cfg["online_adam"] = args.online_adam
    if args.noise is not None:
        check_text("--noise", args.noise)
        cfg["noise"] = _noise_from_file(args.noise) if args.noise.endswith(".json") else args.noise
    if args.noise_config is not None:
        cfg["noise"] = _noise_from_file(args.noise_config)
    if args.download:
        cfg["download"] = True
    return CircuitTrainConfig.from_dict(cfg).validate()


def prepare(argv=None):
    """Parse and check everything before any work: (args, config, output folder); one-line ValueError otherwise."""
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    check_path_text("output folder", args.out)
    return args, cfg, check_run(args, cfg)


def _train(argv) -> int:
    args, cfg, out = prepare(argv)
    from neuro_lpc.data import load_dataset
    from neuro_lpc.train import build_model

    from .learn import CircuitTrainer

    train, _test, info = load_dataset(cfg.dataset, root=cfg.data_root, download=cfg.download)
    model, encoder = build_model(cfg, info.image_size, info.channels)
    from neuro_lpc.distributed import is_main_process, make_trainer   # under torchrun: data-parallel (docs/scale.md)

    trainer = make_trainer(CircuitTrainer, model, encoder, cfg, out_dir=out)
    history = trainer.fit(train, resume=args.resume, progress=not args.quiet and is_main_process())
    last = history[-1] if history else {}
    if is_main_process():
        print(json.dumps({"out": str(out), "epochs": trainer.epoch, "steps": trainer.global_step, "last": last}))
    return 0


def train_main(argv=None) -> int:
    """``sims/train_circuit.py``: every error is one line on stderr (exit 2: bad input; 1: divergence or failure)."""
    return cli_boundary(_train, argv)


def _study(argv) -> int:
    from .study.run import build_parser, main

    one_line_errors(build_parser()).parse_args(argv)   # usage errors as one line, before the study's own parse
    return main(argv)


def study_main(argv=None) -> int:
    """``sims/run_circuit.py`` (``circuits.study.main``) behind the CLI boundary: one-line errors, never a traceback."""
    return cli_boundary(_study, argv)
