"""The warm-start objectives (neuro_lpc.objectives, the paper's section 1.2) against references written here
independently of the module: the forward KL against the Gaussian cross-entropy of the chain's samples (by hand and
through torch.distributions + autograd), the reverse KL against the reparameterised negative ELBO built from
torch.distributions (same eps), Jeffreys as their half-sum, "none" as no gradient -- at the function and through
LPCTrainer (``TrainConfig.warm_start``), on a case where the three objectives' gradients differ."""
import copy

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from neuro_lpc import LangevinSampler, TrainConfig
from neuro_lpc.networks import MLPEncoder
from neuro_lpc.objectives import warm_start_loss
from neuro_lpc.train import LPCTrainer
from problems import F64, linear_model

pytestmark = pytest.mark.usefixtures("single_thread")

B, D, N_OBS, T = 4, 3, 5, 7


def _case():
    """A linear-Gaussian model, a batch x, an encoder output (mean, var) away from the posterior (so the forward and
    reverse KL pull differently) and a Langevin chain from z0 = mean: (model, x, mean, var, chain result)."""
    model, _ = linear_model(D, N_OBS, sigma=0.5, seed=11)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(B, N_OBS, generator=g, dtype=F64)
    mean = (torch.randn(B, D, generator=g, dtype=F64) * 0.7).requires_grad_(True)
    var = (0.2 + torch.rand(B, D, generator=g, dtype=F64)).requires_grad_(True)
    res = LangevinSampler(0.05, T).sample(model, x, mean.detach(), record_every=1, track_moments=True,
                                          generator=torch.Generator().manual_seed(6))
    return model, x, mean, var, res


def _grads(loss, mean, var):
    return torch.autograd.grad(loss, [mean, var], allow_unused=True)


def forward_reference(mean, var, z_trace):
    """-(1/(B T)) sum_b sum_t log N(z_b(t); mean_b, var_b) by torch.distributions (z_trace: (T, B, d))."""
    return -Normal(mean, var.sqrt()).log_prob(z_trace).sum(-1).mean()


def forward_gradient_by_hand(mean, var, z_trace):
    """The analytic gradient of forward_reference: d/dmean = -(1/(B T)) sum_t (z_t - mean) / var,
    d/dvar = (1/(2B)) [1 / var - (1/T) sum_t (z_t - mean)^2 / var^2]."""
    m, v = mean.detach(), var.detach()
    dev = z_trace - m
    g_mean = -(dev / v).mean(0) / m.shape[0]
    g_var = (1 / v - (dev**2).mean(0) / v**2) / (2 * m.shape[0])
    return g_mean, g_var


def reverse_reference(model, x, mean, var, eps):
    """The negative ELBO with one reparameterised sample z = mean + sqrt(var) eps, from torch.distributions:
    -log N(x; W z + b, sigma^2) + KL(N(mean, var) || N(0, s_p^2)), averaged over the batch."""
    z = mean + var.sqrt() * eps
    sigma = float(model.likelihood.sigma)
    log_lik = Normal(model.decoder(z), sigma).log_prob(x).sum(-1)
    kl = kl_divergence(Normal(mean, var.sqrt()), Normal(torch.zeros_like(mean), model.prior_std)).sum(-1)
    return (-log_lik + kl).mean()


def test_forward_kl_gradient_is_the_cross_entropy_gradient_at_the_chain_samples():
    """objective "forward": the loss is -(1/T) sum_t log q(z(t)|x) over the chain (batch mean), and its gradient in
    (mean, var) equals the analytic gradient of that Gaussian cross-entropy -- by hand and by Normal.log_prob +
    autograd. A sign error or a zero forward-KL gradient fails."""
    model, x, mean, var, res = _case()
    loss = warm_start_loss("forward", model, x, mean, var, res)
    ref = forward_reference(mean, var, res.z_trace)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    got = _grads(loss, mean, var)
    by_autograd = _grads(ref, mean, var)
    by_hand = forward_gradient_by_hand(mean, var, res.z_trace)
    for g, a, h in zip(got, by_autograd, by_hand):
        assert h.abs().max() > 1e-2                      # a non-trivial gradient: zero would fail below
        torch.testing.assert_close(a, h, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g, h, rtol=1e-10, atol=1e-12)


def test_forward_kl_gradient_points_the_mean_towards_the_samples():
    """objective "forward", sign: gradient descent on the forward KL moves the encoder mean towards the chain's
    sample mean (d/dmean = -(zbar - mean) / (B var)), and grows var where the samples spread wider than var."""
    model, x, mean, var, res = _case()
    g_mean, g_var = _grads(warm_start_loss("forward", model, x, mean, var, res), mean, var)
    zbar = res.z_trace.mean(0)
    assert ((-g_mean) * (zbar - mean.detach()) > 0).all()
    spread = ((res.z_trace - mean.detach()) ** 2).mean(0)
    assert torch.equal(-g_var > 0, spread > var.detach())


def test_reverse_kl_gradient_is_the_reparameterised_negative_elbo_gradient():
    """objective "reverse": the loss and its gradient in (mean, var) equal those of the negative ELBO built from
    torch.distributions (Gaussian likelihood of the decoder's mean, analytic KL to the prior) with the same eps."""
    model, x, mean, var, res = _case()
    loss = warm_start_loss("reverse", model, x, mean, var, res, generator=torch.Generator().manual_seed(8))
    eps = torch.randn(B, D, generator=torch.Generator().manual_seed(8), dtype=F64)
    ref = reverse_reference(model, x, mean, var, eps)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    for g, r in zip(_grads(loss, mean, var), _grads(ref, mean, var)):
        assert r.abs().max() > 1e-2
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


def test_jeffreys_is_the_half_sum_and_the_three_objectives_differ():
    """objective "jeffreys" = (forward + reverse) / 2 (the two references above, same eps), on a case where the
    forward and reverse gradients differ by far more than rounding -- so that neither alone passes for Jeffreys."""
    model, x, mean, var, res = _case()
    loss = warm_start_loss("jeffreys", model, x, mean, var, res, generator=torch.Generator().manual_seed(8))
    eps = torch.randn(B, D, generator=torch.Generator().manual_seed(8), dtype=F64)
    fwd, rev = forward_reference(mean, var, res.z_trace), reverse_reference(model, x, mean, var, eps)
    torch.testing.assert_close(loss, (fwd + rev) / 2, rtol=1e-12, atol=1e-12)
    g_f, g_r = _grads(fwd, mean, var), _grads(rev, mean, var)
    for g, f, r in zip(_grads(loss, mean, var), g_f, g_r):
        assert (f - r).abs().max() > 0.1 * max(f.abs().max(), r.abs().max())   # the objectives differ
        torch.testing.assert_close(g, (f + r) / 2, rtol=1e-10, atol=1e-12)


def test_none_objective_gives_zero_gradient():
    """objective "none": a zero loss with an exactly zero gradient (the encoder is not trained)."""
    model, x, mean, var, res = _case()
    loss = warm_start_loss("none", model, x, mean, var, res, generator=torch.Generator().manual_seed(8))
    assert float(loss.detach()) == 0.0
    for g in _grads(loss, mean, var):
        assert g is None or torch.count_nonzero(g) == 0


# ------------------------------------------------------------------ through LPCTrainer ----

class _RecordingSampler(LangevinSampler):
    """The trainer's chain, recorded: z0, the states z(1..T) and the trainer's generator state after the chain
    (the reverse KL draws its eps next). Records draw no random numbers, so the chain is the trainer's own."""

    def sample(self, model, x, z0, **kw):
        kw["record_every"] = 1
        self.z0 = z0.clone()
        res = super().sample(model, x, z0, **kw)
        self.trace = res.z_trace.clone()
        self.gen_after = kw["generator"].get_state()
        return res


def _trainer(warm_start, prior_init_batches=0):
    model, _ = linear_model(D, N_OBS, sigma=0.5, seed=11)
    torch.manual_seed(2)
    enc = MLPEncoder(N_OBS, D, hidden=8).double()
    cfg = TrainConfig(warm_start=warm_start, prior_init_batches=prior_init_batches, batch_size=B, latent_dim=D,
                      likelihood="gaussian", device="cpu", seed=4, sample_grid=0)
    sampler = _RecordingSampler(0.05, T, precondition=0.25)
    return LPCTrainer(model, enc, cfg, sampler=sampler), sampler


@pytest.mark.parametrize("objective", ["forward", "reverse", "jeffreys"])
def test_trainer_encoder_gradient_is_the_objectives_reference(objective):
    """TrainConfig.warm_start reaches the encoder: after one LPCTrainer step the encoder's .grad is the gradient of
    the independent reference (forward: cross-entropy of the step's own chain; reverse: negative ELBO with the eps the
    trainer's generator draws after the chain; Jeffreys: their half-sum) through the encoder's parameters."""
    tr, sampler = _trainer(objective)
    x = torch.randn(B, N_OBS, generator=torch.Generator().manual_seed(3), dtype=F64)
    enc0, model0 = copy.deepcopy(tr.encoder), copy.deepcopy(tr.model)   # the step moves both
    tr.train_step(x)
    mean, var = enc0(x)
    g = torch.Generator()
    g.set_state(sampler.gen_after)
    eps = torch.randn(B, D, generator=g, dtype=F64)
    fwd, rev = forward_reference(mean, var, sampler.trace), reverse_reference(model0, x, mean, var, eps)
    ref = {"forward": fwd, "reverse": rev, "jeffreys": (fwd + rev) / 2}[objective]
    ref_grads = torch.autograd.grad(ref, list(enc0.parameters()))
    for p, r in zip(tr.encoder.parameters(), ref_grads):
        assert r.abs().max() > 0
        torch.testing.assert_close(p.grad, r, rtol=1e-9, atol=1e-12)


def test_trainer_none_objective_leaves_the_encoder_and_starts_from_the_prior():
    """TrainConfig.warm_start = "none": no encoder gradient (its weights do not move) and the chain starts from the
    prior, z0 = s_p * n with n the trainer generator's first draw."""
    tr, sampler = _trainer("none")
    x = torch.randn(B, N_OBS, generator=torch.Generator().manual_seed(3), dtype=F64)
    enc0 = copy.deepcopy(tr.encoder)
    tr.train_step(x)
    for p, p0 in zip(tr.encoder.parameters(), enc0.parameters()):
        assert p.grad is None and torch.equal(p, p0)
    n = torch.randn(B, D, generator=torch.Generator().manual_seed(4), dtype=F64)
    torch.testing.assert_close(sampler.z0, tr.model.prior_std * n, rtol=0, atol=0)


def test_trainer_prior_init_batches_then_encoder_warm_start():
    """TrainConfig.prior_init_batches = 1: the first batch's chain starts from the prior (z0 = s_p n, the generator's
    first draw), the second from the encoder, z0 = mean + sqrt(var) n' (n' the generator's next draw)."""
    tr, sampler = _trainer("forward", prior_init_batches=1)
    x = torch.randn(B, N_OBS, generator=torch.Generator().manual_seed(3), dtype=F64)
    tr.train_step(x)
    tr.global_step = 1                                  # fit() counts the step
    n = torch.randn(B, D, generator=torch.Generator().manual_seed(4), dtype=F64)
    torch.testing.assert_close(sampler.z0, tr.model.prior_std * n, rtol=0, atol=0)
    g = torch.Generator()
    g.set_state(sampler.gen_after)                      # the forward KL draws nothing: the next draw is z0's
    with torch.no_grad():
        mean, var = tr.encoder(x)
    tr.train_step(x)
    n2 = torch.randn(B, D, generator=g, dtype=F64)
    torch.testing.assert_close(sampler.z0, mean + var.sqrt() * n2, rtol=1e-12, atol=1e-12)
