"""Learning from circuit trajectories (accumulate_grad, online_lr; circuits.run, circuits.weights):
the adiabatic gradients are discrete LPC's, online learning moves the weights by the accumulated
gradient, and a learned sigma works with finite tau_e."""
import warnings

import pytest
import torch
from torch import nn

from circuits import Circuit, CircuitConfig
from problems import F64, conv_model, linear_model
from neuro_lpc import GaussianLikelihood, GenerativeModel, LangevinSampler


pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------------------ learning ----

def test_adiabatic_decoder_gradients_equal_discrete_lpc():
    """accumulate_grad: the same grad_theta log p(x, z(t-1)) sums as LangevinSampler (learned sigma too)."""
    model = conv_model(4, seed=5, learn_sigma=True)
    x = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    z0 = torch.randn(5, 4, generator=torch.Generator().manual_seed(2), dtype=F64)
    gamma, tau_z, steps = 0.02, 0.01, 20
    LangevinSampler(step_size=gamma, steps=steps).sample(model, x, z0, generator=torch.Generator().manual_seed(3),
                                                        accumulate_grad=True)
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    for rule in ("hebbian", "exact"):
        circuit = Circuit(model, CircuitConfig(dt=gamma * tau_z, tau_z=tau_z, tau_e=0.0, learning_rule=rule))
        circuit.simulate(x, z0, steps=steps, generator=torch.Generator().manual_seed(3), accumulate_grad=True)
        for p, r in zip(model.parameters(), ref):
            torch.testing.assert_close(p.grad, r, rtol=1e-9, atol=1e-12)
        model.zero_grad(set_to_none=True)


def test_online_learning_moves_weights_by_the_accumulated_gradient():
    """theta += lr * mean_b grad each step, so the total move is -lr * steps * (the accumulated .grad)."""
    model, x1 = linear_model(3, 6, 0.5, seed=4)
    x = x1.expand(8, -1)
    w0 = model.decoder.weight.detach().clone()
    circuit = Circuit(model, CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=2e-3))
    steps, lr = 200, 1e-3
    circuit.simulate(x, steps=steps, accumulate_grad=True, online_lr=lr)
    assert circuit.state["kernel"] == "autograd"
    moved = model.decoder.weight.detach() - w0
    assert moved.abs().max() > 0
    torch.testing.assert_close(moved, -lr * steps * model.decoder.weight.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("lik", ["gaussian", "discretized"])
@pytest.mark.parametrize("noise", ["ideal", "thermal"])
def test_learning_with_finite_tau_e_and_a_learned_sigma(lik, noise):
    """accumulate_grad with finite tau_e and a learnable sigma: runs without a warning, and with the "exact"
    rule every gradient is -1/(B steps) sum_t grad_theta log p(x, z(t-1)) at the recorded states; "hebbian"
    gives the same sigma gradient (it comes from log p directly) and finite decoder gradients."""
    from neuro_lpc import DiscretizedGaussianLikelihood
    torch.manual_seed(30)
    dec = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 6)).double()
    likelihood = GaussianLikelihood(0.3, learn_sigma=True) if lik == "gaussian" else DiscretizedGaussianLikelihood()
    model = GenerativeModel(dec, likelihood.double(), latent_dim=3)
    g = torch.Generator().manual_seed(0)
    x = torch.round((torch.rand(4, 6, generator=g, dtype=F64) + 0.5) * 127.5) / 127.5 - 1  # bin centres
    z0 = torch.randn(4, 3, generator=g, dtype=F64)
    steps = 5
    grads = {}
    for rule in ("exact", "hebbian"):
        model.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. float() of a sigma that requires grad
            circuit = Circuit(model, CircuitConfig(tau_e=2e-3, dt=1e-4, noise=noise, learning_rule=rule))
            traj = circuit.simulate(x, z0, steps=steps, record_every=1, accumulate_grad=True)
        grads[rule] = [p.grad.clone() for p in model.parameters()]
        for p in model.parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().max() > 0
    # reference: the states before each step are z0, z(1), ..., z(steps - 1)
    zs = torch.cat([z0[None], traj.z[:-1]]).reshape(-1, 3)
    model.zero_grad(set_to_none=True)
    loss = -model.log_joint(x.repeat(steps, 1), zs).sum() / (x.shape[0] * steps)
    loss.backward()
    ref = [p.grad.clone() for p in model.parameters()]
    for got, r in zip(grads["exact"], ref):
        torch.testing.assert_close(got, r, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grads["hebbian"][-1], ref[-1], rtol=1e-9, atol=1e-12)  # log sigma
    # without learning too (the linear kernel with noise sources, a learnable sigma)
    lm, x1 = linear_model(3, 5, 0.5, seed=31, learn_sigma=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Circuit(lm, CircuitConfig(tau_e=2e-3, dt=1e-4, noise=noise)).simulate(x1.expand(2, -1), steps=5, record_every=5)
