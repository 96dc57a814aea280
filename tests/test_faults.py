"""Numerical faults (issue 10, section 5): non-finite pixels are refused up front; a decoder that turns
NaN (or saturates to inf) for one chain stops the Langevin sampler and the circuit with the step, the
chain and the unit named, instead of finishing with NaN log-joints (a recording is then not "complete")."""
import h5py
import pytest
import torch
from torch import nn

from circuits import Circuit, CircuitConfig
from neuro_lpc import BernoulliLikelihood, DivergenceError, GaussianLikelihood, GenerativeModel, LangevinSampler
from neuro_lpc.record import read_status

F64 = torch.float64
B, D, N = 4, 3, 6


class TurnsBad(nn.Module):
    """A linear decoder whose output unit ``unit`` of chain ``chain`` becomes ``value`` from call ``after + 1``
    on (``torch.where``: the score of that chain does not see it, so z stays finite)."""

    def __init__(self, after, value=float("nan"), chain=1, unit=4):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.lin = nn.Linear(D, N).double()
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(N, D, generator=g, dtype=F64) * 0.3)
        self.after, self.value, self.chain, self.unit, self.calls = after, value, chain, unit, 0
        self.latent_dim = D

    def forward(self, z):
        self.calls += 1
        out = self.lin(z)
        if self.calls > self.after and z.shape[0] > self.chain:
            mask = torch.zeros_like(out, dtype=torch.bool)
            mask[self.chain, self.unit] = True
            out = torch.where(mask, torch.full_like(out, self.value), out)
        return out


def model(after, value=float("nan"), bernoulli=False):
    lik = BernoulliLikelihood() if bernoulli else GaussianLikelihood(0.5)
    m = GenerativeModel(TurnsBad(after, value), lik.double(), latent_dim=D)
    m.output_shape            # the shape probe (one decoder call) before counting
    m.decoder.calls = 0
    return m


def x_data(bernoulli=False):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, N, generator=g, dtype=F64)
    return (x > 0).to(F64) if bernoulli else x


def test_non_finite_pixels_are_refused_before_any_step():
    m = model(after=10**9)
    x = x_data()
    x[2, 3] = float("nan")
    x[3, 0] = float("inf")
    with pytest.raises(ValueError, match=r"x contains 2 non-finite value\(s\).*sample 2 at unit x\[3\] = nan"):
        LangevinSampler(0.05, 10).sample(m, x, torch.zeros(B, D, dtype=F64))
    assert m.decoder.calls == 0


@pytest.mark.parametrize("value,bernoulli", [(float("nan"), False), (float("inf"), True)])
@pytest.mark.parametrize("accumulate", [False, True])
def test_a_decoder_turning_bad_for_one_chain_stops_the_sampler_naming_step_chain_and_unit(value, bernoulli, accumulate):
    """The decoder goes bad at its 13th call = the log-joint of step 13; the check every 10 steps finds it at
    the check of step 20 and names step 13, chain 1 and output unit x[4]."""
    m = model(after=12, value=value, bernoulli=bernoulli)
    before = [torch.full_like(p, 7.0) for p in m.parameters()]
    for p, g in zip(m.parameters(), before):
        p.grad = g.clone()
    s = LangevinSampler(0.05, 40, check_every=10)
    with pytest.raises(DivergenceError, match=r"step 13: non-finite log p\(x, z\) in chain 1 .*output unit x\[4\]") as e:
        s.sample(m, x_data(bernoulli), torch.zeros(B, D, dtype=F64), generator=torch.Generator().manual_seed(0),
                 accumulate_grad=accumulate)
    assert (e.value.step, e.value.chain, e.value.unit) == (13, 1, "x[4]")
    assert "\n" not in str(e.value)
    for p, g in zip(m.parameters(), before):      # the caller's gradients are left as they were
        assert torch.equal(p.grad, g)


def test_a_healthy_decoder_runs_unchanged():
    m = model(after=10**9)
    r = LangevinSampler(0.05, 40, check_every=10).sample(m, x_data(), torch.zeros(B, D, dtype=F64), record_every=5,
                                                          generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(r.log_joint_trace).all()


def circuit(m, **kw):
    return Circuit(m, CircuitConfig(dt=1e-3, tau_z=1e-2, tau_e=0.0, noise="ideal", check_every=20, **kw))


@pytest.mark.parametrize("record_every,step", [(1, 28), (5, 30)])
def test_the_circuit_stops_when_a_chain_log_joint_turns_non_finite_with_a_finite_state(record_every, step):
    """A Bernoulli decoder saturating to +inf for chain 1: the error x - sigmoid(inf) and so the state stay
    finite, the recorded log-joint is -inf. The decoder's calls: one for the initial state, then the forward
    of step k (call k + 1), which also measures the record of the state z(k - 1). Bad from call 30 = step 29's
    forward, the first bad record is that of step 28 (every step recorded) or step 30 (every 5th), named
    with chain 1 and output unit x[4]."""
    m = model(after=29, value=float("inf"), bernoulli=True)
    c = circuit(m)
    m.decoder.calls = 0
    with pytest.raises(DivergenceError, match=rf"step {step} .*log p\(x, z\) of chain 1 .*output unit x\[4\]") as e:
        c.simulate(x_data(True), torch.zeros(B, D, dtype=F64), steps=100, record_every=record_every,
                   generator=torch.Generator().manual_seed(0))
    assert (e.value.step, e.value.chain, e.value.unit) == (step, 1, "x[4]")


def test_a_nan_decoder_in_a_streamed_circuit_run_leaves_a_failed_readable_recording(tmp_path):
    m = model(after=29, value=float("nan"))
    path = tmp_path / "run.h5"
    with pytest.raises(DivergenceError) as e:
        circuit(m, record_buffer=2).simulate(x_data(), torch.zeros(B, D, dtype=F64), steps=100, record_every=5, record_path=path,
                            generator=torch.Generator().manual_seed(0))
    assert e.value.chain == 1 and e.value.step is not None and e.value.unit is not None
    status = read_status(path)
    assert status.startswith("failed: DivergenceError") and status != "complete"
    with h5py.File(path, "r") as f:                   # the records before the bad step, and only those, were written
        steps_written = f["t"][:] / 1e-3
        assert len(steps_written) >= 2 and (steps_written < e.value.step - 1e-6).all()
        assert torch.isfinite(torch.as_tensor(f["log_joint"][:])).all()
