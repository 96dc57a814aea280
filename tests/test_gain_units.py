"""Gain units with per-unit time constants (issue 14, section 3; circuits.timescales.gain_decay).

With tau_m = dt / (1 - beta) (Algorithm 1) Euler's per-unit decay 1 - dt / tau_m,i was negative for a
mismatched unit with tau_m,i < dt: m went negative and sqrt(m) NaN, for about one seed in five of the
``analog`` preset at d = 40. The decay is now beta ** (tau_m / tau_m,i), the exact decay of the unit's leak.
"""
import math

import pytest
import torch
from torch import nn

from circuits import Circuit, CircuitConfig
from circuits.config import check_dt_static
from circuits.noise import PRESETS
from circuits.timescales import gain_decay
from problems import F64, linear_model
from neuro_lpc import GaussianLikelihood, GenerativeModel, LangevinSampler
from neuro_lpc.errors import DivergenceError

pytestmark = pytest.mark.usefixtures("single_thread")

GAMMA, TAU_Z = 0.1, 1e-2   # the study's circuit rows: dt = gamma tau_z with beta = 0.25


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_runs_thirty_seeds_at_d40_without_divergence(preset):
    """The configuration that diverged (d = 40, precondition beta = 0.25, dt = gamma tau_z, adiabatic error
    units), seeds 0-29: every chain stays finite and every gain unit non-negative. Under ``analog`` a gain
    unit has tau_m,i < dt when its mismatch factor is below 1 - beta = 0.75 (a 2.5 sigma draw: p = 0.0062
    per unit, 1 - (1 - p)^40 = 0.22 per seed), so the premise that some seed has one is checked too."""
    d, n = 40, 64
    dt = GAMMA * TAU_Z
    fast_unit_seeds = []
    for seed in range(30):
        torch.manual_seed(seed)
        model = GenerativeModel(nn.Linear(d, n), GaussianLikelihood(0.5))
        circuit = Circuit(model, CircuitConfig(dt=dt, tau_z=TAU_Z, tau_e=0.0, noise=preset, precondition=0.25,
                                               seed=seed))
        tau_m = circuit.timescales.tau_m
        if isinstance(tau_m, torch.Tensor) and bool((tau_m < dt).any()):
            fast_unit_seeds.append(seed)
        x = torch.randn(4, n, generator=torch.Generator().manual_seed(seed))
        try:
            traj = circuit.simulate(x, steps=20, record_every=5)
        except DivergenceError as err:  # pragma: no cover - the failure being tested
            pytest.fail(f"preset {preset!r}, seed {seed}: {err}")
        assert torch.isfinite(traj.z).all() and torch.isfinite(traj.extras["gain"]).all()
        assert (circuit.state["m"] >= 0).all()
    if preset == "analog":
        assert fast_unit_seeds, "premise: some seed of 0-29 has a gain unit with tau_m,i < dt"


def test_gain_decay_is_the_exact_leak_decay_in_zero_one_for_any_draw():
    """beta_i = beta ** (tau_m / tau_m,i) = exp(-dt / tau_i), tau_i = f_i * (-dt / ln beta): in (0, 1) for every
    factor f_i > 0, including tau_m,i < dt (where Euler's 1 - dt / tau_m,i < 0); a unit with half the time constant
    forgets in one step what the nominal unit forgets in two (beta_i = beta^2); f_i = 1 is beta exactly."""
    for beta in (0.25, 0.9, 0.999, 1e-3):
        dt = 1e-3
        tau = dt / (1 - beta)                                       # CircuitConfig.gain_tau
        f = torch.tensor([0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 4.0, 10.0], dtype=F64)
        b = gain_decay(beta, tau * f, tau)
        assert ((b > 0) & (b < 1)).all()
        assert (b.diff() > 0).all()                                 # a slower unit forgets less per step
        assert b[4] == beta                                         # no mismatch: the uniform decay itself
        torch.testing.assert_close(b[[1, 2, 5, 6]], torch.tensor([beta**4, beta**2, beta**0.5, beta**0.25], dtype=F64),
                                   rtol=1e-13, atol=0)
        torch.testing.assert_close(b, torch.exp(-dt / (f * (-dt / math.log(beta)))), rtol=1e-13, atol=0)
        euler = 1 - dt / (tau * f)
        if beta < 0.9:
            assert (euler < 0).any()                                # what diverged: Euler's decay for tau_m,i < dt
    # the continuous form ("rms"): for dt << tau_m,i the decay is Euler's 1 - dt / tau_m,i to first order,
    # (1 - f h)^(1 / f) = 1 - h + (1 - f) h^2 / 2 + O(h^3) with h = dt / tau_m,i, and Euler's itself at f = 1
    tau, dt = 0.1, 1e-5
    f = torch.tensor([0.3, 0.5, 1.0, 3.0], dtype=F64)
    b = gain_decay(1 - dt / tau, tau * f, tau)
    h = dt / (tau * f)
    torch.testing.assert_close((b - (1 - h)) / h**2, (1 - f) / 2, rtol=0, atol=1e-3)
    assert b[2] == 1 - dt / tau
    assert gain_decay(0.25, 0.1, 0.1) == 0.25                        # uniform: the float, untouched
    with pytest.raises(ValueError, match="dt < precondition_tau"):
        gain_decay(-0.5, tau * f, tau)


@pytest.mark.parametrize("precondition", [0.25, "rms"])
def test_mismatched_gain_units_follow_their_exact_recursion_and_stay_nonnegative(precondition):
    """Gain mismatch of sigma = 0.5 (units with tau_m,i < dt: tau_m = 1.33 dt for beta = 0.25, 2 dt for "rms") and
    scores that start large (x far from any prediction) and fall: the circuit's m after T steps is the recursion
    m_t = beta_i m_{t-1} + (1 - beta_i) s(z_{t-1})^2 on its own recorded chain, term by term, and m >= 0. (The old
    code refused this circuit outright, asking for dt < 2 min tau_m,i: with tau_m = dt / (1 - beta) no dt can meet
    it.)"""
    model, x1 = linear_model(6, 10, 0.1, seed=4)
    x = 50 * x1.expand(3, -1).contiguous()                          # |s| ~ 1e4 at the start
    z0 = torch.zeros(3, 6, dtype=F64)
    dt, steps = GAMMA * TAU_Z, 40
    ts = {"name": "mismatch", "sigma": 0.5, "populations": ["gain"]}
    cfg = CircuitConfig(dt=dt, tau_z=TAU_Z, tau_e=0.0, noise="ideal", timescales=ts, precondition=precondition,
                        precondition_tau=2 * dt, precondition_max_gain=None, seed=5)
    circuit = Circuit(model, cfg)
    tau_m = circuit.timescales.tau_m
    assert (tau_m < dt).any()                                     # premise: Euler's decay would be negative there
    traj = circuit.simulate(x, z0, steps=steps, record_every=1, generator=torch.Generator().manual_seed(1))
    uniform = 0.25 if precondition == 0.25 else 1 - dt / cfg.gain_tau()
    b = uniform ** (cfg.gain_tau() / tau_m)
    zs = torch.cat([z0[None], traj.z[:-1]])                         # the old state of each step
    s2 = torch.stack([model.score(x, z) ** 2 for z in zs])
    m = torch.zeros_like(z0) if precondition == 0.25 else model.score(x, z0) ** 2
    for t in range(steps):
        m = b * m + (1 - b) * s2[t]
    torch.testing.assert_close(circuit.state["m"], m, rtol=1e-9, atol=0)
    assert (circuit.state["m"] >= 0).all() and torch.isfinite(traj.z).all()
    m_hat = m / (1 - b**steps) if precondition == 0.25 else m
    torch.testing.assert_close(traj.extras["gain"][-1], 1 / (m_hat.sqrt() + cfg.precondition_delta), rtol=1e-9, atol=0)


@pytest.mark.parametrize("beta", [0.25, 0.9])
def test_gain_mismatch_of_zero_is_algorithm_1(beta):
    """Mismatch with sigma = 0 on the gain units gives every unit the nominal tau_m as a tensor: the per-unit path
    must then be the uniform decay beta, i.e. the same chain as LangevinSampler(precondition=beta) (Algorithm 1)."""
    model, x1 = linear_model(4, 12, 0.5, seed=1)
    x = x1.expand(5, -1).contiguous()
    z0 = torch.randn(5, 4, generator=torch.Generator().manual_seed(9), dtype=F64)
    steps = 40
    ref = LangevinSampler(step_size=GAMMA, steps=steps, precondition=beta).sample(
        model, x, z0, record_every=5, generator=torch.Generator().manual_seed(42))
    ts = {"name": "mismatch", "sigma": 0.0, "populations": ["gain"]}
    circuit = Circuit(model, CircuitConfig(dt=GAMMA * TAU_Z, tau_z=TAU_Z, tau_e=0.0, timescales=ts, precondition=beta))
    assert isinstance(circuit.timescales.tau_m, torch.Tensor) and not circuit.uniform_timescales
    traj = circuit.simulate(x, z0, steps=steps, record_every=5, generator=torch.Generator().manual_seed(42))
    torch.testing.assert_close(traj.z, ref.z_trace, rtol=0, atol=1e-11)
    torch.testing.assert_close(traj.extras["gain"][-1], ref.gain, rtol=1e-12, atol=0)


def test_rms_gain_units_need_dt_below_tau_m():
    """Euler's decay 1 - dt / tau_m is negative for tau_m < dt < 2 tau_m (stable, but m' = -0.5 m for s = 0 at
    dt = 1.5 tau_m): such a dt is refused before any work, naming the gain units."""
    ok = dict(tau_z=1.0, tau_e=0.0, precondition="rms", precondition_tau=1e-3)
    check_dt_static(CircuitConfig(dt=0.99e-3, **ok))
    with pytest.raises(ValueError, match=r"gain units .*m must stay >= 0"):
        check_dt_static(CircuitConfig(dt=1.5e-3, **ok))
    model = linear_model(3, 5, 0.5)[0]
    with pytest.raises(ValueError, match=r"gain units .*m must stay >= 0"):
        Circuit(model, CircuitConfig(dt=1.5e-3, **ok))


def test_divergence_names_the_step_the_unit_and_its_time_constant_in_steps():
    """A chain that blows up for a reason the static checks cannot see (a non-linear decoder too stiff for dt)
    is named by its step and unit, with the unit's tau in steps: the number a smaller dt would raise."""
    torch.manual_seed(0)
    model = GenerativeModel(nn.Sequential(nn.Linear(3, 8)).double(), GaussianLikelihood(0.01).double())
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    circuit = Circuit(model, CircuitConfig(dt=1e-2, tau_z=1e-2, tau_e=0.0, check_every=1000))
    with pytest.raises(DivergenceError, match=r"diverged at step [0-9]+ .*value unit z\[[0-9]\] of chain [0-9], "
                                              r"tau = 0\.01 s = 1 dt") as err:
        circuit.simulate(x, steps=300, record_every=300)
    assert err.value.step is not None and err.value.unit.startswith("z[")
