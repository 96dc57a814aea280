"""The kernels of a run (circuits.run.KERNELS, circuits.kernels_linear, circuits.kernels_general): each selected
directly on the same circuit gives the same chain, records and final error units; the chooser picks the fastest
that can run a circuit, and a kernel that cannot is refused with the reason."""
import pytest
import torch

from circuits import Circuit, CircuitConfig
from circuits.bound import BoundCircuit
from circuits.integrate import run_em
from circuits.run import KERNELS, choose_kernel
from problems import F64, linear_model, mlp_model


pytestmark = pytest.mark.usefixtures("single_thread")


def _inputs(d, n, B=4):
    x = 0.3 * torch.randn(B, n, generator=torch.Generator().manual_seed(1), dtype=F64)
    z0 = torch.randn(B, d, generator=torch.Generator().manual_seed(2), dtype=F64)
    return x, z0


@pytest.mark.parametrize("d, n", [(3, 7), (6, 4)])
@pytest.mark.parametrize("tau_e", [2e-3, 0.0])
@pytest.mark.parametrize("form", ["error", "bogacz"])
def test_every_kernel_gives_the_same_chain(d, n, tau_e, form):
    """All four kernels on the linear Gaussian circuit, each forced by name: the folded recursions (direct and
    reduced basis, whatever d vs n), the explicit matmuls and autograd agree to float64 rounding -- chain, log
    joint, error units -- with the same seeded noise."""
    model, x1 = linear_model(d, n, 0.5, seed=20)
    x, z0 = _inputs(d, n)
    x = x + x1
    circuit = Circuit(model, CircuitConfig(dt=2e-4, tau_z=1e-2, tau_e=tau_e, error_form=form))
    out = {}
    for name in KERNELS:
        traj, state = run_em(circuit, x, z0, steps=300, record_every=7, record_eps=True, kernel=name)
        assert state["kernel"] == name == traj.attrs["kernel"]
        out[name] = (traj, state)
    ref, ref_state = out["autograd"]
    for name, (traj, state) in out.items():
        torch.testing.assert_close(traj.z, ref.z, rtol=0, atol=1e-11, msg=lambda m, n=name: f"{n}: {m}")
        torch.testing.assert_close(traj.log_joint, ref.log_joint, rtol=1e-12, atol=1e-9)
        for key in ("eps", "error_norm"):
            torch.testing.assert_close(traj.extras[key], ref.extras[key], rtol=1e-10, atol=1e-9)
        torch.testing.assert_close(state["eps"], ref_state["eps"], rtol=1e-10, atol=1e-9)
    # the chain moved: agreement is not that of a frozen state
    assert (ref.z[-1] - z0).abs().max() > 0.05


@pytest.mark.parametrize("config, learning, expected", [
    ({}, False, "linear-plain-reduced"),                                             # d = 3 < n = 7
    ({"noise": "thermal"}, False, "linear"),                                         # a noise source
    ({"timescales": {"name": "mismatch", "sigma": 0.1}}, False, "linear"),          # per-unit time constants
    ({"precondition": 0.9, "tau_e": 0.0}, False, "linear"),                          # gain units
    ({}, True, "autograd"),                                                          # learning
])
def test_the_chooser_picks_the_fastest_kernel_that_can_run(config, learning, expected):
    model, _ = linear_model(3, 7, 0.5)
    assert choose_kernel(BoundCircuit(model, CircuitConfig(dt=1e-4, **config)), learning) == expected
    wide, _ = linear_model(6, 4, 0.5)
    assert choose_kernel(BoundCircuit(wide, CircuitConfig(dt=1e-4)), False) == "linear-plain"   # d >= n: direct
    mlp = mlp_model()
    assert choose_kernel(BoundCircuit(mlp, CircuitConfig(dt=1e-4)), False) == "autograd"


def test_a_kernel_that_cannot_run_the_circuit_is_refused_with_the_reason():
    x, z0 = _inputs(3, 6, B=2)
    mlp = Circuit(mlp_model(), CircuitConfig(dt=1e-4))
    with pytest.raises(ValueError, match="kernel 'linear' cannot run this circuit: the decoder is not an nn.Linear"):
        run_em(mlp, x, z0, steps=2, record_every=1, kernel="linear")
    model, _ = linear_model(3, 6, 0.5)
    noisy = Circuit(model, CircuitConfig(dt=1e-4, noise="thermal"))
    with pytest.raises(ValueError, match="linear-plain.*noise sources thermal"):
        run_em(noisy, x, z0, steps=2, record_every=1, kernel="linear-plain")
    with pytest.raises(ValueError, match="learning"):
        run_em(Circuit(model, CircuitConfig(dt=1e-4)), x, z0, steps=2, record_every=1, accumulate_grad=True,
               kernel="linear")
    with pytest.raises(ValueError, match="kernel must be one of"):
        run_em(noisy, x, z0, steps=2, record_every=1, kernel="euler")
