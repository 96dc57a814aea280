"""The cheaper circuit training step (issue 14: a circuit row under ``analog`` against discrete LPC's optimiser step)
computes the same numbers as the code it replaced, bit for bit:

* the likelihood's one-pass evaluator (``DiscretizedGaussianLikelihood.bind``) instead of log_prob / error / a
  backward for sigma (tests/test_likelihoods.py checks the evaluator alone);
* straight-through leaves p + (w - p) instead of the graph p + (w - p.detach()), built one tensor at a time, and
  kept from step to step while what they are a function of is unchanged (``RunWeights._key``);
* the drift factor of a tensor with one write time from one log (tests/test_array.py);
* the read-noise patch norm from a few all-ones output channels (tests/test_array.py);
* frozen draws kept across the circuits a trainer builds (``Circuit(frozen_cache=...)``);
* no initial e(x, g(z0)) in a learning run with adiabatic error units (settled afresh in every step).

Each is swapped back for the former code here (the references below are that code) and two optimiser steps of the
circuit trainer are compared: parameters, encoder, metrics and the last state.
"""
import contextlib

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import circuits.learn as learn
import circuits.noise.arrays as devices
import circuits.run_weights as run_weights
from circuits import Circuit, CircuitConfig
from circuits.learn import CircuitTrainConfig, CircuitTrainer
from neuro_lpc import likelihoods
from neuro_lpc.train import build_model

pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------ the former code, as references
def _base_reference(self, t):
    out = {}
    arr = self.array
    with torch.no_grad():
        for name, p in self.params.items():
            w = arr.read(name, t) if (arr is not None and name in arr.stored) else p.detach()
            for hook in self.static:
                w = hook(name, w)
            out[name] = w
    return out


def _build_reference(self, t, gen):
    fwd = {}
    with torch.no_grad():
        for name, w in self.base(t).items():
            for hook in self.dynamic:
                w = hook(name, w, t, gen)
            fwd[name] = w
    if self.learning:
        with torch.enable_grad():
            fwd = {name: p + (fwd[name] - p.detach()) for name, p in self.params.items()}
    if self.fb_static:
        fb = {}
        with torch.no_grad():
            for name, w in fwd.items():
                w = w.detach()
                for hook in self.fb_static:
                    w = hook(name, w)
                fb[name] = w
        if self.learning:
            with torch.enable_grad():
                fb = {name: fwd[name] + (fb[name] - fwd[name].detach()) for name in fwd}
    else:
        fb = fwd
    self.fwd, self.fb = fwd, fb


def _drift_factor_reference(self, name, t=0.0):
    if self.drift is None:
        return None
    age = (self.clock + t - self.t_write[name]).clamp(min=0)
    f = torch.exp(-self.nu[name] * torch.log((age + self.drift.t0) / self.drift.t0))
    return f / f.mean() if self.drift.compensate else f


def _read_reference(self, name, t=0.0):
    f = self.drift_factor(name, t)
    return self.stored[name] if f is None else self.stored[name] * f


def _read_noise_std_reference(module, x, sigma):
    ones, x2 = torch.ones_like(module.weight), x.detach() * x.detach()
    if isinstance(module, nn.Linear):
        sq = F.linear(x2, ones)
    elif isinstance(module, nn.ConvTranspose2d):
        sq = F.conv_transpose2d(x2, ones, None, module.stride, module.padding, module.output_padding, module.groups,
                                module.dilation)
    else:
        sq = F.conv2d(x2, ones, None, module.stride, module.padding, module.dilation, module.groups)
    return sq.clamp_(min=0).sqrt_().mul_(sigma)


def _build_circuit_reference(self, array=None):
    return Circuit(self.model, self.circuit_config, array=array, noise_state=self.noise_state)


@contextlib.contextmanager
def _former_code(monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(run_weights.RunWeights, "_build", _build_reference)
        m.setattr(run_weights.RunWeights, "base", _base_reference)
        m.setattr(devices.AnalogArray, "drift_factor", _drift_factor_reference)
        m.setattr(devices.AnalogArray, "read", _read_reference)
        m.setattr(devices, "read_noise_std", _read_noise_std_reference)
        m.setattr(learn.CircuitTrainer, "build_circuit", _build_circuit_reference)
        m.delattr(likelihoods.DiscretizedGaussianLikelihood, "bind")   # log_prob / error / autograd, as before
        yield


def _train(kw, steps=2):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (8, 1, 28, 28), generator=g).float() / 127.5 - 1
    cfg = CircuitTrainConfig(**{**dict(batch_size=8, langevin_steps=3, step_size=0.1, precondition=0.25,
                                       prior_init_batches=1, sample_grid=0, seed=3, device="cpu", warm_start="jeffreys",
                                       architecture="mlp", tau_e=0.0), **kw})
    torch.manual_seed(0)
    model, enc = build_model(cfg, 28, 1)
    tr = CircuitTrainer(model, enc, cfg)
    metrics = []
    for _ in range(steps):
        metrics.append({k: float(v) for k, v in tr.train_step(x).items()})
        tr.global_step += 1
    return metrics, {**model.state_dict(), **{"enc." + k: v for k, v in enc.state_dict().items()}}, tr.circuit.state


@pytest.mark.parametrize("kw", [
    dict(noise="analog"),                                                    # hardware-aware: the main job's row
    dict(noise="analog", learning="in-memory"),
    dict(noise="analog", tau_e=1e-3, learning_rule="exact"),
    dict(noise={"sources": [{"type": "feedback_mismatch", "mode": "additive"}, {"type": "drift", "t_start": 10.0},
                            {"type": "quantisation", "site": "prediction"}]}),
    dict(noise="ideal"),
], ids=["analog", "in-memory", "tau_e-exact", "additive-fb-drift-adc", "ideal"])
def test_the_cheaper_training_step_is_the_former_one_bit_for_bit(kw, monkeypatch):
    with _former_code(monkeypatch):
        ref = _train(kw)
    new = _train(kw)
    assert new[0] == ref[0]
    assert all(torch.equal(new[1][k], ref[1][k]) for k in ref[1])
    assert torch.equal(new[2]["z"], ref[2]["z"])


def test_frozen_draws_are_kept_across_circuits_with_the_same_values_and_generator_state():
    torch.manual_seed(0)
    model = build_model(CircuitTrainConfig(architecture="mlp", sample_grid=0), 28, 1)[0]
    cfg = CircuitConfig(dt=1e-3, tau_e=0.0, noise="analog", seed=5)
    plain = Circuit(model, cfg)
    cache = {}
    first, second = Circuit(model, cfg, frozen_cache=cache), Circuit(model, cfg, frozen_cache=cache)
    assert cache and set(plain.frozen) == set(first.frozen) == set(second.frozen)
    for k, v in plain.frozen.items():
        assert torch.equal(first.frozen[k], v) and torch.equal(second.frozen[k], v)
    assert torch.equal(second.context.frozen_gen.get_state(), plain.context.frozen_gen.get_state())
    other = Circuit(model, CircuitConfig(dt=1e-3, tau_e=0.0, noise="analog", seed=6), frozen_cache=cache)
    key = "feedback_mismatch[3].net.0.weight"
    assert not torch.equal(other.frozen[key], plain.frozen[key])                 # another seed, other draws
