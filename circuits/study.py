"""The circuit-vs-discrete LPC study behind ``sims/run_circuit.py`` (the project's main job).

On one data set (the embedded animal-mnist by default):
  1. a model trained with discrete LPC (or loaded with --model), cached in the output folder;
  2. posterior comparison on that model and the same test images from the same warm starts: discrete
     LPC chains vs the circuit under the chosen noise; log p(x, z) over time, reconstruction error,
     time to the typical set, autocorrelation time and ESS per unit time, spread across chains;
  3. learning comparison: models trained with the circuit, with discrete LPC and as a VAE, on the same
     data with the same optimiser-step budget; generative samples from each;
  4. sample quality (Frechet distance, density, coverage) of each model's samples;
  5. report.json, report.md (its first lines are the table), PNG figures, HDF5 recordings.

Time axes: the circuit's time is physical (seconds); a discrete chain with step gamma is placed on the
same axis by t = step * gamma * tau_z (the adiabatic limit: one discrete step = one EM step of
dt = gamma tau_z), so "per unit time" figures compare like with like.
"""
from __future__ import annotations

import json
import math
import os
import time
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from neuro_lpc.config import TrainConfig, atomic_write_text, git_commit, package_versions, resolve_device
from neuro_lpc.errors import CheckpointError, DivergenceError

DEFAULT_NOISE = "analog"


@dataclass
class StudyConfig:
    """Settings of the study; CPU-sized defaults (the paper trains with T = 300 Langevin steps)."""

    noise: str = DEFAULT_NOISE                 # preset name; or noise_config (a JSON file) overrides it
    noise_config: str | None = None
    model: str | None = None                   # a trained checkpoint (discrete LPC) to use instead of training
    out: str | None = None
    dataset: str = "animal-mnist"
    data_root: str | None = None
    quick: bool = False
    seed: int = 0
    device: str = "auto"
    # training (same data and optimiser-step budget for all three methods)
    train_batches: int = 280                   # about two epochs of animal-mnist at batch 64
    batch_size: int = 64
    langevin_steps: int = 20                   # T per batch (paper: 300) -- named in the report
    step_size: float = 0.1                     # gamma with preconditioning beta = 0.25: the paper's CIFAR-10/CelebA setting
    precondition: float | None = 0.25          # (Appendix A.1). Without it early scores reach |s| ~ 1e5 and ULA diverges
                                               # unless gamma < 2 / lambda_max (docs/study.md)
    warm_start: str = "jeffreys"
    prior_init_batches: int = 20
    # circuit
    tau_z: float = 10e-3                       # value units, 10 ms (cortical range 10-20 ms)
    tau_e: float = 0.0                         # adiabatic error units by default: finite tau_e makes the z-eps loop of an
                                               # image model underdamped unless tau_e < tau_z / (4 lambda_max(P)); see docs/study.md
    # posterior comparison
    posterior_chains: int = 32
    posterior_steps: int = 400
    record_every: int = 2
    spread_chains: int = 16
    # sample quality
    n_samples: int = 1000
    feature: str = "auto"                      # auto | classifier | inception
    full_protocol: bool = False                # 50,000 samples with Inception features (paper)
    k: int = 5
    cache_dir: str | None = None
    quick_features: bool = False               # a 1-epoch feature classifier (set by --quick)

    def apply_quick(self) -> "StudyConfig":
        if self.quick:
            self.train_batches, self.langevin_steps, self.prior_init_batches = 30, 5, 4
            self.posterior_chains, self.posterior_steps, self.record_every = 8, 80, 2
            self.spread_chains, self.n_samples, self.quick_features = 6, 200, True
        if self.full_protocol:
            self.n_samples, self.feature = 50_000, "inception"
        return self


class StudyError(ValueError):
    """Bad input to the study, detected before any work."""


# ------------------------------------------------------------------------------------------ checks
def resolve_noise(cfg: StudyConfig):
    """The noise model (preset name or JSON file), validated before any work."""
    from . import noise as noise_mod

    if cfg.noise_config:
        p = Path(cfg.noise_config)
        if not p.is_file():
            raise StudyError(f"noise config file not found: {p}")
        return noise_mod.NoiseModel.from_file(p)
    if cfg.noise not in noise_mod.PRESETS:
        raise StudyError(f"unknown noise preset {cfg.noise!r}; choose one of {', '.join(noise_mod.PRESETS)} or --noise-config FILE")
    return cfg.noise


def check_inputs(cfg: StudyConfig) -> Path:
    """Every check that can fail on user input, before training or sampling anything."""
    resolve_noise(cfg)
    if cfg.feature not in ("auto", "classifier", "inception"):
        raise StudyError(f"unknown feature network {cfg.feature!r}; choose auto, classifier or inception")
    for name in ("train_batches", "langevin_steps", "posterior_chains", "posterior_steps", "n_samples", "record_every"):
        v = getattr(cfg, name)
        if not (isinstance(v, int) and v >= 1):
            raise StudyError(f"{name} must be a positive integer, got {v!r}")
    if cfg.posterior_steps // cfg.record_every < 8:
        raise StudyError("posterior_steps / record_every must give at least 8 records")
    if cfg.n_samples <= cfg.k:
        raise StudyError(f"n_samples must exceed k = {cfg.k}")
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


# ---------------------------------------------------------------------------------------- training
def _train_config(cfg: StudyConfig, method: str, n_train: int = 9000) -> TrainConfig:
    """``train_batches`` optimiser steps as whole epochs of equal length (same data order for every method)."""
    per_epoch = max(1, n_train // cfg.batch_size)
    epochs = math.ceil(cfg.train_batches / per_epoch)
    return TrainConfig(method=method, dataset=cfg.dataset, data_root=cfg.data_root, epochs=epochs, batch_size=cfg.batch_size,
                       langevin_steps=cfg.langevin_steps, step_size=cfg.step_size, precondition=cfg.precondition,
                       warm_start=cfg.warm_start, prior_init_batches=cfg.prior_init_batches,
                       max_batches_per_epoch=math.ceil(cfg.train_batches / epochs), seed=cfg.seed, device=cfg.device,
                       sample_grid=0)


def _cache_folder(root: Path, name: str, config) -> Path:
    """models/<name>-<hash of the training config>: a cached model is reused only for the same config."""
    import hashlib

    d = config.to_dict() if hasattr(config, "to_dict") else asdict(config)
    d = {k: v for k, v in d.items() if k not in ("device",)}
    h = hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return root / f"{name}-{h}"


def _fit_cached(trainer, train_set, folder: Path) -> tuple[list[dict], float]:
    """Train, or resume from the cached checkpoint in ``folder`` (a finished run returns at once)."""
    t0 = time.perf_counter()
    resume = (folder / "checkpoint.pt").is_file()
    trainer.out_dir = folder
    hist = trainer.fit(train_set, resume=resume, progress=True)
    wall = time.perf_counter() - t0
    metrics = folder / "metrics.jsonl"
    if metrics.is_file():  # the whole curve, including a cached run's
        hist = [json.loads(ln) for ln in metrics.read_text().splitlines() if ln.strip()]
    timing = folder / "train_wall_s.json"
    if resume and timing.is_file():  # a cached model: report the wall time of its training, not of the reload
        wall = json.loads(timing.read_text()).get("wall_s", wall)
    else:
        atomic_write_text(timing, json.dumps({"wall_s": wall}))
    return hist, wall


def circuit_config_for(cfg: StudyConfig, noise, device):
    """The circuit matched to the discrete chain: dt = gamma * tau_z (one EM step per Langevin step)."""
    from .circuit import CircuitConfig

    return CircuitConfig(dt=cfg.step_size * cfg.tau_z, tau_z=cfg.tau_z, tau_e=cfg.tau_e, temperature=None,
                         noise=noise, precondition=cfg.precondition, seed=cfg.seed, device=str(device))


# --------------------------------------------------------------------------------------- posterior
def posterior_summary(z_trace, lj_trace, t, x, model, wall_s: float) -> dict:
    """Diagnostics of one sampler's chains; the second half of the records is treated as stationary."""
    from .analysis import effective_sample_size, integrated_autocorr_time, time_to_typical_set

    R = z_trace.shape[0]
    half = slice(R // 2, R)
    zs = z_trace[half].double().cpu()
    dt_rec = float(t[1] - t[0])
    with warnings.catch_warnings():  # short CPU-sized chains: the report states that the ESS is a rough estimate
        warnings.simplefilter("ignore", RuntimeWarning)
        tau = integrated_autocorr_time(zs)                  # (B, d) in records
        ess = effective_sample_size(zs)                     # (B, d)
    duration = dt_rec * zs.shape[0]
    with torch.no_grad():
        zz = z_trace[half].to(x.device)
        sq = []
        for r in range(zz.shape[0]):
            mu = model.likelihood.mean(model.decode(zz[r]))
            sq.append(((mu - x) ** 2).reshape(x.shape[0], -1).mean(1))
        recon = torch.stack(sq).mean().item()
    ttt = time_to_typical_set(lj_trace.double().cpu(), torch.as_tensor(t).double().cpu())
    ttt = ttt[torch.isfinite(ttt)]
    return {
        "log_joint_mean": float(lj_trace[half].mean()),
        "log_joint_std_within_chain": float(lj_trace[half].std(0).mean()),
        "recon_mse": recon,
        "autocorr_time_s": float(tau.nanmedian()) * dt_rec,
        "ess_per_unit_time": float(ess.nanmedian()) / duration,
        "ess_per_wall_second": float(ess.nanmedian()) * zs.shape[1] / max(wall_s, 1e-9),
        "time_to_typical_set_s": float(ttt.median()) if len(ttt) else float("nan"),
        "chains": int(z_trace.shape[1]),
        "duration_s": float(t[-1]),
        "wall_s": wall_s,
    }


def run_posterior_comparison(cfg, model, encoder, test_x, noise, device, out: Path, gen_seed: int):
    """Discrete LPC and the circuit from the same warm starts on the same images."""
    from neuro_lpc.langevin import LangevinSampler
    from neuro_lpc.record import Trajectory

    from .analysis import across_chain_spread
    from .circuit import Circuit

    x = test_x[: cfg.posterior_chains].to(device)
    g = torch.Generator(device=device).manual_seed(gen_seed)
    with torch.no_grad():
        mean, var = encoder(x)
        z0 = mean + var.sqrt() * torch.randn(mean.shape, generator=g, device=device)
    steps, rec = cfg.posterior_steps, cfg.record_every
    sampler = LangevinSampler(step_size=cfg.step_size, steps=steps, precondition=cfg.precondition)
    circuit = Circuit(model, circuit_config_for(cfg, noise, device))
    lj0 = model.log_joint(x, z0).detach()

    t0 = time.perf_counter()
    res = sampler.sample(model, x, z0, record_every=rec, generator=torch.Generator(device=device).manual_seed(gen_seed + 1))
    wall_d = time.perf_counter() - t0
    t_d = (res.t.double() * cfg.step_size * cfg.tau_z).cpu()
    disc = Trajectory(t=t_d, z=res.z_trace.cpu(), log_joint=res.log_joint_trace.cpu(),
                      attrs={"method": "discrete", "step_size": cfg.step_size, "tau_z": cfg.tau_z})
    disc.to_hdf5(out / "posterior_discrete.h5", attrs={"study": asdict(cfg), "method": "discrete"})

    summary = {"discrete": posterior_summary(disc.z, disc.log_joint, disc.t, x, model, wall_d)}
    traces = {"discrete": (disc.z, x)}
    lj = {"discrete": (disc.t.numpy(), disc.log_joint.numpy(), lj0.cpu().numpy())}
    # spread across chains from one shared start on one image
    xs = x[:1].expand(cfg.spread_chains, *x.shape[1:]).contiguous()
    zs0 = z0[:1].expand(cfg.spread_chains, -1).contiguous()
    sres = sampler.sample(model, xs, zs0, record_every=rec, generator=torch.Generator(device=device).manual_seed(gen_seed + 2))
    q = max(1, sres.z_trace.shape[0] // 4)
    summary["discrete"]["chain_spread"] = float(across_chain_spread(sres.z_trace[-q:].cpu()).mean())

    t0 = time.perf_counter()
    try:
        traj = circuit.simulate(x, z0, steps=steps, record_every=rec,
                                generator=torch.Generator(device=device).manual_seed(gen_seed + 1),
                                record_path=out / "posterior_circuit.h5")
        wall_c = time.perf_counter() - t0
        summary["circuit"] = posterior_summary(traj.z, traj.log_joint, traj.t, x, model, wall_c)
        straj = circuit.simulate(xs, zs0, steps=steps, record_every=rec,
                                 generator=torch.Generator(device=device).manual_seed(gen_seed + 2))
        summary["circuit"]["chain_spread"] = float(across_chain_spread(straj.z[-q:].cpu()).mean())
        traces["circuit"] = (traj.z, x)
        lj["circuit"] = (traj.t.cpu().numpy(), traj.log_joint.cpu().numpy(), lj0.cpu().numpy())
    except DivergenceError as e:  # report the divergence (step and unit named) instead of failing the study
        summary["circuit"] = {"diverged": str(e), "diverged_step": e.step, "wall_s": time.perf_counter() - t0}
    return summary, traces, lj


# ----------------------------------------------------------------------------------------- samples
def choose_feature(cfg: StudyConfig, device) -> str:
    if cfg.feature != "auto":
        return cfg.feature
    return "inception" if device.type == "cuda" else "classifier"


def sample_quality(models: dict, cfg: StudyConfig, device, feature: str) -> tuple[dict, dict]:
    from neuro_lpc.metrics import evaluate_samples, make_feature_network, real_statistics

    if feature == "classifier":
        from neuro_lpc.metrics import SmallClassifierFeatures

        net = SmallClassifierFeatures.for_dataset(cfg.dataset, root=cfg.data_root, cache_dir=cfg.cache_dir, device=device,
                                                  epochs=1 if cfg.quick_features else 5, seed=cfg.seed)
    else:
        net = make_feature_network(feature, cfg.dataset, device=device, cache_dir=cfg.cache_dir, root=cfg.data_root)
    from neuro_lpc.data import load_dataset

    _, test, _ = load_dataset(cfg.dataset, cfg.data_root)
    n_real = min(cfg.n_samples, len(test))
    real = real_statistics(cfg.dataset, net, n_real, split="test", root=cfg.data_root, cache_dir=cfg.cache_dir)
    results, samples = {}, {}
    for name, model in models.items():
        g = torch.Generator(device=device).manual_seed(cfg.seed + 77)
        with torch.no_grad():
            imgs = torch.cat([model.sample(min(1000, cfg.n_samples - i), generator=g).cpu()
                              for i in range(0, cfg.n_samples, 1000)])
        samples[name] = imgs
        results[name] = evaluate_samples(imgs, real, feature=feature, k=cfg.k, network=net, device="cpu")
    return results, samples


# ------------------------------------------------------------------------------------------ report
def _fmt(v, nd=3):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}g}"
    return str(v)


def render_markdown(report: dict) -> str:
    m = report["methods"]
    dist_key = "fid" if report["feature"] == "inception" else "fd"
    lines = [
        f"| method | {dist_key.upper()} ↓ | density ↑ | coverage ↑ | log p(x,z) ↑ | recon MSE ↓ | ESS / unit time ↑ | chain spread | train wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("discrete", "circuit", "vae"):
        s, p = m[name]["samples"], m[name].get("posterior", {})
        lines.append(f"| {name} | {_fmt(s.get(dist_key))} | {_fmt(s.get('density'))} | {_fmt(s.get('coverage'))} | "
                     f"{_fmt(p.get('log_joint_mean'), 5)} | {_fmt(p.get('recon_mse'))} | {_fmt(p.get('ess_per_unit_time'))} | "
                     f"{_fmt(p.get('chain_spread'))} | {_fmt(m[name]['wall_s'], 3)} |")
    c = report["config"]
    for name in ("discrete", "circuit", "vae"):
        p = m[name].get("posterior", {})
        if "diverged" in p:
            lines.append(f"\n**{name} posterior run diverged:** {p['diverged'].splitlines()[0]}")
    for what, msg in report.get("failures", {}).items():
        lines.append(f"\n**{what.replace('_', ' ')} diverged:** {msg.splitlines()[0]}")
    n_s = next((m[k]["samples"].get("n") for k in m if "n" in m[k]["samples"]), None)
    n_r = next((m[k]["samples"].get("n_real") for k in m if "n_real" in m[k]["samples"]), None)
    lines += [
        "",
        f"# Circuit vs discrete LPC — noise `{report['noise_label']}`, data `{c['dataset']}`",
        "",
        f"- Sample quality: {report['feature_label']}, {n_s} samples per model against "
        f"{n_r} real test images, k = {c['k']} for density/coverage.",
        f"- Training: {c['train_batches']} optimiser steps of batch {c['batch_size']} for every method; LPC chains of "
        f"T = {c['langevin_steps']} Langevin steps per batch (the paper uses T = 300; CPU-sized here), step {c['step_size']}, "
        f"preconditioning {c['precondition']}, warm start `{c['warm_start']}`. The circuit presents each batch for the "
        f"same number of Euler–Maruyama steps of dt = γ·τ_z.",
        f"- Posterior: {c['posterior_chains']} test images, same warm starts for both samplers, {c['posterior_steps']} steps "
        f"(circuit dt = {c['step_size'] * c['tau_z']:.3g} s, tau_z = {c['tau_z']} s, tau_e = {c['tau_e']} s"
        f"{' = adiabatic error units' if not c['tau_e'] else ''}; a noise preset's time-constant model may override them); the second half "
        f"of each run is treated as stationary. Time axis of the discrete chain: step · γ · τ_z. "
        f"Chain spread: std across {c['spread_chains']} chains from one shared start (0 for a noise-free circuit).",
        f"- Posterior metrics of the `vae` row are not computed (it has no sampler); the `circuit` row's posterior "
        f"metrics are those of the circuit sampling the discrete-LPC-trained model.",
        "",
        "## Figures",
        "- `samples.png` — samples of each model",
        "- `trajectories.png` — latent trajectories on their first two principal components over log p(x, z) (paper Fig. 1/A.2)",
        "- `delta_log_joint.png` — Δ log p(x, z) during sampling (paper Fig. 3)",
        "- `log_joint.png` — log p(x, z) over time",
        "- `training.png` — training loss of the three methods",
        "",
        "## Recordings",
        "- `posterior_discrete.h5`, `posterior_circuit.h5` — readable with `neuro_lpc.record.Trajectory.from_hdf5`",
        "",
        f"Wall time of the whole study: {report['wall_s']:.0f} s on {report['device']}.",
    ]
    return "\n".join(lines) + "\n"


def run_study(cfg: StudyConfig, log=print) -> dict:
    """Run the whole study; returns the report dict (also written to cfg.out)."""
    cfg.apply_quick()
    if cfg.out is None:
        cfg.out = str(Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{Path(cfg.noise_config).stem if cfg.noise_config else cfg.noise}")
    out = check_inputs(cfg)
    noise = resolve_noise(cfg)
    for stale in ("report.json", "report.md", "FAILED.txt"):
        (out / stale).unlink(missing_ok=True)
    try:
        report = _run(cfg, out, noise, log)
    except BaseException as e:
        atomic_write_text(out / "FAILED.txt", f"the study did not finish: {type(e).__name__}: {e}\n\n{traceback.format_exc()}")
        raise
    return report


def _run(cfg: StudyConfig, out: Path, noise, log) -> dict:
    from neuro_lpc.data import dataset_tensor, load_dataset
    from neuro_lpc.train import LPCTrainer, VAETrainer, build_model, load_trained

    from . import plots
    from .learn import CircuitTrainer, CircuitTrainConfig

    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    train_set, test_set, info = load_dataset(cfg.dataset, cfg.data_root)
    models_dir = out / "models"
    histories, walls, trained, failures = {}, {}, {}, {}

    # 1. discrete LPC (loaded or trained) -----------------------------------------------------
    if cfg.model:
        log(f"[1/5] loading the model {cfg.model}")
        model, encoder, _, _ = load_trained(cfg.model, device)
        histories["discrete"], walls["discrete"] = [], float("nan")
    else:
        log(f"[1/5] training with discrete LPC ({cfg.train_batches} batches, T = {cfg.langevin_steps})")
        tc = _train_config(cfg, "lpc", info.n_train)
        model, encoder = build_model(tc, info.image_size, info.channels)
        tr = LPCTrainer(model, encoder, tc)
        histories["discrete"], walls["discrete"] = _fit_cached(tr, train_set, _cache_folder(models_dir, "discrete", tc))
    trained["discrete"] = (model, encoder)

    # 2. circuit-trained and VAE ----------------------------------------------------------------
    log(f"[2/5] training with the circuit (noise {noise if isinstance(noise, str) else 'from file'})")
    ctc = CircuitTrainConfig(**{**_train_config(cfg, "lpc", info.n_train).to_dict(), "method": "circuit"},
                             dt=cfg.step_size * cfg.tau_z, tau_z=cfg.tau_z, tau_e=cfg.tau_e,
                             noise=noise if isinstance(noise, str) else noise.to_dict(),
                             presentation_steps=cfg.langevin_steps)
    cm, ce = build_model(_train_config(cfg, "lpc", info.n_train), info.image_size, info.channels)
    ctr = CircuitTrainer(cm, ce, ctc)
    try:
        histories["circuit"], walls["circuit"] = _fit_cached(ctr, train_set, _cache_folder(models_dir, "circuit", ctc))
        trained["circuit"] = (cm, ce)
    except DivergenceError as e:  # a finding, not a crash: report it and go on with the other methods
        failures["circuit_training"] = str(e)
        log(f"      circuit training diverged: {str(e).splitlines()[0]}")
        histories["circuit"], walls["circuit"] = [], float("nan")
    log("[2/5] training the VAE baseline")
    vc = _train_config(cfg, "vae", info.n_train)
    vm, ve = build_model(vc, info.image_size, info.channels)
    histories["vae"], walls["vae"] = _fit_cached(VAETrainer(vm, ve, vc), train_set, _cache_folder(models_dir, "vae", vc))
    trained["vae"] = (vm, ve)
    for m, e in trained.values():
        m.eval(), e.eval()

    # 3. posterior comparison -------------------------------------------------------------------
    log(f"[3/5] posterior comparison: {cfg.posterior_chains} chains x {cfg.posterior_steps} steps")
    test_x, _ = dataset_tensor(test_set, cfg.posterior_chains)
    post, traces, lj = run_posterior_comparison(cfg, model, encoder, test_x, noise, device, out, cfg.seed + 1000)

    # 4. sample quality -------------------------------------------------------------------------
    feature = choose_feature(cfg, device)
    log(f"[4/5] sample quality with {feature} features, {cfg.n_samples} samples per model")
    quality, samples = sample_quality({k: v[0] for k, v in trained.items()}, cfg, device, feature)
    label = next(iter(quality.values()))["label"]

    # 5. figures and report -----------------------------------------------------------------------
    log("[5/5] figures and report")
    plots.plot_sample_grids(samples, out / "samples.png")
    plots.plot_trajectories(traces, lambda xx, zz: model.log_joint(xx, zz), out / "trajectories.png")
    plots.plot_delta_log_joint(lj, out / "delta_log_joint.png")
    plots.plot_log_joint({k: (v[0], v[1]) for k, v in lj.items()}, out / "log_joint.png")
    plots.plot_training(histories, out / "training.png")

    methods = {}
    for name in ("discrete", "circuit", "vae"):
        methods[name] = {"samples": quality.get(name, {"diverged": failures.get("circuit_training")}), "wall_s": walls[name],
                         "final_train_loss_per_dim": histories[name][-1]["loss_per_dim"] if histories[name] else None}
        if name in post:
            methods[name]["posterior"] = post[name]
    feature_label = label
    report = {
        "methods": methods, "config": asdict(cfg), "feature": feature, "feature_label": feature_label, "failures": failures,
        "noise_label": cfg.noise_config or cfg.noise,
        "noise": noise if isinstance(noise, str) else noise.to_dict(),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "versions": package_versions(), "git_commit": git_commit(), "wall_s": time.perf_counter() - t_start,
        "figures": ["samples.png", "trajectories.png", "delta_log_joint.png", "log_joint.png", "training.png"],
        "recordings": ["posterior_discrete.h5", "posterior_circuit.h5"],
    }
    atomic_write_text(out / "report.md", render_markdown(report))
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, default=_json_default))  # last: marks success
    return report


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    raise TypeError(type(o).__name__)


# --------------------------------------------------------------------------------------------- CLI
def build_parser():
    import argparse

    p = argparse.ArgumentParser(
        description="Circuit vs discrete Langevin predictive coding on the same data: posterior and learning comparison, "
                    "sample quality (FD/FID, density, coverage), report and figures.")
    p.add_argument("--noise", default=DEFAULT_NOISE, help="noise preset: none | ideal | thermal | analog | cortical")
    p.add_argument("--noise-config", help="a JSON noise-model file (overrides --noise)")
    p.add_argument("--model", help="a trained discrete-LPC checkpoint to use instead of training one")
    p.add_argument("--out", help="output folder (default runs/<time>-<noise>)")
    p.add_argument("--dataset", default="animal-mnist")
    p.add_argument("--data-root")
    p.add_argument("--quick", action="store_true", help="a <= 2-minute version (for tests and a first look)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--feature", default="auto", help="auto (Inception on GPU, small classifier on CPU) | classifier | inception")
    p.add_argument("--full-protocol", action="store_true", help="the paper's FID protocol: 50,000 samples, Inception features")
    p.add_argument("--n-samples", type=int)
    p.add_argument("--train-batches", type=int)
    p.add_argument("--langevin-steps", type=int)
    p.add_argument("--posterior-steps", type=int)
    p.add_argument("--tau-z", type=float, help="value-unit time constant in s (default 0.01)")
    p.add_argument("--tau-e", type=float, help="error-unit time constant in s (default 0: adiabatic; see docs/study.md)")
    p.add_argument("--cache-dir", help="cache for the feature network and real-set statistics (default: <out>/../.cache)")
    return p


def main(argv=None) -> int:
    import sys

    args = build_parser().parse_args(argv)
    cfg = StudyConfig(noise=args.noise, noise_config=args.noise_config, model=args.model, out=args.out, dataset=args.dataset,
                      data_root=args.data_root, quick=args.quick, seed=args.seed, device=args.device, feature=args.feature,
                      full_protocol=args.full_protocol, cache_dir=args.cache_dir)
    cfg.apply_quick()
    for flag, name in (("tau_z", "tau_z"), ("tau_e", "tau_e"), ("n_samples", "n_samples"), ("train_batches", "train_batches"), ("langevin_steps", "langevin_steps"),
                       ("posterior_steps", "posterior_steps")):
        if getattr(args, flag) is not None:
            setattr(cfg, name, getattr(args, flag))
    cfg.quick = False  # already applied; flags above override the quick sizes
    if cfg.out is None:
        cfg.out = str(Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{Path(cfg.noise_config).stem if cfg.noise_config else cfg.noise}")
    if cfg.cache_dir is None:
        cfg.cache_dir = str(Path(cfg.out).resolve().parent / ".cache")
    try:
        from neuro_lpc.config import resolve_device as _rd

        _rd(cfg.device)
        report = run_study(cfg, log=lambda s: print(s, flush=True))
    except (StudyError, FileNotFoundError, PermissionError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DivergenceError as e:
        print(f"error: the run diverged: {e}", file=sys.stderr)
        return 1
    print()
    print((Path(cfg.out) / "report.md").read_text().split("\n\n")[0])
    print(f"\nreport: {Path(cfg.out) / 'report.md'} ({report['wall_s']:.0f} s)")
    return 0
