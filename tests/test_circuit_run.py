"""Runs of the circuit (circuits.run, circuits.integrate): snapshot/restore, deferred records,
trajectories and HDF5 streaming, initial states, config validation, bad inputs and divergence."""
import numpy as np
import pytest
import torch
from torch import nn

from circuits import Circuit, CircuitConfig, NoiseModel
from circuits.analysis import linear_circuit_matrices
from circuits.integrate import stable_dt_bound
from helpers_circuit import F64, Wbx, linear_model
from neuro_lpc import BernoulliLikelihood, DivergenceError, GaussianLikelihood, GenerativeModel
from neuro_lpc.record import Trajectory, read_status


pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------ snapshots and records ----

@pytest.mark.parametrize("noise, tau_e", [("ideal", 2e-3), ("ideal", 0.0), ("analog", 2e-3)])
def test_snapshot_and_restore_replay_exactly(noise, tau_e):
    """What the divergence replay relies on: from a snapshot (state + generator) the run repeats bit for bit."""
    from circuits.circuit import CircuitRun
    model, x1 = linear_model(3, 7, 0.5, seed=21)
    c = Circuit(model, CircuitConfig(dt=2e-4, tau_e=tau_e, noise=noise))
    x = x1.expand(4, -1)
    run = CircuitRun(c, x, torch.zeros(4, 3, dtype=F64), torch.Generator().manual_seed(0))
    for _ in range(5):
        run.step()
    snap = run.snapshot()
    for _ in range(7):
        run.step()
    z1, e1 = run.z.clone(), run.eps.clone()
    run.restore(snap)
    assert run.k == 5
    for _ in range(7):
        run.step()
    assert torch.equal(run.z, z1) and torch.equal(run.eps, e1)


@pytest.mark.parametrize("tau_e", [2e-3, 0.0])
@pytest.mark.parametrize("record_eps", [False, True])
def test_records_take_the_log_joint_from_the_next_steps_forward(tmp_path, tau_e, record_eps):
    """No decoder forward per record: the log joint (and, adiabatic, the error) at a recorded state comes
    from the next step's forward, the last record from one forward at the end -- as LangevinSampler. A
    run is 1 forward (initial error units) + 1 per step + 1; the records are those of the true model."""
    model, dec = counted_model()
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    z0 = torch.randn(3, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    cfg = CircuitConfig(dt=1e-4, tau_e=tau_e, noise="thermal", record_buffer=3)
    traj = Circuit(model, cfg).simulate(x, z0, steps=20, record_every=2, record_eps=record_eps)
    assert dec.calls == 1 + 20 + 1
    with torch.no_grad():
        mu = model.decoder(traj.z.reshape(-1, 3))
        lj = model.log_joint(x.repeat(10, 1), traj.z.reshape(-1, 3)).reshape(10, 3)
        err = model.error(x.repeat(10, 1), mu).reshape(10, 3, 6)
    torch.testing.assert_close(traj.log_joint, lj, rtol=1e-12, atol=1e-10)
    if tau_e == 0:
        torch.testing.assert_close(traj.extras["error_norm"], torch.linalg.vector_norm(err, dim=2), rtol=1e-12,
                                   atol=1e-10)
        if record_eps:
            torch.testing.assert_close(traj.extras["eps"], err, rtol=1e-12, atol=1e-10)
    # streamed in blocks of 3 records (the last record of a block is measured before its write): the same
    disk = Circuit(model, cfg).simulate(x, z0, steps=20, record_every=2, record_eps=record_eps,
                                        record_path=tmp_path / "r.h5")
    for key in ("z", "log_joint"):
        torch.testing.assert_close(getattr(disk, key), getattr(traj, key), rtol=0, atol=0)
    for key, v in traj.extras.items():
        torch.testing.assert_close(disk.extras[key], v, rtol=0, atol=0)
    # steps not a multiple of record_every: the last record is taken from the last step's forward
    dec.calls = 0
    Circuit(model, cfg).simulate(x, z0, steps=21, record_every=2)
    assert dec.calls == 1 + 21 + (1 if tau_e == 0 else 0)  # adiabatic: the final error units


# ------------------------------------------------------------------------------ recording ----

def test_trajectory_contents_and_hdf5_streaming_match(tmp_path):
    model, x1 = linear_model(3, 5, 0.5, seed=14)
    x = x1.expand(4, -1)
    cfg = CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=2e-3, noise="thermal", record_buffer=7, seed=5)
    mem = Circuit(model, cfg).simulate(x, steps=300, record_every=10)
    assert mem.z.shape == (30, 4, 3) and mem.log_joint.shape == (30, 4) and mem.extras["error_norm"].shape == (30, 4)
    torch.testing.assert_close(mem.t, torch.arange(1, 31, dtype=F64) * 10 * 1e-4)
    torch.testing.assert_close(mem.log_joint[-1], model.log_joint(x, mem.z[-1]).detach())
    path = tmp_path / "run.h5"
    disk = Circuit(model, cfg).simulate(x, steps=300, record_every=10, record_path=path)
    torch.testing.assert_close(disk.z, mem.z)
    back = Trajectory.from_hdf5(path)
    torch.testing.assert_close(back.z, mem.z)
    torch.testing.assert_close(back.extras["error_norm"], mem.extras["error_norm"])
    assert back.attrs["seed"] == 5 and back.attrs["config"]["noise"] == "thermal"
    assert read_status(path) == "complete"
    last = Circuit(model, cfg).simulate(x, steps=300, record_every=10, record_path=tmp_path / "b.h5", keep_records=False)
    assert last.z.shape == (1, 4, 3)
    torch.testing.assert_close(last.z[0], mem.z[-1])
    torch.testing.assert_close(last.t, mem.t[-1:])


def test_initial_states_prior_encoder_and_seed():
    model, x1 = linear_model(3, 5, 0.5, seed=15)
    x = x1.expand(3, -1)
    c = Circuit(model, CircuitConfig(dt=1e-4, seed=2))
    a = c.simulate(x, steps=20, record_every=10)
    b = c.simulate(x, z0="prior", steps=20, record_every=10)
    torch.testing.assert_close(a.z, b.z)  # None == "prior", same seed -> same run

    class Enc(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 3), 5.0, dtype=F64), torch.full((x.shape[0], 3), 1e-8, dtype=F64)

    e = c.simulate(x, z0="encoder", encoder=Enc(), steps=5, record_every=1, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    z0 = 5.0 + 1e-4 * torch.randn((3, 3), generator=g, dtype=F64)  # the reparameterised draw, then the run
    manual = c.simulate(x, z0, steps=5, record_every=1, generator=g)
    torch.testing.assert_close(e.z, manual.z)
    with pytest.raises(ValueError, match="encoder="):
        c.simulate(x, z0="encoder", steps=1, record_every=1)


def test_config_round_trip_and_validation():
    cfg = CircuitConfig(dt=2e-4, noise={"preset": "thermal", "temperature": 0.5}, timescales="mismatch", seed=4)
    d = cfg.to_dict()
    assert CircuitConfig.from_dict(d) == cfg
    cfg2 = CircuitConfig(noise=NoiseModel.preset("analog"))
    assert CircuitConfig.from_dict(cfg2.to_dict()).noise_model() == NoiseModel.preset("analog")
    assert cfg.resolved_temperature() == 0.5
    assert CircuitConfig(noise="none").resolved_temperature() == 0.0
    for bad in ({"dt": -1e-4}, {"tau_z": 0.0}, {"tau_e": -1e-3}, {"temperature": -1.0}, {"error_form": "x"},
                {"precondition": "adam"}, {"noise": "loud"}, {"timescales": "weird"}, {"check_every": 0},
                {"noise": {"sources": [{"type": "thermal", "value_std": -1}]}}):
        with pytest.raises(ValueError):
            CircuitConfig(**bad).validate()
    with pytest.raises(ValueError, match="unknown field"):
        CircuitConfig.from_dict({"dt": 1e-4, "tau": 1})


# ----------------------------------------------------------------------------- bad inputs ----

class CountingDecoder(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, z):
        self.calls += 1
        return self.inner(z)


def counted_model():
    dec = CountingDecoder(nn.Sequential(nn.Linear(3, 6)).double())
    model = GenerativeModel(dec, GaussianLikelihood(0.5).double(), latent_dim=3)
    model.output_shape  # probe once
    dec.calls = 0
    return model, dec


@pytest.mark.parametrize("kw, match", [
    ({"noise": "loud"}, "unknown noise preset"),
    ({"noise": {"sources": [{"type": "hum"}]}}, "unknown noise source"),
    ({"noise": {"sources": [{"type": "thermal", "volume": 1}]}}, "unknown parameter"),
    ({"noise": {"sources": [{"type": "thermal", "value_std": -0.1}]}}, "non-negative"),
    ({"dt": 5e-3, "tau_e": 2e-3}, "unstable"),
    ({"tau_z": -1e-2}, "tau_z must be positive"),
    ({"timescales": {"name": "mismatch", "sigma": -1}}, "sigma"),
])
def test_bad_configuration_raises_before_any_step(kw, match):
    model, dec = counted_model()
    with pytest.raises(ValueError, match=match):
        Circuit(model, CircuitConfig(**kw))
    assert dec.calls == 0


def test_dt_checks_name_the_stable_dt():
    model, x1 = linear_model(3, 20, 0.05, seed=16, scale=3.0)  # stiff: large precision
    bound, what = stable_dt_bound(Circuit(model, CircuitConfig(dt=1e-9, tau_e=0.0)))
    assert "stiffness" in what
    with pytest.raises(ValueError, match=r"dt < [0-9.e-]+ s") as err:
        Circuit(model, CircuitConfig(dt=1.2 * bound, tau_e=0.0))
    assert "stiffness" in str(err.value)
    Circuit(model, CircuitConfig(dt=0.9 * bound, tau_e=0.0))
    # finite tau_e: the 2x2-block eigenvalues agree with a dense eigen-decomposition
    c = Circuit(model, CircuitConfig(dt=1e-9, tau_e=2e-3))
    W, b, x = Wbx(model, x1)
    A, _, _ = linear_circuit_matrices(W, b, x, 0.05, 1.0, 1e-2, 2e-3)
    mu = np.linalg.eigvals(A)
    assert stable_dt_bound(c)[0] == pytest.approx(np.min(-2 * mu.real / np.abs(mu) ** 2), rel=1e-6)
    # heterogeneous tau: the smallest per-unit tau limits dt
    c = Circuit(model, CircuitConfig(dt=1e-9, noise="cortical"))
    assert stable_dt_bound(c)[0] <= 2 * float(c.timescales.tau_z.min())


def test_bad_inputs_to_simulate():
    model, dec = counted_model()
    c = Circuit(model, CircuitConfig(dt=1e-4))
    for kwargs, exc in (({"x": torch.zeros(2, 5, dtype=F64)}, ValueError),
                        ({"x": torch.zeros(2, 6, dtype=F64), "z0": torch.zeros(2, 4, dtype=F64)}, ValueError),
                        ({"x": torch.zeros(2, 6, dtype=F64), "steps": 0}, ValueError),
                        ({"x": torch.zeros(2, 6, dtype=F64), "record_every": 0}, ValueError),
                        ({"x": torch.zeros(2, 6, dtype=F64), "online_lr": -1.0}, ValueError),
                        ({"x": torch.zeros(2, 6, dtype=F64), "z0": "posterior"}, ValueError),
                        ({"x": torch.full((2, 6), float("nan"), dtype=F64)}, ValueError)):
        kwargs.setdefault("steps", 10)
        kwargs.setdefault("record_every", 5)
        with pytest.raises(exc):
            c.simulate(**kwargs)
    assert dec.calls == 0
    with pytest.raises(ValueError, match="GaussianLikelihood"):
        Circuit(GenerativeModel(nn.Linear(3, 6), BernoulliLikelihood()), CircuitConfig(error_form="bogacz"))
    with pytest.raises(ValueError, match="noise sources"):
        Circuit(model, CircuitConfig(noise="thermal")).simulate_ode(torch.zeros(1, 6, dtype=F64))


# ----------------------------------------------------------------------------- divergence ----

class Cubic(nn.Module):
    """g(z) = 3 z^3 (n = d): the feedback 9 z^2 (x - g) / sigma^2 makes EM blow up from a large start."""

    latent_dim = 2

    def forward(self, z):
        return 3 * z**3


def test_divergence_names_step_and_unit_and_keeps_the_recording(tmp_path):
    model = GenerativeModel(Cubic(), GaussianLikelihood(0.5).double(), latent_dim=2)
    x = torch.zeros(3, 2, dtype=F64)
    z0 = torch.tensor([[0.1, 0.1], [0.1, 0.1], [0.1, 3.0]], dtype=F64)
    cfg = CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=2e-3, noise="none", check_every=50, record_buffer=4)
    path = tmp_path / "bad.h5"
    with pytest.raises(DivergenceError) as err:
        Circuit(model, cfg).simulate(x, z0, steps=2000, record_every=1, record_path=path)
    e = err.value
    assert e.step is not None and 0 < e.step < 2000
    # the log-joint of the recorded state overflows (-inf) before the state does: named as the output unit
    # with the largest prediction error; a state that overflows first is named as its value / error unit
    assert e.chain == 2 and e.unit in ("z[1]", "eps[1]", "x[1]")
    assert f"step {e.step}" in str(e) and "chain 2" in str(e)
    # the replay is exact: a check at every step finds the same first bad step
    with pytest.raises(DivergenceError) as err1:
        Circuit(model, CircuitConfig(**{**cfg.to_dict(), "check_every": 1})).simulate(x, z0, steps=2000, record_every=1)
    assert err1.value.step == e.step and err1.value.unit == e.unit
    with pytest.warns(RuntimeWarning, match="failed"):
        back = Trajectory.from_hdf5(path)
    assert len(back) > 0 and torch.isfinite(back.z).all()
    assert float(back.t[-1]) < e.step * cfg.dt
    assert read_status(path).startswith("failed: DivergenceError")
