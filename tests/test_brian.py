"""The Brian2 implementation of the linear circuit against closed forms and an independent numpy integrator.

Expectations come from the equations (DESIGN.md section 3): at T = 0 a run is the deterministic
Euler-Maruyama recursion; at T = 1 its stationary law solves the discrete Lyapunov equation of
``circuits.analysis`` (a wrong noise amplitude, e.g. off by sqrt(2), scales the covariance by 2).
"""
import numpy as np
import pytest

pytest.importorskip("brian2")
pytestmark = pytest.mark.usefixtures("single_thread")   # tiny steps: one torch thread (tests/conftest.py)

from circuits.analysis import euler_maruyama_stationary, linear_circuit_matrices  # noqa: E402
from circuits.brian import (build_linear_circuit_network, linear_circuit_from_model,  # noqa: E402
                            simulate_linear_circuit_brian)


def small_problem(d=2, n=4, seed=0):
    rng = np.random.default_rng(seed)
    W = 0.8 * rng.normal(size=(n, d))
    b = 0.1 * rng.normal(size=n)
    x = rng.normal(size=n)
    return W, b, x


def numpy_euler(W, b, x, sigma_x, prior_std, tau_z, tau_e, dt, steps, z0, eps0, form="error"):
    """Deterministic (T = 0) Euler recursion of the circuit, written out independently."""
    z, eps = np.array(z0, float), np.array(eps0, float)
    zs, es = [z.copy()], [eps.copy()]
    for _ in range(steps):
        if tau_e == 0:
            eps = (x - W @ z - b) / sigma_x**2
            z_new = z + dt / tau_z * (W.T @ eps - z / prior_std**2)
        else:
            drive = (x - W @ z - b) / sigma_x**2 - eps if form == "error" else (x - W @ z - b) - sigma_x**2 * eps
            z_new = z + dt / tau_z * (W.T @ eps - z / prior_std**2)
            eps = eps + dt / tau_e * drive
        z = z_new
        zs.append(z.copy())
        es.append(eps.copy())
    return np.array(zs), np.array(es)


@pytest.mark.parametrize("tau_e,form", [(2e-3, "error"), (2e-3, "bogacz"), (0.0, "error")])
def test_noise_free_run_is_the_euler_recursion(tau_e, form):
    W, b, x = small_problem()
    sigma_x, prior_std, tau_z, dt, steps = 0.7, 1.3, 1e-2, 1e-4, 300
    z0 = np.array([1.5, -2.0])
    eps0 = np.linspace(-1, 1, 4)
    tr = simulate_linear_circuit_brian(W, b, x, sigma_x, prior_std, tau_z, tau_e, 0.0, dt, steps * dt, z0,
                                       eps0=eps0, form=form)
    zs, es = numpy_euler(W, b, x, sigma_x, prior_std, tau_z, tau_e, dt, steps, z0, eps0, form)
    assert tr.t.shape == (steps + 1,) and tr.z.shape == (steps + 1, 1, 2) and tr.eps.shape == (steps + 1, 1, 4)
    np.testing.assert_allclose(tr.t, np.arange(steps + 1) * dt, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(tr.z[:, 0], zs, rtol=1e-6, atol=1e-9)
    if tau_e > 0:
        np.testing.assert_allclose(tr.eps[:, 0], es, rtol=1e-6, atol=1e-9)
    else:  # algebraic error units: eps(t) = e(x, W z(t) + b)
        np.testing.assert_allclose(tr.eps[:, 0], (x - zs @ W.T - b) / sigma_x**2, rtol=1e-6, atol=1e-9)
    # the run moved (a trivial trajectory would pass the comparison vacuously)
    assert np.abs(tr.z[-1, 0] - z0).max() > 0.1


def test_stationary_law_matches_the_discrete_lyapunov_solution():
    W, b, x = small_problem(seed=1)
    sigma_x, prior_std, tau_z, tau_e, dt, T = 1.0, 1.0, 1e-2, 2e-3, 2e-4, 1.0
    chains, burn, keep = 200, 500, 2000
    tr = simulate_linear_circuit_brian(W, b, np.tile(x, (chains, 1)), sigma_x, prior_std, tau_z, tau_e, T, dt,
                                       (burn + keep) * dt, np.zeros(2), seed=7, record_dt=2 * dt)
    A, c, Bn = linear_circuit_matrices(W, b, x, sigma_x, prior_std, tau_z, tau_e, T)
    mean, cov = euler_maruyama_stationary(A, Bn, dt, c)
    states = np.concatenate([tr.z, tr.eps], axis=2)[burn // 2 + 1:].reshape(-1, 6)
    m_hat = states.mean(0)
    c_hat = np.cov(states.T)
    sd = np.sqrt(np.diag(cov))
    # z's slowest mode relaxes in tau_z / lambda_min(P) ~ 10 ms = 50 steps, so there are about
    # chains * keep / 100 = 4000 effective samples: the mean to ~0.02 sd, the covariance to ~3 %.
    np.testing.assert_allclose(m_hat, mean, atol=0.1 * sd.max())
    np.testing.assert_allclose(c_hat, cov, atol=0.1 * np.diag(cov).max())
    np.testing.assert_allclose(np.diag(c_hat), np.diag(cov), rtol=0.1)
    # sqrt(2) too much or too little noise would double or halve every covariance entry: far outside the tolerance
    assert np.all(np.abs(np.diag(c_hat) / np.diag(cov) - 1) < 0.1)


def test_seed_reproduces_and_leaves_numpy_alone():
    W, b, x = small_problem()
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = simulate_linear_circuit_brian(W, b, x, 1.0, 1.0, 1e-2, 2e-3, 1.0, 1e-4, 50e-4, np.zeros(2), seed=5)
    assert np.array_equal(np.random.get_state()[1], before)
    a2 = simulate_linear_circuit_brian(W, b, x, 1.0, 1.0, 1e-2, 2e-3, 1.0, 1e-4, 50e-4, np.zeros(2), seed=5)
    c = simulate_linear_circuit_brian(W, b, x, 1.0, 1.0, 1e-2, 2e-3, 1.0, 1e-4, 50e-4, np.zeros(2), seed=6)
    np.testing.assert_array_equal(a.z, a2.z)
    assert not np.allclose(a.z[1:], c.z[1:])


def test_record_grid_and_batches():
    W, b, x = small_problem()
    z0 = np.array([[0.0, 0.0], [1.0, -1.0], [2.0, 0.5]])
    tr = simulate_linear_circuit_brian(W, b, x, 1.0, 1.0, 1e-2, 2e-3, 0.0, 1e-4, 100e-4, z0, record_dt=10e-4)
    np.testing.assert_allclose(tr.t, np.arange(11) * 1e-3, atol=1e-12)
    assert tr.z.shape == (11, 3, 2) and tr.eps.shape == (11, 3, 4)
    np.testing.assert_allclose(tr.z[0], z0)
    np.testing.assert_allclose(tr.eps[0], (x - z0 @ W.T - b))      # default eps0: settled at z0
    for k in range(3):                                               # chains are independent copies
        single = simulate_linear_circuit_brian(W, b, x, 1.0, 1.0, 1e-2, 2e-3, 0.0, 1e-4, 100e-4, z0[k], record_dt=10e-4)
        np.testing.assert_allclose(tr.z[:, k], single.z[:, 0], rtol=1e-10, atol=1e-12)
    # duration off the record grid: the last record is the last grid point before it
    tr2 = simulate_linear_circuit_brian(W, b, x, 1.0, 1.0, 1e-2, 2e-3, 0.0, 1e-4, 25e-4, z0, record_dt=10e-4)
    np.testing.assert_allclose(tr2.t, [0, 1e-3, 2e-3], atol=1e-12)


def test_network_uses_numpy_target_and_has_the_equations():
    from brian2.codegen.runtime.numpy_rt import NumpyCodeObject

    W, b, x = small_problem()
    net, zg, eg, mons = build_linear_circuit_network(W, b, x, 1.0, 1.0, 1e-2, 2e-3, 1.0, 1e-4, np.zeros(2))
    assert zg.codeobj_class is NumpyCodeObject and eg.codeobj_class is NumpyCodeObject
    assert "xi" in str(zg.equations) and set(mons) == {"z", "eps"}
    assert len(zg) == 2 and len(eg) == 4


@pytest.mark.parametrize("kw,match", [
    (dict(W=np.zeros(3)), "W must have 2"),
    (dict(b=np.zeros(3)), "b must have shape"),
    (dict(x=np.zeros(5)), "x must have shape"),
    (dict(z0=np.zeros(3)), "z0 must have shape"),
    (dict(tau_z=-1.0), "tau_z must be a positive"),
    (dict(tau_e=-1e-3), "tau_e must be a non-negative"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(duration=1.5e-4), "multiple of dt"),
    (dict(record_dt=2.5e-4), "multiple of dt"),
    (dict(form="other"), "form must be"),
    (dict(x=np.full(4, np.inf)), "NaN or inf"),
])
def test_bad_input_is_refused_before_work(kw, match):
    W, b, x = small_problem()
    args = dict(W=W, b=b, x=x, sigma_x=1.0, prior_std=1.0, tau_z=1e-2, tau_e=2e-3, temperature=1.0, dt=1e-4,
                duration=1e-3, z0=np.zeros(2))
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        simulate_linear_circuit_brian(**args)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # numpy overflow inside Brian2's generated code
def test_unstable_dt_names_the_unit():
    W, b, x = small_problem()
    with pytest.raises(FloatingPointError, match="non-finite (value|error) unit"):
        simulate_linear_circuit_brian(W, b, x, 0.05, 1.0, 1e-2, 1e-4, 0.0, 1e-3, 0.5, np.zeros(2), record_dt=1e-2)


def test_linear_circuit_from_model():
    import torch

    from neuro_lpc import GaussianLikelihood, GenerativeModel

    dec = torch.nn.Linear(2, 4)
    model = GenerativeModel(dec, GaussianLikelihood(0.5), prior_std=2.0)
    p = linear_circuit_from_model(model)
    np.testing.assert_allclose(p["W"], dec.weight.detach().double().numpy())
    assert p["sigma_x"] == pytest.approx(0.5) and p["prior_std"] == 2.0
    with pytest.raises(ValueError, match="linear decoder"):
        linear_circuit_from_model(GenerativeModel(torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh()),
                                                  GaussianLikelihood(0.5), latent_dim=2))


def _linear_model(W, b, sigma_x, prior_std):
    import torch

    from neuro_lpc import GaussianLikelihood, GenerativeModel

    n, d = W.shape
    dec = torch.nn.Linear(d, n).double()
    with torch.no_grad():
        dec.weight.copy_(torch.as_tensor(W))
        dec.bias.copy_(torch.as_tensor(b))
    return GenerativeModel(dec, GaussianLikelihood(sigma_x), prior_std=prior_std).double()


@pytest.mark.parametrize("tau_e,form", [(2e-3, "error"), (2e-3, "bogacz"), (0.0, "error")])
def test_brian2_and_circuit_agree_without_noise(tau_e, form):
    import torch

    from circuits import Circuit, CircuitConfig

    W, b, x = small_problem()
    sigma_x, prior_std, tau_z, dt, steps = 0.7, 1.3, 1e-2, 1e-4, 300
    z0 = np.array([[1.5, -2.0], [0.0, 0.5]])
    model = _linear_model(W, b, sigma_x, prior_std)
    circ = Circuit(model, CircuitConfig(dt=dt, tau_z=tau_z, tau_e=tau_e, noise="none", error_form=form))
    traj = circ.simulate(torch.as_tensor(np.tile(x, (2, 1))), torch.as_tensor(z0), steps=steps, record_every=1)
    br = simulate_linear_circuit_brian(W, b, x, sigma_x, prior_std, tau_z, tau_e, 0.0, dt, steps * dt, z0, form=form)
    np.testing.assert_allclose(traj.t.numpy(), br.t[1:], rtol=1e-9)
    np.testing.assert_allclose(traj.z.numpy(), br.z[1:], rtol=1e-5, atol=1e-8)
    assert np.abs(br.z[-1] - z0).max() > 0.1


def test_brian2_and_circuit_agree_in_stationary_statistics():
    import torch

    from circuits import Circuit, CircuitConfig

    W, b, x = small_problem(seed=1)
    sigma_x, prior_std, tau_z, tau_e, dt = 1.0, 1.0, 1e-2, 2e-3, 2e-4
    chains, burn, keep = 200, 500, 2000
    A, c, Bn = linear_circuit_matrices(W, b, x, sigma_x, prior_std, tau_z, tau_e, 1.0)
    mean, cov = euler_maruyama_stationary(A, Bn, dt, c)
    mean, cov = mean[:2], cov[:2, :2]
    br = simulate_linear_circuit_brian(W, b, np.tile(x, (chains, 1)), sigma_x, prior_std, tau_z, tau_e, 1.0, dt,
                                       (burn + keep) * dt, np.zeros(2), seed=11, record_dt=2 * dt)
    zb = br.z[burn // 2 + 1:].reshape(-1, 2)
    circ = Circuit(_linear_model(W, b, sigma_x, prior_std), CircuitConfig(dt=dt, tau_z=tau_z, tau_e=tau_e, noise="ideal"))
    traj = circ.simulate(torch.as_tensor(np.tile(x, (chains, 1))), torch.zeros(chains, 2, dtype=torch.float64),
                         steps=burn + keep, record_every=2, generator=torch.Generator().manual_seed(11))
    zc = traj.z[burn // 2:].reshape(-1, 2).numpy()
    scale = np.diag(cov).max()
    for z in (zb, zc):   # ~4000 effective samples each: mean to ~0.02 sd, covariance to ~3 %
        np.testing.assert_allclose(z.mean(0), mean, atol=0.1 * np.sqrt(scale))
        np.testing.assert_allclose(np.cov(z.T), cov, atol=0.1 * scale)
    np.testing.assert_allclose(zb.mean(0), zc.mean(0), atol=0.1 * np.sqrt(scale))
    np.testing.assert_allclose(np.cov(zb.T), np.cov(zc.T), atol=0.1 * scale)
