"""The Euler-Maruyama loop (circuits.integrate, circuits._loop): trajectories and HDF5 streaming, bad
arguments to simulate, divergence named at its first step and unit."""
import pytest
import torch
from torch import nn

from circuits import Circuit, CircuitConfig
from problems import F64, counted_model, linear_model
from neuro_lpc import BernoulliLikelihood, DivergenceError, GaussianLikelihood, GenerativeModel
from neuro_lpc.record import Trajectory, read_status


pytestmark = pytest.mark.usefixtures("single_thread")


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
