"""Command-line front end of ``sims/train_lpc.py`` (kept here so the script stays thin)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .config import TrainConfig, resolve_device
from .validation import DEBUG_ENV, OneLineParser, check_out_dir, check_path_text, cli_boundary

# CLI flag -> TrainConfig field (flags default to None so that only given flags override a --config file)
_FLAGS = {
    "method": (str, "lpc | vae"), "dataset": (str, "animal-mnist (embedded), mnist, fashion-mnist, cifar10, svhn, celeba64"),
    "data_root": (str, "folder holding torchvision data sets"), "epochs": (int, "number of epochs"),
    "batch_size": (int, "batch size (paper: 64)"), "lr": (float, "Adam learning rate (paper: 1e-3)"),
    "lr_schedule": (str, "constant (paper) | cosine (decays to 0 over the run)"),
    "decoder_lr": (float, "the decoder's learning rate where it differs from --lr (the rate of --optimizer sgd and of "
                          "--learning in-memory-local)"),
    "optimizer": (str, "adam (paper, default) | sgd: plain SGD on the decoder, Adam on the likelihood and encoder (the "
                       "digital twin of --learning in-memory-local)"),
    "latent_dim": (int, "latent dimension (paper: 40)"),
    "architecture": (str, "decoder/encoder: conv (the paper's Table 2, default) | mlp (40-512-512-image, CPU-sized)"), "likelihood": (str, "discretized_gaussian | gaussian | bernoulli"),
    "langevin_steps": (int, "Langevin steps T per batch (paper: 300)"), "step_size": (float, "Langevin step size gamma"),
    "precondition": (float, "preconditioning decay beta; 0 = off"), "warm_start": (str, "none | forward | reverse | jeffreys"),
    "prior_init_batches": (int, "first batches started from the prior (paper: 50)"),
    "max_batches_per_epoch": (int, "cap on batches per epoch"), "seed": (int, "random seed"),
    "device": (str, "auto | cpu | cuda"), "noise_form": (str, "correct | literal (Algorithm 1 as printed)"),
    "fast": (str, "Langevin fast path: fused (compiled preconditioner) | graphs (CUDA graphs; eager off CUDA); default eager"),
    "sample_grid": (int, "samples in the per-epoch PNG grid (0 = no grid; at most 1024)"),
    "checkpoint_every_steps": (int, "also checkpoint every N optimiser steps (default: not by steps)"),
    "checkpoint_every_s": (float, "also checkpoint after the first step N s after the last checkpoint (default 600)"),
    "dynamics": (str, "sampler family: overdamped (the paper, default) | nonreversible | underdamped (BAOAB; needs "
                      "--precondition 0); docs/dynamics.md"),
    "skew": (str, "J of --dynamics nonreversible: random | optimal (default: none)"),
    "skew_scale": (float, "scale of the skew (random: spectral norm of J; optimal: 1 = LNP 2013's optimum)"),
    "friction": (float, "friction gamma_f of --dynamics underdamped (default 1)"),
    "mass": (float, "mass M of --dynamics underdamped (default 1)"),
}


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description="Train a generative model with discrete Langevin predictive coding or as a VAE.",
                      epilog=f"Errors are one line; --debug (or {DEBUG_ENV}=1) shows the traceback.")
    p.add_argument("--out", required=True, help="output folder (checkpoints, metrics.jsonl, config.json, sample grids)")
    p.add_argument("--config", help="a config.json written by an earlier run (flags given here override it)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--download", action="store_true", help="let torchvision download the data set (needs a network)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    for name, (typ, help_) in _FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=None, help=help_)
    return p


def config_from_args(args) -> TrainConfig:
    """The run's config: the --config file (if any), then the flags given; validated field by field."""
    if args.config is not None:
        check_path_text("--config", args.config)
    elif args.resume and args.out and (Path(args.out) / "config.json").is_file():
        args.config = str(Path(args.out) / "config.json")   # resume: the run's own config, the flags given on top
    cfg = TrainConfig.from_file(args.config).to_dict() if args.config else TrainConfig().to_dict()
    for name in _FLAGS:
        v = getattr(args, name)
        if v is not None:
            cfg[name] = v
    if args.download:
        cfg["download"] = True
    return TrainConfig.from_dict(cfg).validate()


def prepare(argv=None):
    """Parse and check everything a run needs before any work: (args, config, output folder).

    Raises ValueError (one line) on any bad flag, config key, device or output folder."""
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    return args, cfg, check_run(args, cfg)


def check_run(args, cfg):
    """The end of every training CLI's ``prepare``: the device, the output folder (created last, a probe file
    checks it is writable) and, with ``--resume``, the checkpoint's config against ``cfg`` -- refused now, not
    after the data set has loaded.  Returns the output folder."""
    resolve_device(cfg.device)
    out = check_out_dir(args.out)
    if args.resume:
        from .train import precheck_resume
        precheck_resume(cfg, out)
    return out


def _train(argv) -> int:
    args, cfg, out = prepare(argv)
    from .data import load_dataset
    from .train import TRAINERS, build_model

    train, _test, info = load_dataset(cfg.dataset, root=cfg.data_root, download=cfg.download)
    model, encoder = build_model(cfg, info.image_size, info.channels)
    from .distributed import is_main_process, make_trainer   # under torchrun: data-parallel (docs/scale.md)

    trainer = make_trainer(TRAINERS[cfg.method], model, encoder, cfg, out_dir=out)
    history = trainer.fit(train, resume=args.resume, progress=not args.quiet and is_main_process())
    last = history[-1] if history else {}
    if is_main_process():
        print(json.dumps({"out": str(out), "epochs": trainer.epoch, "steps": trainer.global_step, "last": last}))
    return 0


def train_main(argv=None) -> int:
    """``sims/train_lpc.py``: every error ends as one line on stderr (exit 2: bad input, 1: the run failed)."""
    return cli_boundary(_train, argv)
