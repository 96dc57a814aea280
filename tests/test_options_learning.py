"""Learning options change what is learned as predicted: the circuit's ``learning_rule`` ("hebbian": the error
units' eps; "exact": e(x, g(z))) against gradients written by hand from the recorded states, and the TrainConfig
fields of the discrete trainer (``likelihood`` / ``--likelihood``, ``likelihood_sigma``, ``learn_sigma``,
``prior_std``, the sampler's fields, ``lr_schedule``, ``grad_clip``) against closed forms."""
import math

import pytest
import torch
from torch import nn

from circuits import Circuit, CircuitConfig
from neuro_lpc import (BernoulliLikelihood, DiscretizedGaussianLikelihood, GaussianLikelihood, LangevinSampler,
                       TrainConfig)
from neuro_lpc.cli import prepare
from neuro_lpc.networks import MLPEncoder
from neuro_lpc.train import LPCTrainer, build_model
from problems import F64, linear_model

pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------- circuit learning_rule ----

def _learning_run(rule, tau_e, steps=30, seed=0):
    """A linear decoder (fixed sigma: only W, b learn), finite tau_e: (model, x, z0, trajectory, {param: .grad})."""
    model, x1 = linear_model(3, 5, sigma=0.5, seed=21)
    g = torch.Generator().manual_seed(seed)
    x = x1.expand(6, -1) + 0.3 * torch.randn(6, 5, generator=g, dtype=F64)
    z0 = torch.randn(6, 3, generator=g, dtype=F64)
    model.zero_grad(set_to_none=True)
    c = Circuit(model, CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=tau_e, noise="ideal", learning_rule=rule))
    traj = c.simulate(x, z0, steps=steps, record_every=1, record_eps=True, accumulate_grad=True,
                      generator=torch.Generator().manual_seed(seed + 1))
    assert c.state["kernel"] == "autograd"
    grads = {"weight": model.decoder.weight.grad.clone(), "bias": model.decoder.bias.grad.clone()}
    return model, x, z0, traj, grads


def _hand_gradients(z, err, B):
    """-(1/(B steps)) sum_t sum_b err_b(t) z_b(t)^T and -(1/(B steps)) sum_t sum_b err_b(t): the decoder gradient of a
    linear decoder mu = W z + b whose error signal at state z(t) is err(t) (z, err: (steps, B, .))."""
    steps = z.shape[0]
    w = -torch.einsum("tbn,tbd->nd", err, z) / (B * steps)
    return {"weight": w, "bias": -err.sum((0, 1)) / (B * steps)}


def test_hebbian_rule_learns_from_the_error_units_and_exact_from_the_prediction_error():
    """learning_rule with tau_e = 2 ms: the states before each step are z(0..T-1) with error units eps(0..T-1)
    (eps(0) = e(x, g(z0)), then the recorded eps).  "hebbian" accumulates the eps-weighted product
    eps(t) z(t)^T (computed here by hand from the recorded eps), "exact" the same product with the prediction error
    e(x, g(z(t))) = (x - W z - b) / sigma^2 (by hand, and = autograd of -log p(x, z) at the recorded states).
    The two differ (eps lags e by ~tau_e): a hebbian rule that behaves as exact fails, and so does the reverse."""
    grads, runs = {}, {}
    for rule in ("hebbian", "exact"):
        model, x, z0, traj, grads[rule] = _learning_run(rule, tau_e=2e-3)
        runs[rule] = traj
    torch.testing.assert_close(runs["hebbian"].z, runs["exact"].z, rtol=0, atol=0)   # learning does not steer z
    traj, B = runs["hebbian"], x.shape[0]
    z = torch.cat([z0[None], traj.z[:-1]])                                     # (steps, B, d): before each step
    W, b = model.decoder.weight.detach(), model.decoder.bias.detach()
    prec = 1.0 / float(model.likelihood.sigma) ** 2
    e = (x - z @ W.T - b) * prec                                                # e(x, g(z(t)))
    eps = torch.cat([e[:1], traj.extras["eps"][:-1]])                           # eps(0) settled at e(x, g(z0))
    hebbian, exact = _hand_gradients(z, eps, B), _hand_gradients(z, e, B)
    model.zero_grad(set_to_none=True)
    (-model.log_joint(x.repeat(z.shape[0], 1), z.reshape(-1, 3)).sum() / (B * z.shape[0])).backward()
    for k in ("weight", "bias"):
        torch.testing.assert_close(exact[k], getattr(model.decoder, k).grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grads["exact"][k], exact[k], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(grads["hebbian"][k], hebbian[k], rtol=1e-9, atol=1e-12)
        gap = (hebbian[k] - exact[k]).abs().max()
        assert gap > 0.05 * exact[k].abs().max(), (k, gap)                     # the rules differ here


def test_hebbian_rule_tends_to_the_exact_gradient_as_tau_e_vanishes():
    """learning_rule "hebbian": the error units lag e(x, g(z)) by ~tau_e, so the hebbian gradient's distance from the
    exact one falls monotonically as tau_e -> 0 (same noise draws) and vanishes in the adiabatic limit tau_e = 0,
    where both rules are the exact gradient of log p (to rounding)."""
    gaps = []
    for tau_e in (4e-3, 1e-3, 2.5e-4, 0.0):
        g = {rule: _learning_run(rule, tau_e)[-1] for rule in ("hebbian", "exact")}
        scale = g["exact"]["weight"].abs().max()
        gaps.append(float((g["hebbian"]["weight"] - g["exact"]["weight"]).abs().max() / scale))
    assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[0] > 0.05 and gaps[-1] < 1e-12, gaps


# ------------------------------------------------------------------ TrainConfig.likelihood ----

def _closed_form_log_prob(name, x, mu, sigma):
    """log p(x | mu) summed per example, written from the formulas (no neuro_lpc code)."""
    if name == "gaussian":
        n = x[0].numel()
        return (-0.5 * ((x - mu) ** 2).flatten(1).sum(1) / sigma**2 - n * math.log(sigma)
                - 0.5 * n * math.log(2 * math.pi))
    if name == "bernoulli":
        y, p = (x + 1) / 2, torch.sigmoid(mu)
        return (y * p.log() + (1 - y) * (1 - p).log()).flatten(1).sum(1)
    # discretised Gaussian: P = Phi((x + h - mu) / s) - Phi((x - h - mu) / s), the edge bins open
    h = 1.0 / 255
    upper = torch.where(x > 1 - h, torch.ones_like(x), torch.special.ndtr((x + h - mu) / sigma))
    lower = torch.where(x < -1 + h, torch.zeros_like(x), torch.special.ndtr((x - h - mu) / sigma))
    return (upper - lower).log().flatten(1).sum(1)


@pytest.mark.parametrize("name,cls", [("gaussian", GaussianLikelihood), ("bernoulli", BernoulliLikelihood),
                                      ("discretized_gaussian", DiscretizedGaussianLikelihood)])
def test_config_likelihood_reaches_build_model(name, cls, tmp_path):
    """TrainConfig.likelihood (and the CLI's --likelihood) reaches build_model: the model's likelihood is that class,
    with sigma = likelihood_sigma (0.2, not the default 0.1) and learn_sigma honoured, and its log p(x | z) is the
    closed form of that likelihood at the decoder's mean on a small batch of pixel values."""
    _, cfg, _ = prepare(["--out", str(tmp_path / "run"), "--likelihood", name, "--architecture", "mlp",
                         "--latent-dim", "4", "--device", "cpu"])
    assert cfg.likelihood == name
    cfg.likelihood_sigma, cfg.learn_sigma = 0.2, False
    model, _ = build_model(cfg, 28, 1)
    assert type(model.likelihood) is cls
    model = model.double()
    g = torch.Generator().manual_seed(0)
    x = torch.round(torch.rand(2, 1, 28, 28, generator=g, dtype=F64) * 255) / 127.5 - 1   # bin centres, edges too
    if name == "bernoulli":
        x = torch.where(x > 0, 1.0, -1.0).to(F64)                                        # {-1, 1}
    z = torch.randn(2, 4, generator=g, dtype=F64)
    mu = model.decoder(z).detach()
    expected = _closed_form_log_prob(name, x, mu, 0.2)
    # rtol 1e-6: build_model stores log sigma in float32 (a relative error ~6e-8 in sigma, ~1e-7 in log p)
    torch.testing.assert_close(model.log_likelihood(x, z).detach(), expected, rtol=1e-6, atol=0)
    if name != "bernoulli":
        assert not isinstance(model.likelihood.log_sigma, nn.Parameter)
        cfg.learn_sigma = True
        assert isinstance(build_model(cfg, 28, 1)[0].likelihood.log_sigma, nn.Parameter)


def test_config_prior_std_reaches_the_model():
    """TrainConfig.prior_std = 2: log p(z) = -|z|^2 / (2 s_p^2) - d log s_p - d/2 log 2 pi (closed form)."""
    cfg = TrainConfig(prior_std=2.0, architecture="mlp", latent_dim=4, likelihood="gaussian")
    model, _ = build_model(cfg, 28, 1)
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    expected = -0.5 * (z**2).sum(1) / 4.0 - 4 * math.log(2.0) - 2 * math.log(2 * math.pi)
    torch.testing.assert_close(model.log_prior(z), expected, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------- TrainConfig -> the trainer's chain ----

def _lpc_trainer(learn_sigma=False, **kw):
    model, _ = linear_model(3, 5, sigma=0.5, seed=11, learn_sigma=learn_sigma)
    torch.manual_seed(2)
    enc = MLPEncoder(5, 3, hidden=8).double()
    base = dict(batch_size=4, latent_dim=3, likelihood="gaussian", device="cpu", seed=4, sample_grid=0,
                prior_init_batches=0, warm_start="forward")
    base.update(kw)
    return LPCTrainer(model, enc, TrainConfig(**base))


def test_config_sampler_fields_reach_the_trainers_chain():
    """TrainConfig's step_size, langevin_steps, precondition, precondition_delta, noise_form and temperature (none at
    its default) set the trainer's chain: LPCTrainer.sampler runs the chain that LangevinSampler with those values
    runs (same start, same noise), and not the chain of the defaults."""
    cfg = dict(step_size=0.03, langevin_steps=7, precondition=0.6, precondition_delta=0.7, noise_form="literal",
               temperature=0.5)
    tr = _lpc_trainer(**cfg)
    s = tr.sampler
    assert (s.step_size, s.steps, s.precondition, s.delta, s.noise, s.temperature) == tuple(cfg.values())
    model = tr.model
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(1), dtype=F64)
    z0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=F64)

    def run(sampler):
        return sampler.sample(model, x, z0, generator=torch.Generator().manual_seed(3)).z

    want = run(LangevinSampler(0.03, 7, precondition=0.6, delta=0.7, noise="literal", temperature=0.5))
    torch.testing.assert_close(run(s), want, rtol=0, atol=0)
    for field, default in (("precondition_delta", 1e-8), ("noise_form", "correct"), ("temperature", 1.0)):
        other = _lpc_trainer(**{**cfg, field: default}).sampler
        assert (run(other) - want).abs().max() > 1e-3, field


def test_cosine_lr_schedule_sets_the_optimisers_rate():
    """TrainConfig.lr_schedule = "cosine": the k-th optimiser step (k = 0..K-1 of K) runs at lr (1 + cos(pi k / K)) / 2
    (read from the optimiser after each step); "constant" keeps lr."""
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(1), dtype=F64)
    data = torch.utils.data.TensorDataset(x, torch.zeros(16))
    for schedule in ("cosine", "constant"):
        tr = _lpc_trainer(lr_schedule=schedule, lr=1e-2, langevin_steps=2, epochs=2)
        seen = []
        tr.step_hooks.append(lambda t: seen.append(t.optimizer.param_groups[0]["lr"]))
        tr.fit(data, progress=False)
        K = 8                                                     # 2 epochs of 16 / 4 batches
        want = [1e-2 * (1 + math.cos(math.pi * k / K)) / 2 if schedule == "cosine" else 1e-2 for k in range(K)]
        assert seen == pytest.approx(want, rel=1e-12), schedule


@pytest.mark.parametrize("decoder_lr", [None, 4e-4])
def test_optimizer_sgd_is_plain_sgd_on_the_decoder_and_adam_on_the_rest(decoder_lr):
    """TrainConfig.optimizer = "sgd" (the digital twin of in-memory-local): one step moves every decoder parameter by
    exactly -lr_d g (plain SGD, no state) and every likelihood and encoder parameter by Adam's first step
    -lr g / (|g| + eps) (bias-corrected moments of one gradient); "adam" moves the decoder by Adam's step too.
    TrainConfig.decoder_lr = lr_d sets the decoder's rate only (None: lr_d = lr), under either optimiser."""
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(1), dtype=F64) * 3
    lr = 1e-3
    lr_d = lr if decoder_lr is None else decoder_lr
    for kind in ("sgd", "adam"):
        tr = _lpc_trainer(optimizer=kind, lr=lr, decoder_lr=decoder_lr, langevin_steps=3, learn_sigma=True)
        before = {n: p.detach().clone() for n, p in tr.model.named_parameters()}
        before.update({"enc." + n: p.detach().clone() for n, p in tr.encoder.named_parameters()})
        grads, step = {}, tr.optimizer.step

        def record_then_step():
            grads.update({n: p.grad.clone() for n, p in tr.model.named_parameters() if p.grad is not None})
            grads.update({"enc." + n: p.grad.clone() for n, p in tr.encoder.named_parameters() if p.grad is not None})
            step()
        tr.optimizer.step = record_then_step
        tr.train_step(x)
        after = dict(tr.model.named_parameters())
        after.update({"enc." + n: p for n, p in tr.encoder.named_parameters()})
        model_names = [n for n in grads if n.startswith("decoder.")]
        assert model_names and any(n.startswith("likelihood.") for n in grads) and any(n.startswith("enc.") for n in grads)
        for n, g in grads.items():
            delta = after[n].detach() - before[n]
            rate = lr_d if n.startswith("decoder.") else lr
            want = -rate * g if (kind == "sgd" and n.startswith("decoder.")) else -rate * g / (g.abs() + 1e-8)
            torch.testing.assert_close(delta, want, rtol=1e-6, atol=1e-12, msg=f"{kind}: {n}")
        if kind == "sgd":    # the two steps really differ here (a gradient far from +-1)
            g = grads[model_names[0]]
            assert (g.abs() - 1).abs().max() > 0.1


def test_decoder_lr_follows_the_schedule():
    """decoder_lr with the cosine schedule: the decoder's group runs at decoder_lr (1 + cos(pi k / K)) / 2, the
    other groups at lr times the same factor; ``Trainer.decoder_rate`` says the decoder's."""
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(1), dtype=F64)
    data = torch.utils.data.TensorDataset(x, torch.zeros(16))
    tr = _lpc_trainer(lr_schedule="cosine", lr=1e-2, decoder_lr=1e-4, langevin_steps=2, epochs=1)
    seen = []
    tr.step_hooks.append(lambda t: seen.append([g["lr"] for g in t.optimizer.param_groups]))
    tr.fit(data, progress=False)
    for k, lrs in enumerate(seen):
        f = (1 + math.cos(math.pi * k / 4)) / 2
        assert lrs == pytest.approx([1e-4 * f] + [1e-2 * f] * (len(lrs) - 1), rel=1e-12)


def test_grad_clip_clips_the_total_gradient_norm():
    """TrainConfig.grad_clip = c: after the step the total norm of the decoder's and encoder's gradients is c when the
    unclipped norm exceeds c (the direction unchanged), as torch.nn.utils.clip_grad_norm_ defines it."""
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(1), dtype=F64) * 3

    def grads(clip):
        tr = _lpc_trainer(grad_clip=clip, langevin_steps=3)
        tr.train_step(x)
        return torch.cat([p.grad.flatten() for p in list(tr.model.parameters()) + list(tr.encoder.parameters())
                          if p.grad is not None])

    free = grads(None)
    c = 0.1 * float(free.norm())
    clipped = grads(c)
    torch.testing.assert_close(clipped.norm(), torch.tensor(c, dtype=F64), rtol=1e-5, atol=0)  # clip_grad_norm_'s 1e-6 eps
    torch.testing.assert_close(clipped, free * (c / free.norm()), rtol=1e-5, atol=1e-12)
