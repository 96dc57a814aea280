"""Posterior comparison: samplers on the discrete-LPC model, the same test images and the same warm starts.

Each sampler row (discrete LPC's ``LangevinSampler``, the circuit under the chosen noise, or any circuit a
caller adds) runs its chains from z(0) ~ q(z|x) and is summarised by :func:`posterior_summary`: log p(x, z)
and reconstruction error over the second half of the run (treated as stationary) with standard errors
across chains, time to the typical set, the spread across chains from one shared start, and the
autocorrelation time / ESS of ``circuits.analysis.ess_summary`` -- reported only where that estimator says
it is reliable.  Time axis: the circuit's seconds; a discrete step counts gamma tau_z.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from neuro_lpc.config import atomic_write_text
from neuro_lpc.errors import DivergenceError


@dataclass
class PosteriorInputs:
    """What every sampler row shares: the model (discrete LPC), images, warm starts and seeds."""

    model: object
    x: torch.Tensor            # (B, ...) test images
    z0: torch.Tensor           # (B, d) warm starts z(0) ~ q(z|x)
    xs: torch.Tensor           # (S, ...) one image repeated (spread chains)
    zs0: torch.Tensor          # (S, d) its one shared start
    log_joint0: torch.Tensor   # (B,) log p(x, z(0))
    seed: int
    zp0: torch.Tensor | None = None  # (S, d) prior draws: the onset experiment's starts (stimulus onset, prior -> posterior)


@dataclass
class PosteriorRun:
    summary: dict
    trace: tuple | None = None      # (z_trace (R, B, d), x) for the trajectory figure
    log_joint: tuple | None = None  # (t (R,), log_joint (R, B), log_joint at the start (B,))
    onset: tuple | None = None      # (t (R,), z (R, S, d)): chains from the prior at stimulus onset (quenching)


def make_inputs(cfg, model, encoder, test_x, device, seed: int) -> PosteriorInputs:
    x = test_x[: cfg.posterior_chains].to(device)
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        mean, var = encoder(x)
        z0 = mean + var.sqrt() * torch.randn(mean.shape, generator=g, device=device)
    xs = x[:1].expand(cfg.spread_chains, *x.shape[1:]).contiguous()
    zs0 = z0[:1].expand(cfg.spread_chains, -1).contiguous()
    zp0 = model.prior_std * torch.randn(zs0.shape, generator=g, device=device)
    return PosteriorInputs(model, x, z0, xs, zs0, model.log_joint(x, z0).detach(), seed, zp0)


# ------------------------------------------------------------------------------------ preconditioner
def preconditioner_info(cfg) -> dict:
    """Which preconditioner produces the posterior rows, and the measured stationary bias of it.

    The bias is ``neuro_lpc.preconditioning.preconditioner_bias(beta, step_size, preconditioner)``: the stationary
    variance ratio (chain / exact posterior) that the preconditioned chain gives on linear-Gaussian posteriors
    started at exact draws (cached per preconditioner, beta and step size in ``cache_dir``).
    """
    beta = cfg.precondition or None
    info = {"name": cfg.preconditioner if beta else "none", "beta": beta, "step_size": cfg.step_size, "bias": None}
    if not beta:
        info["note"] = "no preconditioning: plain ULA (its only bias is the O(gamma) discretisation bias)"
        return info
    if cfg.preconditioner == "frozen":
        info["note"] = "G adapted during a warm-up, then held fixed: the chain leaves its ULA law invariant"
    else:
        info["note"] = "Algorithm 1: G adapted from the current score at every step (no correction term)"
    try:
        from neuro_lpc.preconditioning import preconditioner_bias
    except ImportError:
        info["bias_note"] = "not measured (neuro_lpc.preconditioning is not available)"
        return info
    cache = Path(cfg.cache_dir).expanduser() / f"preconditioner-bias-{cfg.preconditioner}-b{beta:g}-g{cfg.step_size:g}.json" \
        if cfg.cache_dir else None
    if cache is not None and cache.is_file():
        try:
            info["bias"] = json.loads(cache.read_text())
            return info
        except ValueError:
            pass  # a cache is disposable: measure again
    try:
        bias = preconditioner_bias(beta, cfg.step_size, preconditioner=cfg.preconditioner)
    except Exception as e:  # noqa: BLE001 - a failed side measurement is reported, not fatal
        info["bias_note"] = f"not measured ({type(e).__name__}: {e})"
        return info
    info["bias"] = json.loads(json.dumps(dict(bias), default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache, json.dumps(info["bias"]))
    return info


def sampler_for(cfg, steps: int | None = None):
    from neuro_lpc.langevin import LangevinSampler

    kw = dict(step_size=cfg.step_size, steps=steps or cfg.posterior_steps, precondition=cfg.precondition)
    if cfg.precondition and cfg.preconditioner != "adam":
        kw["preconditioner"] = cfg.preconditioner
    return LangevinSampler(**kw)


def circuit_config_for(cfg, noise, device, **overrides):
    """The circuit matched to the discrete chain: dt = gamma * tau_z (one EM step per Langevin step)."""
    from ..circuit import CircuitConfig

    kw = dict(dt=cfg.step_size * cfg.tau_z, tau_z=cfg.tau_z, tau_e=cfg.tau_e, temperature=None, noise=noise,
              precondition=cfg.precondition, seed=cfg.seed, device=str(device), **cfg.dynamics_fields())
    if cfg.precondition and cfg.preconditioner != "adam":
        kw["preconditioner"] = cfg.preconditioner
    kw.update(overrides)
    return CircuitConfig(**kw)


# ------------------------------------------------------------------------------------------ summary
def _ess(zs: torch.Tensor, dt_rec: float) -> dict:
    """Autocorrelation time and ESS of the stationary half zs (R, B, d), from ``circuits.analysis.ess_summary``.

    The autocorrelation is pooled over the B chains (``chain_axis=1``): one tau per latent unit.  The figures
    quoted are the median latent unit's, per chain (ESS / B): tau in seconds, ESS and ESS per unit time, each
    with its Madras-Sokal standard error; ``reliable`` only when every unit has >= 50 records per tau
    (``records_per_tau`` is the worst unit's).
    """
    from .. import analysis

    res = analysis.ess_summary(zs, dt_rec, chain_axis=1)
    tau = torch.as_tensor(res["tau"]).double().flatten()
    B = zs.shape[1]
    finite = torch.isfinite(tau)
    if not bool(finite.any()):
        return {"reliable": False, "reason": res.get("reason"), "records_per_tau": float("nan"), "pooled_chains": B}
    order = torch.argsort(torch.where(finite, tau, torch.full_like(tau, float("inf"))))
    i = int(order[(int(finite.sum()) - 1) // 2])          # the median unit among the finite ones
    pick = lambda k: float(torch.as_tensor(res[k]).double().flatten()[i])  # noqa: E731
    rpt = torch.as_tensor(res["records_per_tau"]).double().flatten()
    return {"tau_s": pick("tau") * dt_rec, "tau_s_se": pick("tau_se") * dt_rec,
            "ess": pick("ess") / B, "ess_se": pick("ess_se") / B,
            "ess_per_unit_time": pick("ess_per_unit_time") / B, "ess_per_unit_time_se": pick("ess_per_unit_time_se") / B,
            "records_per_tau": float(rpt[torch.isfinite(rpt)].min()) if bool(torch.isfinite(rpt).any()) else float("nan"),
            "reliable": bool(res["reliable"]), "reason": res.get("reason"), "units": int(tau.numel()),
            "pooled_chains": B, "records": int(zs.shape[0]), "statistic": "median latent unit, per chain"}


def _se(values: torch.Tensor) -> float:
    v = values.double().flatten()
    return float(v.std() / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def posterior_summary(z_trace, lj_trace, t, x, model, wall_s: float) -> dict:
    """Diagnostics of one sampler's chains; the second half of the records is treated as stationary.

    Means come with standard errors across chains (``*_se``).  ``ess`` is ``ess_summary``'s dict
    (ess, ess_se, tau, tau_se, records_per_tau, reliable, reason); ``ess_per_unit_time`` and
    ``autocorr_time_s`` (the median latent unit's, per chain; see ``_ess``) are NaN where it is unreliable.
    """
    from ..analysis import time_to_typical_set

    R = z_trace.shape[0]
    half = slice(R // 2, R)
    zs = z_trace[half].double().cpu()
    dt_rec = float(t[1] - t[0])
    ess = _ess(zs, dt_rec)
    with torch.no_grad():
        zz = z_trace[half].to(x.device)
        sq = []
        for r in range(zz.shape[0]):
            mu = model.likelihood.mean(model.decode(zz[r]))
            sq.append(((mu - x) ** 2).reshape(x.shape[0], -1).mean(1))
        recon = torch.stack(sq).mean(0).cpu()               # (B,) per chain
    ttt = time_to_typical_set(lj_trace.double().cpu(), torch.as_tensor(t).double().cpu())
    ttt = ttt[torch.isfinite(ttt)]
    lj_chain = lj_trace[half].double().mean(0).cpu()          # (B,) per-chain time average
    reliable = bool(ess.get("reliable"))
    nan = float("nan")
    shown = (lambda k: ess.get(k, nan)) if reliable else (lambda k: nan)  # noqa: E731 - no number where unreliable
    return {
        "log_joint_mean": float(lj_chain.mean()), "log_joint_mean_se": _se(lj_chain),
        "log_joint_std_within_chain": float(lj_trace[half].std(0).mean()),
        "recon_mse": float(recon.mean()), "recon_mse_se": _se(recon),
        "ess": ess,
        "ess_reliable": reliable,
        "autocorr_time_s": shown("tau_s"), "autocorr_time_s_se": shown("tau_s_se"),
        "ess_per_unit_time": shown("ess_per_unit_time"), "ess_per_unit_time_se": shown("ess_per_unit_time_se"),
        "ess_per_wall_second": ess["ess"] * zs.shape[1] / max(wall_s, 1e-9) if reliable else nan,
        "time_to_typical_set_s": float(ttt.median()) if len(ttt) else float("nan"),
        "n": int(z_trace.shape[1]),
        "chains": int(z_trace.shape[1]),
        "records_used": int(zs.shape[0]),
        "duration_s": float(t[-1]),
        "wall_s": wall_s,
    }


def _spread(z_trace) -> tuple[float, float]:
    """Mean std across chains over the last quarter, and its standard error (chi distribution, n chains)."""
    from ..analysis import across_chain_spread

    q = max(1, z_trace.shape[0] // 4)
    s = float(across_chain_spread(z_trace[-q:].cpu()).mean())
    n = z_trace.shape[1]
    return s, s / math.sqrt(2 * (n - 1))


# ------------------------------------------------------------------------------------------ samplers
def discrete_posterior(ctx, inp: PosteriorInputs, name: str = "discrete") -> PosteriorRun:
    """Discrete LPC's sampler (``LangevinSampler``, the run's preconditioner) on the discrete-LPC model."""
    from neuro_lpc.record import Trajectory

    cfg, dev = ctx.cfg, inp.x.device
    sampler = sampler_for(cfg)
    t0 = time.perf_counter()
    res = sampler.sample(inp.model, inp.x, inp.z0, record_every=cfg.record_every,
                         generator=torch.Generator(device=dev).manual_seed(inp.seed + 1))
    wall = time.perf_counter() - t0
    t = (res.t.double() * cfg.step_size * cfg.tau_z).cpu()
    traj = Trajectory(t=t, z=res.z_trace.cpu(), log_joint=res.log_joint_trace.cpu(),
                      attrs={"method": name, "step_size": cfg.step_size, "tau_z": cfg.tau_z})
    traj.to_hdf5(ctx.out / f"posterior_{ctx.slug(name)}.h5", attrs={"study": asdict(cfg), "method": name})
    summary = posterior_summary(traj.z, traj.log_joint, traj.t, inp.x, inp.model, wall)
    sres = sampler.sample(inp.model, inp.xs, inp.zs0, record_every=cfg.record_every,
                          generator=torch.Generator(device=dev).manual_seed(inp.seed + 2))
    summary["chain_spread"], summary["chain_spread_se"] = _spread(sres.z_trace)
    summary["spread_chains"] = int(inp.xs.shape[0])
    summary["sampler"] = f"LangevinSampler (γ = {cfg.step_size:g})"
    summary["preconditioner"] = ctx.preconditioner["name"]
    onset = None
    if cfg.onset_steps and inp.zp0 is not None:   # the onset experiment: the same image, chains from the prior
        ores = sampler_for(cfg, cfg.onset_steps).sample(inp.model, inp.xs, inp.zp0, record_every=1,
                                                        generator=torch.Generator(device=dev).manual_seed(inp.seed + 3))
        # the sampler records after each step: the start (t = 0, the prior draws) goes first
        t_on = torch.cat([ores.t.new_zeros(1), ores.t]).double() * cfg.step_size * cfg.tau_z
        onset = (t_on.cpu().numpy(), torch.cat([inp.zp0[None], ores.z_trace]).cpu().numpy())
    return PosteriorRun(summary, (traj.z, inp.x), (traj.t.numpy(), traj.log_joint.numpy(), inp.log_joint0.cpu().numpy()),
                        onset)


def device_posterior(ctx, inp: PosteriorInputs, name: str) -> PosteriorRun:
    """The circuit under the run's noise sampling the discrete-LPC model programmed onto its devices (the array is
    programmed from ``inp.model`` at construction, the noise model's deployment time), on the same test images from
    the same warm starts: posterior rows compare samplers on one model (issue 14).  A learning-mode row's own
    trained model is not sampled here: its posterior would be another model's, not comparable."""
    run = circuit_posterior(ctx, inp, name=name)
    run.summary["model"] = "discrete LPC's, programmed onto the circuit's devices"
    return run


def circuit_posterior(ctx, inp: PosteriorInputs, name: str = "circuit", noise=None, array=None,
                      **circuit_overrides) -> PosteriorRun:
    """The circuit (noise ``noise``, default the run's) sampling the discrete-LPC model from the same starts
    (``array``: the analog array its weights are read from; default: programmed from the model at construction).

    A DivergenceError is a result: the row's posterior is reported as diverged (step and unit named).
    """
    from ..circuit import Circuit

    cfg, dev = ctx.cfg, inp.x.device
    circuit = Circuit(inp.model, circuit_config_for(cfg, ctx.noise if noise is None else noise, dev, **circuit_overrides),
                      array=array)
    t0 = time.perf_counter()
    try:
        traj = circuit.simulate(inp.x, inp.z0, steps=cfg.posterior_steps, record_every=cfg.record_every,
                                generator=torch.Generator(device=dev).manual_seed(inp.seed + 1),
                                record_path=ctx.out / f"posterior_{ctx.slug(name)}.h5")
        wall = time.perf_counter() - t0
        summary = posterior_summary(traj.z, traj.log_joint, traj.t, inp.x, inp.model, wall)
        straj = circuit.simulate(inp.xs, inp.zs0, steps=cfg.posterior_steps, record_every=cfg.record_every,
                                 generator=torch.Generator(device=dev).manual_seed(inp.seed + 2))
        summary["chain_spread"], summary["chain_spread_se"] = _spread(straj.z)
        onset = None
        if cfg.onset_steps and inp.zp0 is not None:   # the onset experiment: the same image, chains from the prior
            otraj = circuit.simulate(inp.xs, inp.zp0, steps=cfg.onset_steps, record_every=1,
                                     generator=torch.Generator(device=dev).manual_seed(inp.seed + 3))
            # records follow each step: the start (t = 0, the prior draws) goes first
            onset = (torch.cat([otraj.t.new_zeros(1), otraj.t]).cpu().double().numpy(),
                     torch.cat([inp.zp0[None].to(otraj.z), otraj.z]).cpu().numpy())
    except DivergenceError as e:  # report the divergence (step and unit named) instead of failing the study
        return PosteriorRun({"diverged": str(e), "diverged_step": e.step, "wall_s": time.perf_counter() - t0,
                             "preconditioner": ctx.preconditioner["name"], "sampler": "circuit"})
    summary["spread_chains"] = int(inp.xs.shape[0])
    summary["sampler"] = f"circuit (dt = {circuit.config.dt:.3g} s)"
    summary["preconditioner"] = ctx.preconditioner["name"]
    return PosteriorRun(summary, (traj.z, inp.x),
                        (traj.t.cpu().numpy(), traj.log_joint.cpu().numpy(), inp.log_joint0.cpu().numpy()), onset)
