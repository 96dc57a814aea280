"""Every learning mode (circuits.modes.LEARNING_MODES) changes training as documented (issue 18, part 2).

* ``deploy``: training is digital -- the weight-device sources are off while learning, so the parameters equal those
  of training without them, bit for bit -- and scoring programs the trained weights once: the deployed weights are
  (w + std w_max xi) ((t + t0)/t0)^-nu at the stated time t since programming.
* ``hardware-aware``: every presentation runs on that batch's freshly programmed array (``batch_array()``), read at
  the deployment horizon: the weights the presentation reads are that array's reads, (w + std w_max xi)
  ((t_start + t0)/t0)^-nu with a fresh xi per batch. A ``present()`` that ignored the per-batch array (the digital
  weights, or the one array a stand-alone circuit programs from the seed) fails.
* ``in-memory``: the first write programs the initial weights with programming noise; later writes are pulses only,
  so one batch moves each weight by Adam's first step (at most lr), not by a new programming draw.

Tolerances on programming draws: 5 standard errors of the mean (1/sqrt(N)) and of the std (1/sqrt(2N)) of N weights.
"""
import math

import pytest
import torch

from circuits import Circuit
from circuits.learn import CircuitTrainConfig, CircuitTrainer
from circuits.modes import LEARNING_MODES
from neuro_lpc.data import load_dataset
from problems import tiny_image_model

pytestmark = pytest.mark.usefixtures("single_thread")

D = 8
STD, NU, T_START = 0.05, 0.05, 3600.0


@pytest.fixture(scope="module")
def animal():
    train, _, _ = load_dataset("animal-mnist")
    return train


def tiny_model(seed=0):
    return tiny_image_model(D, seed)


def train_cfg(noise, **kw):
    base = dict(batch_size=32, langevin_steps=6, max_batches_per_epoch=3, prior_init_batches=2, sample_grid=0,
                step_size=0.05, precondition=None, seed=5, device="cpu", tau_e=0.0, noise=noise, lr=3e-3)
    base.update(kw)
    return CircuitTrainConfig(**base)


def device_noise(t0=20.0, std=STD):
    """Constant programming noise (relative std) and drift with one exponent nu: closed-form reads."""
    return {"preset": "ideal", "sources": [{"type": "weight_programming", "model": "constant", "std": std},
                                           {"type": "drift", "nu": NU, "t_start": T_START, "t0": t0}]}


def programming_xi(read, w, factor, std=STD):
    """The standardised programming draw behind a read: (read / drift factor - w) / (std w_max)."""
    return (read / factor - w) / (std * float(w.abs().max()))


def assert_standard_normal(xi):
    n = xi.numel()
    assert abs(float(xi.mean())) < 5 / math.sqrt(n), float(xi.mean())
    assert abs(float(xi.std()) - 1) < 5 / math.sqrt(2 * n), float(xi.std())


def test_the_learning_modes_are_the_three_tested_here():
    # "in-memory-local" (issue 17) is tested in tests/test_local_update.py
    assert LEARNING_MODES == ("deploy", "hardware-aware", "in-memory", "in-memory-local")


@pytest.mark.parametrize("t0", [20.0, 2.0])
def test_hardware_aware_presentation_reads_the_per_batch_array(animal, t0):
    """learning="hardware-aware" (and drift t0 through the trainer): what present() reads -- the weights of the circuit
    it ran, and its trajectory -- is batch_array()'s fresh programming of that batch, read at the deployment horizon:
    read = (w + std w_max xi) ((t_start + t0)/t0)^-nu (0.771 at t0 = 20 s, 0.688 at t0 = 2 s), xi standard normal and
    independent from one batch to the next. A present() on the digital weights, on the seed's one programming, or a
    drift that ignored t0 fails."""
    model, enc = tiny_model()
    tr = CircuitTrainer(model, enc, train_cfg(device_noise(t0), learning="hardware-aware"))
    x = torch.stack([animal[i][0] for i in range(16)])
    z0 = model.prior_sample(16, torch.Generator().manual_seed(1))
    factor = ((T_START + t0) / t0) ** -NU
    digital = {n: p.detach().clone() for n, p in model.decoder.named_parameters()}
    xis = []
    for step in (0, 1):
        tr.global_step = step
        state = tr.generator.get_state()
        traj = tr.present(x, z0)
        model.zero_grad(set_to_none=True)
        arr = tr.batch_array()                              # the array of this batch (a deterministic stream)
        fwd, _ = tr.circuit.effective_weights(0.0)
        assert tr.circuit.array is not None and arr.names == ["0.weight", "2.weight"]
        for n in arr.names:
            torch.testing.assert_close(fwd[n], arr.read(n), rtol=0, atol=0)
            xi = programming_xi(fwd[n], digital[n], factor)
            assert_standard_normal(xi)
        xis.append(programming_xi(fwd["2.weight"], digital["2.weight"], factor).flatten())
        for n in ("0.bias", "2.bias"):                     # biases stay digital (include_bias False)
            assert torch.equal(fwd[n], digital[n])
        # the presentation's trajectory is that of a circuit on this array, with the same random numbers
        gen = torch.Generator().manual_seed(0)
        gen.set_state(state)
        replay = Circuit(model, tr.circuit_config, array=arr).simulate(
            x, z0, steps=tr.config.resolved_steps, record_every=tr.config.record_every, generator=gen,
            accumulate_grad=True, records="device")
        model.zero_grad(set_to_none=True)
        torch.testing.assert_close(traj.z, replay.z, rtol=0, atol=0)
    corr = float(torch.corrcoef(torch.stack(xis))[0, 1])
    assert abs(corr) < 5 / math.sqrt(xis[0].numel()), corr    # a fresh programming draw per batch


def test_deploy_trains_digitally_and_scores_on_a_fresh_programming(animal):
    """learning="deploy": the weight-device sources are off while learning, so three batches give exactly the
    parameters of training without them (noise "ideal"); hardware-aware training with the same sources does not.
    Scoring programs the trained weights once: deployed(t) reads (w + std w_max xi) ((t + t0)/t0)^-nu, t the time
    since programming (60 s and 1 day here), xi standard normal and the same draw at both times."""
    (m1, e1), (m2, e2), (m3, e3) = tiny_model(), tiny_model(), tiny_model()
    dep = CircuitTrainer(m1, e1, train_cfg(device_noise(), learning="deploy"))
    dep.fit(animal, progress=False)
    CircuitTrainer(m2, e2, train_cfg("ideal")).fit(animal, progress=False)
    CircuitTrainer(m3, e3, train_cfg(device_noise(), learning="hardware-aware")).fit(animal, progress=False)
    for (n, a), (_, b), (_, c) in zip(m1.named_parameters(), m2.named_parameters(), m3.named_parameters()):
        assert torch.equal(a, b), n
    gap = max(float((a - c).detach().abs().max()) for a, c in zip(m2.parameters(), m3.parameters()))
    assert gap > 1e-4, gap                                    # the sources matter when they are on
    w = {n: p.detach() for n, p in m1.decoder.named_parameters()}
    draws = []
    for t in (60.0, 86400.0):
        params = dict(dep.deployed(t=t).decoder.inner.named_parameters())
        factor = ((t + 20.0) / 20.0) ** -NU
        xi = programming_xi(params["2.weight"], w["2.weight"], factor)
        assert_standard_normal(xi)
        draws.append(xi)
        assert torch.equal(params["2.bias"], w["2.bias"])
    # one programming, read at two ages: the same xi up to float32 rounding of the read and of read / factor
    # (a few ulp of |w| <= w_max, i.e. ~ 4 eps_32 / std in units of xi); another draw would differ by ~ sqrt(2)
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=4 * torch.finfo(torch.float32).eps / STD)


def test_in_memory_programs_once_then_writes_by_pulses(animal):
    """learning="in-memory" with programming noise (std 0.2) and near-exact pulses: the first write stores
    w0 + 0.2 w_max xi (xi standard normal) and the digital copy is set to it; a batch then moves every stored weight by
    Adam's first step, lr g / (|g| + eps), so by at most lr (3e-3) and by > lr/2 where the gradient is not tiny --
    a new programming draw per write would move them by ~0.2 w_max (~0.03), and no pulses by nothing."""
    exact_pulses = {"type": "pulsed", "dw_min": 1e-7, "dw_min_dtod": 0.0, "dw_min_std": 0.0, "up_down": 0.0,
                    "max_pulses": None, "w_max": 10.0, "w_min": -10.0}
    noise = {"preset": "ideal", "sources": [{"type": "weight_programming", "model": "constant", "std": 0.2},
                                            exact_pulses]}
    model, enc = tiny_model()
    w0 = {n: p.detach().clone() for n, p in model.decoder.named_parameters()}
    cfg = train_cfg(noise, learning="in-memory", max_batches_per_epoch=1, grad_clip=None)
    tr = CircuitTrainer(model, enc, cfg)
    params = dict(model.decoder.named_parameters())
    for n in tr.array.names:
        torch.testing.assert_close(params[n].detach(), tr.array.stored[n], rtol=0, atol=0)
        assert_standard_normal(programming_xi(tr.array.stored[n], w0[n], 1.0, std=0.2))
    before = {n: tr.array.stored[n].clone() for n in tr.array.names}
    tr.fit(animal, progress=False)
    for n in tr.array.names:
        delta = (tr.array.stored[n] - before[n]).abs()
        # bound: lr, plus one pulse (the write's resolution, scale * dw_min in weight units) and the float32 rounding
        # of stored weights and of their difference (2 ulp of the largest |w|)
        slack = tr.array.scale[n] * 1e-7 + 2 * torch.finfo(torch.float32).eps * float(before[n].abs().max())
        assert float(delta.max()) <= cfg.lr + slack, (n, float(delta.max()))
        g = params[n].grad.abs()
        moved = delta[g > 1e3 * tr.optimizer.param_groups[0]["eps"]]
        assert moved.numel() > 0.5 * delta.numel() and float(moved.min()) > cfg.lr / 2, n
