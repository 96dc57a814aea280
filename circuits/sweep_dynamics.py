"""The ``dynamics`` sweep of ``sims/sweep.py`` (issue 16 parts 2 and 4; docs/dynamics.md "Sweep").

Three sampler families with one stationary law (neuro_lpc.dynamics): reversible overdamped Langevin, the
non-reversible drift (G + J) s with J = scale * J_opt (Lelievre, Nier & Pavliotis 2013; ``skew_scale``) and
underdamped (kinetic) Langevin integrated by BAOAB (Leimkuhler & Matthews 2013) at friction gamma_f (given as a
fraction of critical damping of the slowest mode, gamma_c = 2 sqrt(lambda_min M)).  For each family and strength:

(a) speed against dissipation, at **equal gradient evaluations** (every family costs one score per step) and each
    family at ``STABILITY_FRACTION`` of **its own** stability bound:
        overdamped     h lambda_max < 2                      (Euler, I - hP)
        nonreversible  |1 - h mu| < 1, mu in eig((I + J) P)  <=> h < min_mu 2 Re(mu) / |mu|^2
        underdamped    h sqrt(lambda_max / M) < 2            (BAOAB)
    * linear-Gaussian case (P with eigenvalues geomspace(1, kappa, d) in a random basis): all closed form --
      slowest-mode integrated autocorrelation time (IAT) of the exact recursion (neuro_lpc.theory.dynamics_recursion,
      circuits.diagnostics.ou.ar1_integrated_autocorr_time), ESS per gradient evaluation 1 / IAT, relaxation
      1 / (1 - rho(F)), and the entropy production rate of the family's SDE (:func:`entropy_production`);
    * the trained decoder's posterior: measured on chains (ESS of the projection on the slowest direction, the
      smallest-precision eigenvector of the Hessian at each chain's mean), with the Laplace (Hessian) prediction
      beside it, and the time-reversal asymmetry of the z-chains (circuits.diagnostics.flux).
(b) learning: ``LPCTrainer`` with each family (no preconditioning, the step set from the trained posterior's
    curvature) at the study's budget, seeds included, scored by the small-classifier FD of its samples.

Entropy production -- the definition used.  For dX = A X dt + D^(1/2) dW (D the noise covariance rate of
``dynamics_sde``; diffusion matrix Dc = D / 2) with stationary covariance Sigma and coordinate parities
E = diag(eps) under time reversal (eps = +1 for z, -1 for the momenta v: Risken 1989 sec. 6.1; Spinney & Ford
2012, Phys. Rev. E 85, 051113), the irreversible drift is A_irr = (A + E A E) / 2 and

    e_p = E[w^T Dc^+ w],   w = (A_irr + Dc Sigma^-1) X      =>   e_p = tr(W^T Dc^+ W Sigma),  W = A_irr + Dc Sigma^-1

(infinite when W leaves the range of Dc).  With all coordinates even (E = I) this is
circuits.diagnostics.flux.linear_flux_theory.  It gives 0 for overdamped, tr(J^T G^-1 J P) / T for the
non-reversible drift, and 0 for underdamped Langevin with v odd (its drift splits into the Hamiltonian flow,
reversible under v -> -v, and the friction, which balances the noise) -- whereas treating v as even gives
infinity (z has no noise of its own).  The sweep's ``entropy_production_rate`` is the v-odd value; the all-even
value is in ``entropy_production_all_even``.  On the decoder only z is recorded: the pair time-reversal KL of
z-chains is a lower bound of e_p (a projection), and it is 0 for underdamped too (marginalising the momentum-flip
symmetric joint law of (z, v) pairs gives a symmetric law of z pairs).
"""
from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import numpy as np
import torch

from neuro_lpc.errors import DivergenceError

STABILITY_FRACTION = 0.8      # each family at 0.8 x its own stability bound (0.9 in docs/dynamics.md's linear table)
LINEAR_KAPPA = 1000.0
LINEAR_DIM = 10
MASS = 1.0
SCALES = (0.05, 0.1, 0.2)           # skew_scale of J = scale * J_opt
FRICTIONS = (0.5, 1.0, 1.5)         # gamma_f / (2 sqrt(lambda_min M)): under-, critically and over-damped slowest mode
QUICK_SCALES, QUICK_FRICTIONS = (0.1,), (1.0,)
BURN_IN_FRACTION = 0.5


# ----------------------------------------------------------------------------------------- settings ----

def family_settings(quick: bool) -> list[dict]:
    """The sweep's rows: the reversible baseline first, then each family at each strength."""
    rows = [dict(family="overdamped", label="overdamped", skew_scale=0.0, friction_ratio=math.nan)]
    for s in QUICK_SCALES if quick else SCALES:
        rows.append(dict(family="nonreversible", label=f"nonreversible {s:g} J_opt", skew_scale=s,
                         friction_ratio=math.nan))
    for f in QUICK_FRICTIONS if quick else FRICTIONS:
        rows.append(dict(family="underdamped", label=f"underdamped {f:g} gamma_c", skew_scale=0.0, friction_ratio=f))
    return rows


def stable_step(family: str, P, J=None, mass: float = MASS) -> float:
    """The family's stability bound on the step h for the Gaussian with precision P (module docstring)."""
    P = np.asarray(P, dtype=np.float64)
    lam = np.linalg.eigvalsh(0.5 * (P + P.T))
    if family == "overdamped":
        return 2.0 / lam[-1]
    if family == "underdamped":
        return 2.0 * math.sqrt(mass / lam[-1])
    if family == "nonreversible":
        Jm = np.zeros_like(P) if J is None else np.asarray(J, dtype=np.float64)
        mu = np.linalg.eigvals((np.eye(P.shape[0]) + Jm) @ P)
        return float(np.min(2 * mu.real / np.abs(mu) ** 2))
    raise ValueError(f"family must be one of overdamped, nonreversible, underdamped, got {family!r}")


def entropy_production(A, D, parity=None) -> float:
    """Stationary entropy production rate (nats per unit time) of dX = A X dt + D^(1/2) dW with coordinate
    parities ``parity`` (+1 even, -1 odd; None: all even), module docstring: tr(W^T Dc^+ W Sigma)."""
    import scipy.linalg

    A, D = np.asarray(A, dtype=np.float64), np.asarray(D, dtype=np.float64)
    n = A.shape[0]
    E = np.diag(np.ones(n) if parity is None else np.asarray(parity, dtype=np.float64))
    sigma = scipy.linalg.solve_continuous_lyapunov(A, -D)
    sigma = 0.5 * (sigma + sigma.T)
    Dc = D / 2
    W = 0.5 * (A + E @ A @ E) + Dc @ np.linalg.inv(sigma)
    Dp = np.linalg.pinv(Dc, rcond=1e-12, hermitian=True)
    if np.linalg.norm(W - Dc @ Dp @ W) > 1e-9 * max(np.linalg.norm(W), 1e-300):
        return math.inf
    return max(0.0, float(np.trace(W.T @ Dp @ W @ sigma)))


# ------------------------------------------------------------------------------------ linear case ----

def linear_precision(kappa: float = LINEAR_KAPPA, dim: int = LINEAR_DIM, seed: int = 0) -> np.ndarray:
    """P = U diag(geomspace(1, kappa, dim)) U^T, U a random orthogonal basis (numpy seed)."""
    U, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return (U * np.geomspace(1.0, kappa, dim)) @ U.T


def _family_kw(row: dict, P: np.ndarray, lam_min: float) -> dict:
    """theory keyword arguments (J, friction, mass) of a setting on precision P."""
    from neuro_lpc.dynamics import optimal_skew

    if row["family"] == "nonreversible":
        return dict(J=row["skew_scale"] * optimal_skew(torch.as_tensor(P, dtype=torch.float64)).numpy())
    if row["family"] == "underdamped":
        return dict(friction=row["friction_ratio"] * 2 * math.sqrt(lam_min * MASS), mass=MASS)
    return {}


def linear_row(row: dict, P, fraction: float = STABILITY_FRACTION) -> dict:
    """Closed-form figures of one setting on the Gaussian N(0, P^-1) (module docstring).  Circuit form: the SDE
    (continuous time), its slowest-mode IAT ``circuit_iat`` in units of its fastest time constant 1 / max|eig(A)|
    (circuits.diagnostics.ou.ou_integrated_autocorr_time), so that circuits are compared at equal fastest
    time scale (issue 16: a speed-up must not come from faster units)."""
    from neuro_lpc.theory import dynamics_decay_rate, dynamics_recursion, dynamics_sde

    from .diagnostics.flux import linear_flux_theory, pair_reversal_kl
    from .diagnostics.ou import ar1_integrated_autocorr_time, ar1_stationary_cov, ou_integrated_autocorr_time

    P = np.asarray(P, dtype=np.float64)
    lam, U = np.linalg.eigh(P)
    d, fam = P.shape[0], row["family"]
    kw = _family_kw(row, P, lam[0])
    h = fraction * stable_step(fam, P, kw.get("J"))
    F, Q = dynamics_recursion(fam, P, h, **kw)
    u = np.concatenate([U[:, 0], np.zeros(F.shape[0] - d)])
    iat = float(ar1_integrated_autocorr_time(F, Q, u[None])[0])
    C = ar1_stationary_cov(F, Q)
    A, D = dynamics_sde(fam, P, **kw)
    parity = np.r_[np.ones(d), -np.ones(A.shape[0] - d)]
    ep = entropy_production(A, D, parity)
    ep_even = linear_flux_theory(A, _sqrt_psd(D)).entropy_production
    zcov = np.linalg.eigvalsh(_sqrt_psd(P) @ C[:d, :d] @ _sqrt_psd(P)) - 1
    r_max = float(np.max(np.abs(np.linalg.eigvals(A))))        # circuit form: the fastest rate, held equal
    iat_c = float(ou_integrated_autocorr_time(A, _sqrt_psd(D), u[None])[0]) * r_max
    return dict(row, case=f"linear kappa={lam[-1] / lam[0]:g}", step=h, friction=kw.get("friction", math.nan),
                h_bound_ratio=fraction, iat_slowest=iat, ess_per_grad=1 / iat,
                relaxation=1 / (1 - float(np.max(np.abs(np.linalg.eigvals(F))))),
                decay_rate=dynamics_decay_rate(fam, P, **kw), entropy_production_rate=ep,
                entropy_production_all_even=ep_even, entropy_production_per_grad=ep * h,
                z_pair_kl_per_step=pair_reversal_kl(C[:d, :d], (F @ C)[:d, :d]),
                zcov_max_rel_error=float(np.max(np.abs(zcov))), ess_per_time=1 / (iat * h),
                circuit_fastest_rate=r_max, circuit_iat=iat_c, circuit_ess_per_time=1 / iat_c)


def _sqrt_psd(M) -> np.ndarray:
    lam, U = np.linalg.eigh(0.5 * (M + M.T))
    return (U * np.sqrt(np.clip(lam, 0, None))) @ U.T


def add_speedups(rows: list[dict]) -> list[dict]:
    """Speed-ups over the overdamped row: ``speedup`` (discrete, slowest-mode IAT at equal gradient evaluations),
    ``speedup_relaxation`` (1 / (1 - rho(F))) and ``circuit_speedup`` (continuous time, slowest-mode IAT at equal
    fastest rate max |eig(A)| of the linear drift: equal fastest time constant)."""
    base = next(r for r in rows if r["family"] == "overdamped")
    for r in rows:
        for key, out in (("iat_slowest", "speedup"), ("relaxation", "speedup_relaxation"),
                         ("circuit_iat", "circuit_speedup")):
            r[out] = base[key] / r[key]
    return rows


def linear_rows(quick: bool, kappa: float = LINEAR_KAPPA, dim: int = LINEAR_DIM, seed: int = 0) -> list[dict]:
    P = linear_precision(kappa, dim, seed)
    return add_speedups([linear_row(s, P) for s in family_settings(quick)])


# ------------------------------------------------------------------------------------ the decoder ----

def posterior_precisions(model, x: torch.Tensor, z: torch.Tensor) -> np.ndarray:
    """P_b = -Hess_z log p(x_b, z_b) per item (B, d, d), float64, symmetrised (d Hessian-vector products)."""
    z = z.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (s,) = torch.autograd.grad(model.log_joint(x, z).sum(), z, create_graph=True)
        rows = [torch.autograd.grad(s[:, i].sum(), z, retain_graph=True)[0] for i in range(z.shape[1])]
    P = -torch.stack(rows, 1).detach().double().cpu().numpy()
    return 0.5 * (P + np.swapaxes(P, 1, 2))


def _floor_spd(P: np.ndarray) -> np.ndarray:
    lam, U = np.linalg.eigh(P)
    lam = np.clip(lam, 1e-6 * lam[..., -1:], None)
    return (U * lam[..., None, :]) @ np.swapaxes(U, -1, -2)


def _sampler(row: dict, h: float, steps: int, J, friction: float):
    from neuro_lpc.langevin import LangevinSampler

    fam = row["family"]
    kw = dict(skew=torch.as_tensor(J, dtype=torch.float32)) if fam == "nonreversible" else {}
    if fam == "underdamped":
        kw = dict(friction=friction, mass=MASS)
    return LangevinSampler(step_size=h, steps=steps, dynamics=fam, **kw)


def decoder_prepare(model, x, z0, steps: int, seed: int) -> dict:
    """Burn in an overdamped chain (half the step bound at z0), then the Hessians at each chain's mean: the
    precisions P_b (floored SPD), slowest directions u_b, and the start z of every family's chain."""
    from neuro_lpc.langevin import LangevinSampler

    P0 = _floor_spd(posterior_precisions(model, x, z0))
    h0 = 0.5 * 2 / float(np.linalg.eigvalsh(P0)[:, -1].max())
    gen = torch.Generator(device=z0.device).manual_seed(seed + 11)
    res = LangevinSampler(step_size=h0, steps=steps, dynamics="overdamped").sample(
        model, x, z0, record_every=max(1, steps // 200), generator=gen)
    mean = res.z_trace[res.z_trace.shape[0] // 2:].mean(0)
    P = _floor_spd(posterior_precisions(model, x, mean))
    lam, U = np.linalg.eigh(P)
    return dict(P=P, u=U[:, :, 0], lam_min=lam[:, 0], lam_max=lam[:, -1], z_start=res.z, burn_in_step=h0)


def _laplace(fam: str, prep: dict, h: float, kw: dict) -> tuple[float, float, float]:
    """Medians over chains, on each chain's Laplace approximation N(mean_b, P_b^-1): the exact slowest-direction
    IAT of the family's recursion at step h, the entropy production rate of its SDE (v odd), and the circuit
    form's slowest-direction IAT in units of its fastest time constant (as ``linear_row``)."""
    from neuro_lpc.theory import dynamics_recursion, dynamics_sde

    from .diagnostics.ou import ar1_integrated_autocorr_time, ou_integrated_autocorr_time

    iat, ep, iat_c = [], [], []
    for P, u in zip(prep["P"], prep["u"]):
        A, D = dynamics_sde(fam, P, **kw)
        ep.append(entropy_production(A, D, np.r_[np.ones(len(u)), -np.ones(A.shape[0] - len(u))]))
        uu = np.r_[u, np.zeros(A.shape[0] - len(u))][None]
        iat_c.append(float(ou_integrated_autocorr_time(A, _sqrt_psd(D), uu)[0]) * np.abs(np.linalg.eigvals(A)).max())
        try:
            F, Q = dynamics_recursion(fam, P, h, **kw)
            iat.append(float(ar1_integrated_autocorr_time(F, Q, np.r_[u, np.zeros(F.shape[0] - len(u))][None])[0]))
        except ValueError:           # unstable for this chain's Hessian
            iat.append(math.inf)
    return float(np.median(iat)), float(np.median(ep)), float(np.median(iat_c))


def _chain_figures(z_trace: torch.Tensor, u: np.ndarray, every: int, h: float) -> dict:
    """Measured ESS of the slowest-direction projection and of the worst coordinate, and the z time-reversal
    asymmetry, from records z (R, B, d) every ``every`` steps of size h."""
    from .diagnostics.flux import time_reversal_asymmetry
    from .diagnostics.mcmc import ess_summary

    z = z_trace.double().cpu().numpy()
    proj = np.einsum("rbd,bd->rb", z - z.mean(0), u)
    slow = ess_summary(proj, dt_record=every * h, chain_axis=1)
    coords = ess_summary(z, dt_record=every * h, chain_axis=1)
    tra = time_reversal_asymmetry(z, dt_record=every * h)
    iat = float(slow["tau"]) * every
    return dict(iat_slowest=iat, ess_per_grad=1 / iat, ess_per_time=1 / (iat * h), reliable=bool(slow["reliable"]),
                iat_worst_coord=float(np.max(coords["tau"])) * every, z_pair_kl_per_record=tra.pair_kl_per_record,
                z_rotation_rate=tra.rotation_rate, z_circulation_max_z=tra.max_abs_z)


def decoder_row(row: dict, model, x, prep: dict, steps: int, every: int, seed: int,
                fraction: float = STABILITY_FRACTION) -> dict:
    """One setting's chain on the decoder's posterior from the burnt-in start (module docstring)."""
    fam, P = row["family"], prep["P"]
    kw = _family_kw(row, P.mean(0), float(np.median(prep["lam_min"])))
    h = fraction * min(stable_step(fam, Pb, kw.get("J")) for Pb in P)
    sampler = _sampler(row, h, steps, kw.get("J"), kw.get("friction", 1.0))
    gen = torch.Generator(device=x.device).manual_seed(seed + 13)
    t0 = time.perf_counter()
    iat_lap, ep_lap, iat_c = _laplace(fam, prep, h, kw)
    out = dict(row, case="decoder", step=h, friction=kw.get("friction", math.nan), h_bound_ratio=fraction,
               iat_slowest_laplace=iat_lap, entropy_production_laplace=ep_lap, circuit_iat_laplace=iat_c)
    if fam == "nonreversible":
        out["skew_norm"] = float(np.linalg.norm(kw["J"], 2))
    try:
        res = sampler.sample(model, x, prep["z_start"], record_every=every, generator=gen)
        out.update(_chain_figures(res.z_trace, prep["u"], every, h), diverged=False)
    except DivergenceError as e:
        out.update(diverged=True, error=str(e).splitlines()[0])
    out["wall_s"] = time.perf_counter() - t0
    return out


def decoder_rows(model, x, z0, cfg, log=print) -> list[dict]:
    prep = decoder_prepare(model, x, z0, max(200, cfg.dyn_steps // 4), cfg.seed)
    log(f"[dynamics] decoder: lambda_max {prep['lam_max'].max():.4g}, median lambda_min "
        f"{np.median(prep['lam_min']):.4g}, median condition {np.median(prep['lam_max'] / prep['lam_min']):.4g}")
    rows = []
    for s in family_settings(cfg.quick):
        log(f"[dynamics] decoder {s['label']}")
        rows.append(decoder_row(s, model, x, prep, cfg.dyn_steps, cfg.record_every, cfg.seed))
    for r in rows:
        r.update(lambda_max=float(prep["lam_max"].max()), lambda_min_median=float(np.median(prep["lam_min"])))
    base = rows[0]
    for r in rows:
        ok = not r.get("diverged") and not base.get("diverged")
        r["speedup"] = base["iat_slowest"] / r["iat_slowest"] if ok else math.nan
        r["speedup_laplace"] = base["iat_slowest_laplace"] / r["iat_slowest_laplace"]
        r["circuit_speedup_laplace"] = base["circuit_iat_laplace"] / r["circuit_iat_laplace"]
    return rows


# ------------------------------------------------------------------------------------------ learning ----

def learning_settings(decoder: list[dict]) -> list[dict]:
    """One training per family, at the decoder sweep's step of its best (stable, fastest) setting; the
    non-reversible family trains with ``skew="random"`` of the same spectral norm as that setting's J (the
    "optimal" skew recomputes a d x d Hessian from every batch's warm start: d extra Hessian-vector products per
    batch, which would break the equal-gradient-evaluation budget)."""
    out = []
    for fam in ("overdamped", "nonreversible", "underdamped"):
        ok = [r for r in decoder if r["family"] == fam and not r.get("diverged")]
        if not ok:
            continue
        best = max(ok, key=lambda r: r["speedup_laplace"] if math.isfinite(r["speedup_laplace"]) else -1)
        kw = dict(dynamics=fam, step_size=best["step"], precondition=None)
        if fam == "nonreversible":
            kw.update(skew="random", skew_scale=best["skew_norm"])
        elif fam == "underdamped":
            kw.update(friction=best["friction"], mass=MASS)
        label = best["label"] + (f" -> random J, norm {best['skew_norm']:.3g}" if fam == "nonreversible" else "")
        out.append(dict(family=fam, label=label, train=kw))
    return out


def learn_row(setting: dict, seed: int, cfg, out: Path, device) -> tuple[dict, object]:
    """LPCTrainer with one family at the study's budget (``--quick``: the quick budget); its samples' FD."""
    from neuro_lpc.data import load_dataset
    from neuro_lpc.train import LPCTrainer, build_model

    from .study import StudyConfig, fit_cached, train_config
    from .study.train import cache_folder

    st = StudyConfig(quick=cfg.quick, seed=seed, device=cfg.device).apply_quick()
    train, _, info = load_dataset(st.dataset)
    tc = train_config(st, "lpc", n_train=len(train), **setting["train"])
    torch.manual_seed(seed)
    m, e = build_model(tc, info.image_size, info.channels)
    row = dict(family=setting["family"], label=setting["label"], seed=seed, **setting["train"],
               optimiser_steps=tc.epochs * tc.max_batches_per_epoch, langevin_steps=tc.langevin_steps)
    try:
        fit = fit_cached(LPCTrainer(m, e, tc), train, cache_folder(out / "models", f"dyn-{setting['family']}-s{seed}", tc))
    except DivergenceError as err:
        return dict(row, diverged=True, error=str(err).splitlines()[0]), None
    last = fit.history[-5:] if getattr(fit, "history", None) else []
    row.update(diverged=False, train_wall_s=fit.wall_s, cached=fit.cached,
               final_loss_per_dim=(sum(r["loss_per_dim"] for r in last) / len(last)) if last else math.nan)
    row.update(score_samples(m.eval(), cfg, out, device, seed))
    return row, m


def score_samples(model, cfg, out: Path, device, seed: int) -> dict:
    """Small-classifier FD (and coverage, pixel spread) of ``cfg.n_samples`` samples (200 with --quick)."""
    from neuro_lpc.metrics import evaluate_samples

    n = min(cfg.n_samples, 200) if cfg.quick else cfg.n_samples
    with torch.no_grad():
        imgs = model.sample(n, generator=torch.Generator(device=device).manual_seed(seed)).cpu()
    res = evaluate_samples(imgs, "animal-mnist", feature="classifier", cache_dir=out.resolve().parent / ".cache",
                           n_real=n, split="test")
    return {"pixel_std": float(imgs.reshape(n, -1).std(0).mean()), "fd": res["fd"], "coverage": res["coverage"],
            "_samples": imgs[:64]}


# ------------------------------------------------------------------------------------------ outputs ----

def write_csv(rows: list[dict], path: Path) -> Path:
    keys = list(dict.fromkeys(k for r in rows for k in r if not k.startswith("_")))
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)
    return path


def plot_tradeoff(linear: list[dict], decoder: list[dict], path: Path) -> Path:
    """ESS per gradient evaluation against entropy production (left: linear, closed form; right: decoder, the
    z-chains' pair time-reversal KL rate), one marker per family and strength."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    marks = {"overdamped": "o", "nonreversible": "s", "underdamped": "^"}
    panels = ((axes[0], linear, "entropy_production_rate", "ess_per_grad", "linear kappa=1000, discrete (closed form)"),
              (axes[1], linear, "entropy_production_rate", "circuit_ess_per_time",
               "linear, circuit form: ESS per fastest time constant"),
              (axes[2], decoder, "entropy_production_laplace", "ess_per_grad",
               "trained decoder: filled measured, hollow Laplace; e_p Laplace"))
    for ax, rows, xk, yk, title in panels:
        for i, r in enumerate(rows):
            if r.get("diverged") or not math.isfinite(r.get(yk, math.nan)):
                continue
            ax.plot(max(r[xk], 1e-3), r[yk], marks[r["family"]], color=f"C{i}", label=r["label"])
            if rows is decoder and math.isfinite(r.get("iat_slowest_laplace", math.nan)):
                ax.plot(max(r[xk], 1e-3), 1 / r["iat_slowest_laplace"], marks[r["family"]], color=f"C{i}",
                        fillstyle="none", markersize=9)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("entropy production (nats / unit time; 1e-3 = zero)")
        ax.set_ylabel(yk.replace("_", " ") + " (slowest direction)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if math.isinf(v) else f"{v:.4g}")
    return str(v)


def _table(rows: list[dict], keys: list[str]) -> str:
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def write_report(path: Path, linear, decoder, learning, command: str) -> Path:
    text = [f"# Sweep `dynamics`: speed against dissipation, and learning\n\n`{command}`\n",
            "Every family at 0.8 x its own stability bound; one gradient evaluation per step; speed-ups at equal "
            "gradient evaluations against reversible overdamped Langevin. Entropy production: v odd under time "
            "reversal (circuits/sweep_dynamics.py docstring).\n",
            "## Linear-Gaussian (closed form)\n",
            _table(linear, ["label", "step", "iat_slowest", "ess_per_grad", "speedup", "relaxation",
                            "speedup_relaxation", "entropy_production_rate", "entropy_production_all_even",
                            "zcov_max_rel_error", "circuit_iat", "circuit_speedup"]),
            "\n`circuit_iat`: the SDE's slowest-mode IAT in units of its fastest time constant (circuit form, equal "
            "fastest time scale); `circuit_speedup` against the overdamped circuit.\n",
            "\n## Trained decoder's posterior\n",
            "ESS of the projection on each chain's smallest-precision Hessian eigenvector (at the chain's mean); "
            "`iat_slowest_laplace`: the exact IAT of the same recursion on the Laplace approximation N(mean, P_b^-1) "
            "(median over chains). `reliable`: at least 50 records per IAT. A chain shorter than that underestimates its "
            "IAT, so where the overdamped row is unreliable and a family's row is reliable, `speedup` (measured) is a "
            "lower bound of the true speed-up.\n",
            _table(decoder, ["label", "step", "iat_slowest", "reliable", "iat_slowest_laplace", "ess_per_grad",
                             "speedup", "speedup_laplace", "circuit_speedup_laplace", "iat_worst_coord", "entropy_production_laplace",
                             "z_rotation_rate",
                             "z_circulation_max_z", "diverged", "wall_s"])]
    if learning:
        text += ["\n## Learning (LPCTrainer, equal optimiser steps and Langevin steps per batch)\n",
                 _table(learning, ["label", "family", "seed", "step_size", "optimiser_steps", "langevin_steps",
                                   "final_loss_per_dim", "fd", "coverage", "pixel_std", "train_wall_s", "diverged"])]
    path.write_text("\n".join(text) + "\n")
    return path


def run_dynamics_sweep(cfg, model, x, z0, out: Path, device, log=print) -> Path:
    """The whole sweep: CSV rows (case linear / decoder / learning), the trade-off PNG, the samples grid and
    the markdown report in ``out``; returns the CSV's path."""
    from . import plots

    linear = linear_rows(cfg.quick)
    log("[dynamics] linear case done")
    decoder = decoder_rows(model, x, z0, cfg, log)
    learning, grids = [], {}
    if cfg.train:
        ref = dict(case="learning", family="overdamped", label="reference: the sweep's model (the main job's recipe: "
                   "gamma 0.1, preconditioned beta 0.25)", seed=cfg.seed, diverged=False)
        ref.update(score_samples(model, cfg, out, device, cfg.seed))
        grids["reference (main job recipe)"] = ref.pop("_samples")
        learning.append(ref)
        for k in range(cfg.seeds):              # seed-major: a cut-short run still has every family once
            for s in learning_settings(decoder):
                log(f"[dynamics] learning {s['family']} seed {cfg.seed + k}")
                row, _ = learn_row(s, cfg.seed + k, cfg, out, device)
                if "_samples" in row:
                    grids.setdefault(f"{s['family']} (seed {cfg.seed + k})", row.pop("_samples"))
                learning.append(dict(row, case="learning"))
                write_csv(learning, out / "sweep_dynamics_learning.csv")     # progress, row by row
        plots.plot_sample_grids(grids, out / "sweep_dynamics_samples.png")
    path = write_csv(linear + decoder + learning, out / "sweep_dynamics.csv")
    plot_tradeoff(linear, decoder, out / "sweep_dynamics.png")
    write_report(out / "sweep_dynamics.md", linear, decoder, learning, getattr(cfg, "command", "sims/sweep.py"))
    return path
