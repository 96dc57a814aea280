"""The circuit in its limits (circuits.circuit, circuits.run, circuits.integrate).

The adiabatic circuit is discrete LPC (same random numbers, same chain; with gain units Algorithm 1),
and the noise-free circuit is an ODE that torchdiffeq integrates to high accuracy.
"""
import numpy as np
import pytest
import torch

from circuits import Circuit, CircuitConfig
from circuits.analysis import gaussian_posterior
from problems import F64, Wbx, conv_model, linear_model, mlp_model
from neuro_lpc import LangevinSampler


pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------- adiabatic == discrete LPC ----

@pytest.mark.parametrize("kind", ["linear", "mlp", "conv"])
def test_adiabatic_circuit_is_discrete_lpc(kind):
    """tau_e = 0, T = 1, dt = gamma tau_z: the EM chain *is* ULA with step gamma, same random numbers."""
    if kind == "linear":
        model, x1 = linear_model(4, 12, 0.5, seed=1)
        x = x1.expand(6, -1).contiguous() + 0.1 * torch.randn(6, 12, generator=torch.Generator().manual_seed(0), dtype=F64)
    elif kind == "mlp":
        model = mlp_model(3, 6, seed=2)
        x = torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    else:
        model = conv_model(4, seed=3)
        x = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    z0 = torch.randn(6, model.latent_dim, generator=torch.Generator().manual_seed(9), dtype=F64)
    gamma, tau_z, steps = 0.02, 0.01, 60
    ref = LangevinSampler(step_size=gamma, steps=steps).sample(model, x, z0, record_every=5,
                                                              generator=torch.Generator().manual_seed(42))
    circuit = Circuit(model, CircuitConfig(dt=gamma * tau_z, tau_z=tau_z, tau_e=0.0, temperature=1.0, noise="ideal"))
    traj = circuit.simulate(x, z0, steps=steps, record_every=5, generator=torch.Generator().manual_seed(42))
    assert circuit.state["kernel"] == ("linear-plain-reduced" if kind == "linear" else "autograd")
    torch.testing.assert_close(traj.z, ref.z_trace, rtol=0, atol=1e-11)
    torch.testing.assert_close(traj.log_joint, ref.log_joint_trace, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(traj.t, torch.arange(1, steps // 5 + 1, dtype=F64) * 5 * gamma * tau_z)


def discrete_case(kind, batch=6):
    """(model, x, z0) of the adiabatic-limit tests: linear, MLP or conv decoder, float64."""
    if kind == "linear":
        model, x1 = linear_model(4, 12, 0.5, seed=1)
        x = x1.expand(batch, -1).contiguous() + 0.1 * torch.randn(batch, 12, generator=torch.Generator().manual_seed(0),
                                                                  dtype=F64)
    elif kind == "mlp":
        model = mlp_model(3, 6, seed=2)
        x = torch.randn(batch, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    else:
        model = conv_model(4, seed=3)
        x = torch.randn(batch, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    z0 = torch.randn(batch, model.latent_dim, generator=torch.Generator().manual_seed(9), dtype=F64)
    return model, x, z0


@pytest.mark.parametrize("beta", [0.25, 0.9])
@pytest.mark.parametrize("kind", ["linear", "mlp", "conv"])
def test_adiabatic_preconditioned_circuit_is_algorithm_1(kind, beta):
    """precondition = beta (tau_m = dt / (1 - beta)), tau_e = 0, dt = gamma tau_z: the gain units advance first
    (m(t) = beta m(t-1) + (1 - beta) s^2 from m = 0) and G = 1 / (sqrt(m / (1 - beta^t)) + delta) uses the
    updated, bias-corrected m, so the EM chain is Algorithm 1: LangevinSampler(precondition=beta), same draws."""
    model, x, z0 = discrete_case(kind)
    gamma, tau_z, steps = 0.02, 0.01, 60
    ref = LangevinSampler(step_size=gamma, steps=steps, precondition=beta).sample(
        model, x, z0, record_every=5, generator=torch.Generator().manual_seed(42))
    circuit = Circuit(model, CircuitConfig(dt=gamma * tau_z, tau_z=tau_z, tau_e=0.0, precondition=beta))
    traj = circuit.simulate(x, z0, steps=steps, record_every=5, generator=torch.Generator().manual_seed(42))
    assert circuit.state["kernel"] == ("linear" if kind == "linear" else "autograd")
    torch.testing.assert_close(traj.z, ref.z_trace, rtol=0, atol=1e-11)
    torch.testing.assert_close(traj.log_joint, ref.log_joint_trace, rtol=1e-12, atol=1e-9)
    # the recorded gain is the G of the step just taken: bias-corrected with t = steps at the end
    m_hat = circuit.state["m"] / (1 - beta**steps)
    torch.testing.assert_close(traj.extras["gain"][-1], 1 / (m_hat.sqrt() + 1e-8), rtol=1e-12, atol=0)


@pytest.mark.parametrize("beta", [0.25, 0.9])
@pytest.mark.parametrize("kind", ["linear", "mlp", "conv"])
def test_adiabatic_frozen_circuit_is_the_frozen_sampler(kind, beta):
    """preconditioner="frozen": the gain units adapt for precondition_warmup = 20 dt (Algorithm 1, as above),
    then hold G, so the EM chain is LangevinSampler(precondition=beta, preconditioner="frozen", warmup=20)
    -- ULA with the fixed G it froze -- with the same draws; the recorded gain is that G from step 20 on."""
    model, x, z0 = discrete_case(kind)
    gamma, tau_z, steps, warm = 0.02, 0.01, 60, 20
    ref = LangevinSampler(step_size=gamma, steps=steps, precondition=beta, preconditioner="frozen", warmup=warm).sample(
        model, x, z0, record_every=5, generator=torch.Generator().manual_seed(42))
    cfg = CircuitConfig(dt=gamma * tau_z, tau_z=tau_z, tau_e=0.0, precondition=beta, preconditioner="frozen",
                        precondition_warmup=warm * gamma * tau_z)
    assert cfg.warmup_steps() == warm
    circuit = Circuit(model, cfg)
    traj = circuit.simulate(x, z0, steps=steps, record_every=5, generator=torch.Generator().manual_seed(42))
    torch.testing.assert_close(traj.z, ref.z_trace, rtol=0, atol=1e-11)
    torch.testing.assert_close(traj.log_joint, ref.log_joint_trace, rtol=1e-12, atol=1e-9)
    gains = traj.extras["gain"]                                # records at steps 5, 10, ..., 60
    torch.testing.assert_close(gains[-1], ref.gain, rtol=1e-12, atol=0)
    assert all(torch.equal(gains[r], gains[-1]) for r in range(warm // 5 - 1, len(gains)))
    assert not torch.equal(gains[0], gains[-1])                # it did adapt during the warm-up
    # the gain units stopped at the warm-up: m is Algorithm 1's m after 20 steps
    adapt = Circuit(model, CircuitConfig(dt=gamma * tau_z, tau_z=tau_z, tau_e=0.0, precondition=beta))
    adapt.simulate(x, z0, steps=warm, record_every=5, generator=torch.Generator().manual_seed(42))
    torch.testing.assert_close(circuit.state["m"], adapt.state["m"], rtol=0, atol=0)


def test_circuit_gain_cap_and_frozen_options_are_validated():
    model, x1 = linear_model(3, 8, 0.5, seed=13)
    x, z0 = x1.expand(4, -1), torch.zeros(4, 3, dtype=F64)   # z = 0 is not a stationary point here
    free = Circuit(model, CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=0.0, precondition=0.9, precondition_max_gain=None))
    capped = Circuit(model, CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=0.0, precondition=0.9))
    a = free.simulate(x, z0, steps=50, record_every=1, generator=torch.Generator().manual_seed(1))
    b = capped.simulate(x, z0, steps=50, record_every=1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.z, b.z)                                # inactive in a normal run
    tight = Circuit(model, CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=0.0, precondition=0.9, precondition_max_gain=0.05))
    g = tight.simulate(x, z0, steps=50, record_every=1, generator=torch.Generator().manual_seed(1)).extras["gain"]
    assert g.max() == 0.05 and b.extras["gain"].max() > 0.05    # the cap is the gain units' saturation
    for bad, msg in (({"preconditioner": "lazy", "precondition": 0.9}, "preconditioner must be one of"),
                     ({"preconditioner": "frozen"}, "needs gain units"),
                     ({"precondition": 0.9, "precondition_warmup": 1e-3}, "applies only"),
                     ({"precondition": 0.9, "preconditioner": "frozen", "precondition_warmup": -1.0}, "positive"),
                     ({"precondition": 0.9, "precondition_max_gain": 0.0}, "positive")):
        with pytest.raises(ValueError, match=msg):
            CircuitConfig(dt=1e-4, **bad).validate()
    assert CircuitConfig(dt=1e-4, precondition=0.9, preconditioner="frozen").warmup_steps() == 100
    assert CircuitConfig(dt=1e-4, precondition=0.9).warmup_steps() is None


def test_preconditioned_decoder_gradients_equal_algorithm_1():
    """accumulate_grad with precondition = beta: the same grad_theta sums as LangevinSampler(precondition=beta)."""
    model = conv_model(4, seed=5, learn_sigma=True)
    x = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    z0 = torch.randn(5, 4, generator=torch.Generator().manual_seed(2), dtype=F64)
    gamma, tau_z, steps, beta = 0.02, 0.01, 20, 0.5
    LangevinSampler(step_size=gamma, steps=steps, precondition=beta).sample(
        model, x, z0, generator=torch.Generator().manual_seed(3), accumulate_grad=True)
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    circuit = Circuit(model, CircuitConfig(dt=gamma * tau_z, tau_z=tau_z, tau_e=0.0, precondition=beta))
    circuit.simulate(x, z0, steps=steps, generator=torch.Generator().manual_seed(3), accumulate_grad=True)
    for p, r in zip(model.parameters(), ref):
        torch.testing.assert_close(p.grad, r, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------- the noise-free limit ----

def test_preset_none_converges_to_the_torchdiffeq_solution():
    """Nonlinear (MLP) decoder, finite tau_e, T = 0: EM -> the dopri5 solution with error ~ dt."""
    model = mlp_model(3, 6, seed=11)
    x = torch.randn(2, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    z0 = torch.randn(2, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    t_end = 0.02
    cfg = CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=2e-3, noise="none")
    ode = Circuit(model, cfg).simulate_ode(x, z0, t_end=t_end, n_points=5, rtol=1e-11, atol=1e-13)
    assert ode.z.shape == (5, 2, 3) and float(ode.t[-1]) == t_end
    torch.testing.assert_close(ode.z[0], z0)
    dts = [t_end / k for k in (25, 50, 100, 200)]
    errs = []
    for dt in dts:
        c = Circuit(model, CircuitConfig(dt=dt, tau_z=1e-2, tau_e=2e-3, noise="none"))
        steps = round(t_end / dt)
        traj = c.simulate(x, z0, steps=steps, record_every=steps)
        errs.append((traj.z[-1] - ode.z[-1]).abs().max().item())
    assert all(e2 < e1 for e1, e2 in zip(errs, errs[1:])), errs
    slope = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    assert 0.8 < slope < 1.2, (errs, slope)


def test_ode_flow_reaches_the_posterior_mean():
    """T = 0 gradient flow (adiabatic or not) settles at the MAP = posterior mean (linear-Gaussian)."""
    model, x1 = linear_model(3, 8, 0.5, seed=12)
    W, b, x = Wbx(model, x1)
    mean, _, _ = gaussian_posterior(W, b, x, 0.5)
    z0 = torch.zeros(1, 3, dtype=F64)
    for kw in ({"tau_e": 0.0}, {"tau_e": 2e-3}, {"tau_e": 2e-3, "error_form": "bogacz"}):
        c = Circuit(model, CircuitConfig(dt=1e-4, tau_z=1e-2, noise="none", **kw))
        ode = c.simulate_ode(x1, z0, t_end=1.0, n_points=3, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ode.z[-1, 0].numpy(), mean, atol=1e-6)
        em = c.simulate(x1, z0, steps=4000, record_every=4000)
        np.testing.assert_allclose(em.z[-1, 0].numpy(), mean, atol=1e-5)


def test_preconditioned_circuit_records_gain_and_keeps_the_posterior_mean():
    """Gain units: G = 1 / (sqrt(m) + delta) is recorded; the drift's fixed point (the posterior mean for a
    linear-Gaussian model) does not depend on G, so the chains stay centred on it."""
    model, x1 = linear_model(3, 8, 0.5, seed=13)
    W, b, x = Wbx(model, x1)
    mean, cov, _ = gaussian_posterior(W, b, x, 0.5)
    for pc in (True, 0.99):
        c = Circuit(model, CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=0.0, precondition=pc, precondition_tau=0.05))
        traj = c.simulate(x1.expand(500, -1), steps=1500, record_every=100)
        g = traj.extras["gain"]
        assert g.shape == (15, 500, 3) and torch.isfinite(g).all() and (g > 0).all()
        zs = traj.z[5:].reshape(-1, 3)
        se = np.sqrt(np.diag(cov) / 500)  # records are correlated: one record's worth of samples
        assert (np.abs(zs.mean(0).numpy() - mean) < 6 * se).all()
    assert CircuitConfig(dt=1e-4, precondition=0.99).gain_tau() == pytest.approx(1e-2)
