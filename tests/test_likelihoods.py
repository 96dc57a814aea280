import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from neuro_lpc.likelihoods import (BernoulliLikelihood, DiscretizedGaussianLikelihood, GaussianLikelihood,
                                   make_likelihood)

CENTRES = torch.linspace(-1, 1, 256, dtype=torch.float64)


def _scipy_bin_probs(mu, sigma):
    h = 1 / 255
    x = CENTRES.numpy()
    upper = np.where(np.arange(256) == 255, np.inf, x + h)
    lower = np.where(np.arange(256) == 0, -np.inf, x - h)
    a, b = (lower - mu) / sigma, (upper - mu) / sigma
    # P = Phi(b) - Phi(a); above the mean use the survival function to avoid cancellation near 1
    return np.where(a > 0, norm.sf(a) - norm.sf(b), norm.cdf(b) - norm.cdf(a))


@pytest.mark.parametrize("mu,sigma", [(0.0, 0.1), (0.93, 0.02), (-1.3, 0.05), (0.4, 1.5), (1.0, 0.003)])
def test_discretized_gaussian_bins_sum_to_one_and_match_float64_reference(mu, sigma):
    lik = DiscretizedGaussianLikelihood(sigma=sigma, learn_sigma=False).double()
    x = CENTRES[:, None]
    m = torch.full_like(x, mu)
    logp = lik.elementwise_log_prob(x, m)[:, 0]
    p = logp.exp()
    assert torch.isfinite(logp).all()
    assert abs(p.sum().item() - 1.0) < 1e-12
    ref = _scipy_bin_probs(mu, lik.sigma.item())  # the float32-rounded sigma the module holds
    mask = ref > 1e-300
    np.testing.assert_allclose(p.numpy()[mask], ref[mask], rtol=1e-9, atol=1e-15)


def test_discretized_gaussian_float32_matches_float64():
    lik32 = DiscretizedGaussianLikelihood(sigma=0.07, learn_sigma=False)
    lik64 = DiscretizedGaussianLikelihood(sigma=0.07, learn_sigma=False).double()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (8, 300), generator=g).double() / 127.5 - 1
    mu = torch.randn(8, 300, generator=g, dtype=torch.float64) * 0.6
    a = lik32.log_prob(x.float(), mu.float()).double()
    b = lik64.log_prob(x, mu)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("lik", [GaussianLikelihood(0.3), GaussianLikelihood(0.3, learn_sigma=True),
                                 DiscretizedGaussianLikelihood(0.05), BernoulliLikelihood()])
def test_error_is_gradient_of_log_prob(lik):
    lik = lik.double()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (4, 50), generator=g).double() / 127.5 - 1
    mu = (torch.randn(4, 50, generator=g, dtype=torch.float64) * 0.5).requires_grad_(True)
    (auto,) = torch.autograd.grad(lik.log_prob(x, mu).sum(), mu)
    torch.testing.assert_close(lik.error(x, mu.detach()), auto)
    # and autograd itself agrees with finite differences (checks the hand-written backward)
    assert torch.autograd.gradcheck(lambda m: lik.log_prob(x, m), (mu,), eps=1e-6, atol=1e-5)


def test_discretized_sigma_gradient_matches_finite_difference():
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 256, (3, 40), generator=g).double() / 127.5 - 1
    mu = torch.randn(3, 40, generator=g, dtype=torch.float64) * 0.5
    lik = DiscretizedGaussianLikelihood(0.08).double()
    lik.log_prob(x, mu).sum().backward()
    auto = lik.log_sigma.grad.item()
    eps = 1e-6
    with torch.no_grad():
        lik.log_sigma += eps
        up = lik.log_prob(x, mu).sum().item()
        lik.log_sigma -= 2 * eps
        dn = lik.log_prob(x, mu).sum().item()
    assert auto == pytest.approx((up - dn) / (2 * eps), rel=1e-5)


def test_gaussian_log_prob_closed_form():
    lik = GaussianLikelihood(0.5).double()
    x = torch.randn(5, 7, dtype=torch.float64)
    mu = torch.randn(5, 7, dtype=torch.float64)
    ref = torch.distributions.Normal(mu, 0.5).log_prob(x).sum(1)
    torch.testing.assert_close(lik.log_prob(x, mu), ref)


def test_bad_likelihood_arguments():
    with pytest.raises(ValueError, match="sigma"):
        GaussianLikelihood(-1.0)
    with pytest.raises(ValueError, match="unknown likelihood"):
        make_likelihood("poisson")
    with pytest.raises(ValueError, match="shape"):
        GaussianLikelihood(1.0).log_prob(torch.zeros(2, 3), torch.zeros(2, 4))
    assert math.isfinite(DiscretizedGaussianLikelihood(1e-3).log_prob(torch.ones(1, 3), torch.full((1, 3), -5.0)).item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sigma", [0.1, 0.004, 0.8])
def test_discretized_gaussian_evaluator_is_log_prob_error_and_sigma_gradient_bit_for_bit(dtype, sigma):
    """DiscretizedGaussianLikelihood.bind(x).evaluate(mu): one pass, the same numbers as log_prob, error and the
    autograd gradient of sum log_prob in log sigma (edge bins, far-off and non-finite means included)."""
    exact = dict(rtol=0, atol=0, equal_nan=True)
    g = torch.Generator().manual_seed(3)
    lik = DiscretizedGaussianLikelihood(sigma=sigma).to(dtype)
    x = (torch.randint(0, 256, (6, 1, 9, 9), generator=g).to(dtype) / 127.5 - 1)
    x[0, 0, 0, :4], x[0, 0, 1, :4] = -1.0, 1.0                                   # the open edge bins
    mu = torch.randn(x.shape, generator=g, dtype=dtype) * 0.7
    mu[1, 0, 0, :5] = torch.tensor([40.0, -40.0, 1e4, -1.0, 1.0], dtype=dtype)   # far off, on the edges
    mu[2, 0, 0, 0] = float("nan")                                                 # a diverged chain
    ev = lik.bind(x)
    lp, err, _ = ev.evaluate(mu, error=True, sigma_grad=True)
    torch.testing.assert_close(lp, lik.elementwise_log_prob(x, mu).detach(), **exact)
    torch.testing.assert_close(err, lik.error(x, mu), **exact)
    torch.testing.assert_close(ev.log_prob(mu), lik.log_prob(x, mu).detach(), **exact)
    assert ev.evaluate(mu, error=False)[1] is None
    fin = torch.isfinite(mu).flatten(1).all(1)                                    # (the NaN chain makes the sum NaN)
    (ref,) = torch.autograd.grad(lik.log_prob(x[fin], mu[fin]).sum(), lik.log_sigma)
    assert torch.equal(lik.bind(x[fin]).evaluate(mu[fin], sigma_grad=True)[2], ref)
    lik.log_sigma.data.fill_(math.log(sigma * 1.7))                               # sigma is read at every call
    torch.testing.assert_close(ev.evaluate(mu)[1], lik.error(x, mu), **exact)
