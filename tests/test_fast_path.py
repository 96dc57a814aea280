"""The Langevin fast paths (neuro_lpc.fast) against the eager sampler.

CPU: the fused preconditioner function equals the eager in-place arithmetic to rounding; a whole training
chain through the fused step equals the eager chain (same generator) to rounding, gradients included;
divergence is named at the same step; fast="graphs" off CUDA is the eager sampler bit for bit. The
compiled kernel is checked against the eager function in a slow test (torch.compile takes a while here).
CUDA only (skipped here): the captured graph equals the eager chain without noise, and draws fresh
noise per block.
"""
import math

import pytest
import torch
from torch import nn

from neuro_lpc import DivergenceError, GaussianLikelihood, GenerativeModel, LangevinSampler
from neuro_lpc.fast import _block_size, precondition_update

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _eager_reference(z, m, s, n, t, gamma, beta, delta, max_gain, noise_scale, literal):
    """The in-place sequence of LangevinSampler._sample_ula (Algorithm 1 branch), verbatim."""
    z, m = z.clone(), m.clone()
    m.mul_(beta).addcmul_(s, s, value=1 - beta)
    m_hat = (m / (1 - beta**t)).sqrt_()
    G = 1.0 / (m_hat + delta)
    if max_gain is not None:
        G.clamp_(max=max_gain)
    z.addcmul_(G, s, value=gamma)
    noise_var = m_hat if literal else G
    gain = G.clone()
    z.addcmul_(noise_var.sqrt_(), n, value=noise_scale)
    return z, m, gain


@pytest.mark.parametrize("literal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_update_equals_the_eager_arithmetic(literal, dtype):
    g = torch.Generator().manual_seed(0)
    z, m, n = (torch.randn(64, 40, generator=g, dtype=dtype) for _ in range(3))
    m = m.abs()
    s = torch.randn(64, 40, generator=g, dtype=dtype) * torch.logspace(-8, 2, 40, dtype=dtype)  # cap binds at the small end
    m[:, :5] = 0
    for t in (1, 7, 300):
        ref = _eager_reference(z, m, s, n, t, 0.1, 0.25, 1e-8, 1e4, math.sqrt(0.2), literal)
        out = precondition_update(z, m, s, n, 1 - 0.25**t, 0.1, 0.25, 1e-8, 1e4, math.sqrt(0.2), literal)
        tol = dict(rtol=1e-6, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-13, atol=1e-12)
        for a, b in zip(out, ref):
            torch.testing.assert_close(a, b, **tol)
    assert (out[2] == 1e4).any()                      # the cap is exercised


def _model(dtype=torch.float64):
    torch.manual_seed(0)
    dec = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 20))
    return GenerativeModel(dec, GaussianLikelihood(0.3, learn_sigma=True), latent_dim=6).to(dtype)


def _run(fast, beta, T=40, seed=1, **kw):
    model = _model()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 20, generator=g, dtype=torch.float64)
    z0 = torch.randn(16, 6, generator=g, dtype=torch.float64)
    sampler = LangevinSampler(step_size=0.05, steps=T, precondition=beta, fast=fast, **kw)
    res = sampler.sample(model, x, z0, generator=torch.Generator().manual_seed(seed + 1), accumulate_grad=True,
                         track_moments=True)
    return res, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("beta", [None, 0.25])
def test_fused_training_chain_equals_the_eager_chain(beta):
    eager, g_eager = _run(None, beta)
    fused, g_fused = _run("fused-eager", beta)
    for name in ("z", "z_sum", "z_sqsum", "log_joint_sum", "gain"):
        a, b = getattr(fused, name), getattr(eager, name)
        if b is None:
            assert a is None
            continue
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)
    for a, b in zip(g_fused, g_eager):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert eager.z_sum.abs().max() > 1                # the chain moved: the comparison is not vacuous


def test_divergence_is_named_at_the_same_step():
    steps = {}
    for fast in (None, "fused-eager"):
        with pytest.raises(DivergenceError) as e:
            _diverge(fast)
        steps[fast] = e.value.step
    assert steps[None] == steps["fused-eager"] is not None


def _diverge(fast):
    model = _model()
    x = torch.randn(4, 20, dtype=torch.float64)
    sampler = LangevinSampler(step_size=100.0, steps=400, fast=fast, check_every=7)   # z -> -99 z per step: inf
    sampler.sample(model, x, torch.ones(4, 6, dtype=torch.float64), generator=torch.Generator().manual_seed(0))


def test_graphs_off_cuda_is_the_eager_sampler_bit_for_bit():
    eager, g_eager = _run(None, 0.25)
    graphs, g_graphs = _run("graphs", 0.25)
    assert torch.equal(graphs.z, eager.z) and all(torch.equal(a, b) for a, b in zip(g_graphs, g_eager))
    assert (eager.path, graphs.path) == ("eager", "eager: not on CUDA")


def test_each_result_says_which_path_ran_it():
    """SampleResult.path: the fused function ran for fast="fused-eager" (and no eager loop: a fast path that silently
    ran the eager loop would say "eager"); records and the frozen preconditioner fall back to eager, named."""
    fused, _ = _run("fused-eager", 0.25)
    assert fused.path == "fused-eager"
    model = _model()
    x, z0 = torch.randn(4, 20, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    rec = LangevinSampler(step_size=0.05, steps=10, precondition=0.25, fast="fused").sample(model, x, z0, record_every=5)
    assert rec.path == "eager: records of the trajectory"
    frozen = LangevinSampler(step_size=0.05, steps=10, precondition=0.25, preconditioner="frozen",
                             fast="fused-eager").sample(model, x, z0)
    assert frozen.path == "eager: the 'frozen' preconditioner"


def test_bad_fast_options_are_one_line_errors():
    with pytest.raises(ValueError, match="fast must be one of"):
        LangevinSampler(step_size=0.1, steps=10, fast="cudagraph")
    with pytest.raises(ValueError, match="graph_block"):
        LangevinSampler(step_size=0.1, steps=10, fast="graphs", graph_block=0)


def test_block_size_divides_the_chain():
    assert _block_size(300, 50) == 50 and _block_size(301, 50) == 43 and _block_size(7, 50) == 7
    assert all(300 % _block_size(300, b) == 0 for b in range(1, 400))


@pytest.mark.slow
def test_compiled_update_equals_eager_on_cpu():
    from neuro_lpc.fast import compiled_precondition_update

    g = torch.Generator().manual_seed(3)
    z, m, s, n = (torch.randn(64, 40, generator=g) for _ in range(4))
    m = m.abs()
    f = compiled_precondition_update()
    for t in (1, 2, 50):
        corr = 1 - torch.pow(0.25, torch.tensor(float(t), dtype=torch.float64))   # as the fast loop passes it
        ref = precondition_update(z, m, s, n, corr, 0.1, 0.25, 1e-8, 1e4, 0.5)
        out = f(z, m, s, n, corr, 0.1, 0.25, 1e-8, 1e4, 0.5)
        for a, b in zip(out, ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_compiled_training_chain_equals_the_eager_chain():
    """fast="fused" on a CPU is compiled too: the result says so, the compiled kernel served every step and dynamo
    captured a graph (a fused path that silently ran uncompiled or eager fails here)."""
    from torch._dynamo.utils import counters

    from neuro_lpc.fast import compiled_precondition_update

    eager, g_eager = _run(None, 0.25)
    calls = compiled_precondition_update().compiled_calls
    fused, g_fused = _run("fused", 0.25)            # compiled once; 1 - beta^t from the on-device step count
    assert fused.path == "fused"
    assert compiled_precondition_update().compiled_calls - calls == 40        # T = 40 steps, each through the kernel
    assert counters["stats"]["unique_graphs"] >= 1
    torch.testing.assert_close(fused.z, eager.z, rtol=1e-9, atol=1e-9)
    for a, b in zip(g_fused, g_eager):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------------- CUDA ----

def _cuda_run(fast, temperature, seed=0):
    model = _model(torch.float32).cuda()
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(16, 20, generator=g, device="cuda")
    z0 = torch.randn(16, 6, generator=g, device="cuda")
    sampler = LangevinSampler(step_size=0.05, steps=60, precondition=0.25, temperature=temperature, fast=fast,
                              graph_block=20)
    gen = torch.Generator(device="cuda").manual_seed(seed + 1)   # one generator for both calls, as a trainer has
    out = []
    for _ in range(2):   # the second call replays the cached graph
        res = sampler.sample(model, x, z0, generator=gen, accumulate_grad=True, track_moments=True)
        out.append((res, [p.grad.clone() for p in model.parameters()]))
        for p in model.parameters():
            p.grad = None
    return out


@cuda
def test_cuda_graph_chain_equals_eager_without_noise():
    eager = _cuda_run("fused-eager", 0.0)
    graphs = _cuda_run("graphs", 0.0)
    for (re, ge), (rg, gg) in zip(eager, graphs):
        torch.testing.assert_close(rg.z, re.z, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(rg.z_sum, re.z_sum, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(rg.gain, re.gain, rtol=1e-4, atol=1e-4)
        for a, b in zip(gg, ge):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@cuda
def test_cuda_graph_draws_fresh_noise_per_call_with_the_eager_spread():
    (r1, _), (r2, _) = _cuda_run("graphs", 1.0)
    (e1, _), _ = _cuda_run("fused-eager", 1.0)
    assert not torch.equal(r1.z, r2.z)               # the generator advanced between replays
    # the same law as the eager chain: mean square of the chain's moments agree within a factor 2
    ms_g, ms_e = (r1.z_sqsum / 60).mean(), (e1.z_sqsum / 60).mean()
    assert 0.5 < float(ms_g / ms_e) < 2.0


# --------------------------------------------------------------------------- circuits ----

def _circuit(decoder, tau_e, precondition=None):
    from circuits import Circuit, CircuitConfig

    torch.manual_seed(0)
    model = GenerativeModel(decoder, GaussianLikelihood(0.5))
    return Circuit(model, CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=tau_e, noise="ideal", precondition=precondition))


@pytest.mark.parametrize("decoder,tau_e,precondition", [
    (lambda: nn.Linear(5, 30), 2e-3, None),                                   # linear-plain-reduced (benchmark kernel)
    (lambda: nn.Linear(5, 30), 0.0, None),                                    # reduced adiabatic
    (lambda: nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 30)), 2e-3, "rms"),  # autograd, eps swap, gains
])
def test_circuit_block_schedule_equals_the_eager_loop(decoder, tau_e, precondition):
    """The graph path's bookkeeping (odd blocks swap buffers back, records between blocks, a tail after the
    last record) run eagerly equals Circuit.simulate bit for bit."""
    from circuits.fast import simulate_graphed

    c = _circuit(decoder(), tau_e, precondition)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(8, 30, generator=g)
    z0 = torch.randn(8, 5, generator=g)
    ref = c.simulate(x, z0, steps=52, record_every=7, generator=torch.Generator().manual_seed(9))
    out = simulate_graphed(c, x, z0, steps=52, record_every=7, generator=torch.Generator().manual_seed(9), _emulate=True)
    assert out.attrs["fast"] == "emulated"
    assert torch.equal(out.t, ref.t) and torch.equal(out.z, ref.z) and torch.equal(out.log_joint, ref.log_joint)
    for k, v in ref.extras.items():
        assert torch.equal(out.extras[k], v), k
    assert out.z.shape[0] == 7 and not torch.equal(out.z[0], out.z[-1])


def test_circuit_graphs_off_cuda_fall_back_to_eager():
    from circuits.fast import graph_unsupported_reason, simulate_graphed

    c = _circuit(nn.Linear(5, 30), 2e-3)
    x, z0 = torch.randn(4, 30), torch.randn(4, 5)
    out = simulate_graphed(c, x, z0, steps=20, record_every=5, generator=torch.Generator().manual_seed(1))
    ref = c.simulate(x, z0, steps=20, record_every=5, generator=torch.Generator().manual_seed(1))
    assert out.attrs["fast"] == "eager: not on CUDA" and torch.equal(out.z, ref.z)
    assert "bias-corrected" in (graph_unsupported_reason(_circuit(nn.Linear(5, 30), 2e-3, 0.5)) or "") or \
        not torch.cuda.is_available()


@cuda
def test_circuit_graph_on_cuda_without_noise_equals_eager():
    from circuits import Circuit, CircuitConfig
    from circuits.fast import simulate_graphed

    torch.manual_seed(0)
    model = GenerativeModel(nn.Linear(5, 30), GaussianLikelihood(0.5)).cuda()
    c = Circuit(model, CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=2e-3, noise="none"))
    x, z0 = torch.randn(8, 30, device="cuda"), torch.randn(8, 5, device="cuda")
    ref = c.simulate(x, z0, steps=105, record_every=7)
    out = simulate_graphed(c, x, z0, steps=105, record_every=7)
    assert out.attrs["fast"] == "graphs"
    torch.testing.assert_close(out.z, ref.z, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.log_joint, ref.log_joint, rtol=1e-4, atol=1e-3)


class _NaNForChain(nn.Module):
    """A decoder that returns NaN for chain 2 once |z| of that chain passes a threshold."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 20).double()

    def forward(self, z):
        out = self.lin(z)
        if z.shape[0] <= 2:                               # the output-shape probe (batch 1)
            return out
        poison = torch.zeros_like(out)
        poison[2] = torch.where(z[2].abs().sum() > 1e9, torch.nan, 0.0)
        return out + poison


def test_fused_path_names_the_chain_whose_decoder_returns_nan():
    model = GenerativeModel(nn.Linear(6, 20).double(), GaussianLikelihood(0.3), latent_dim=6)
    model.decoder = _NaNForChain()
    x = torch.randn(4, 20, dtype=torch.float64)
    z0 = torch.zeros(4, 6, dtype=torch.float64)
    z0[2] = 2e9                                       # chain 2 starts where its decoder output is NaN
    with pytest.raises(DivergenceError) as e:
        LangevinSampler(step_size=0.01, steps=20, fast="fused-eager", check_every=5).sample(
            model, x, z0, generator=torch.Generator().manual_seed(0))
    assert e.value.step == 1 and e.value.chain == 2


def test_train_config_fast_reaches_the_sampler_and_bad_values_are_refused(tmp_path):
    from neuro_lpc import TrainConfig
    from neuro_lpc.cli import train_main
    from neuro_lpc.train import LPCTrainer

    model = _model()
    enc = nn.Linear(20, 12).double()
    tr = LPCTrainer(model, enc, TrainConfig(fast="graphs", latent_dim=6, likelihood="gaussian", device="cpu"))
    assert tr.sampler.fast == "graphs"
    assert train_main(["--out", str(tmp_path / "r"), "--fast", "cudagraphs"]) == 2
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


def test_graph_body_with_the_on_device_step_counter_equals_the_eager_chain():
    """The step body the CUDA graph captures (on-device t for 1 - beta^t, ring slots per block), run eagerly."""
    from neuro_lpc.fast import _Chain, _finish

    eager, g_eager = _run(None, 0.25, T=40)
    model = _model()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 20, generator=g, dtype=torch.float64)
    z0 = torch.randn(16, 6, generator=g, dtype=torch.float64)
    sampler = LangevinSampler(step_size=0.05, steps=40, precondition=0.25)
    chain = _Chain(sampler, model, x, z0, torch.Generator().manual_seed(2), True, True, precondition_update, 8,
                   device_t=True)
    chain.reset(x, z0)
    for t in range(40):
        chain.step(t % 8)
    assert isinstance(chain.t, torch.Tensor) and float(chain.t) == 40
    res = _finish(sampler, chain, 40, 16, None, [None] * len(chain.params), "graphs")
    torch.testing.assert_close(res.z, eager.z, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(res.gain, eager.gain, rtol=1e-10, atol=1e-10)
    for p, b in zip(chain.params, g_eager):
        torch.testing.assert_close(p.grad, b, rtol=1e-10, atol=1e-10)


def test_circuit_simulate_fast_option():
    c = _circuit(nn.Linear(5, 30), 2e-3)
    x, z0 = torch.randn(4, 30), torch.randn(4, 5)
    out = c.simulate(x, z0, steps=20, record_every=5, generator=torch.Generator().manual_seed(1), fast="graphs")
    ref = c.simulate(x, z0, steps=20, record_every=5, generator=torch.Generator().manual_seed(1))
    assert out.attrs["fast"] == "eager: not on CUDA" and torch.equal(out.z, ref.z)   # a CPU model: the eager loop
    with pytest.raises(ValueError, match="fast must be None or 'graphs'"):
        c.simulate(x, z0, steps=20, fast="cudagraphs")
    with pytest.raises(ValueError, match="sampling only: drop accumulate_grad"):
        c.simulate(x, z0, steps=20, fast="graphs", accumulate_grad=True)
