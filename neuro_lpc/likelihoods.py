"""Observation likelihoods p(x | mu) with their scores in mu.

Every likelihood gives

* ``log_prob(x, mu) -> (B,)``: log p(x | mu), summed over all non-batch dimensions;
* ``error(x, mu) -> mu.shape``: the prediction error e(x, mu) = d log p(x | mu) / d mu, which is the
  precision-weighted prediction error of predictive coding (DESIGN.md section 3). The circuit's
  error units settle at it, and the score is grad_z log p(x, z) = J_g(z)^T e(x, g(z)) - z / s_p^2.

Likelihoods are ``nn.Module`` s so a learned scale is a parameter of the generative model (theta) and
receives the chain's gradient (paper eq. 8).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

LOG_2PI = math.log(2 * math.pi)


def _check_pair(x: torch.Tensor, mu: torch.Tensor) -> None:
    if x.shape != mu.shape:
        raise ValueError(f"x has shape {tuple(x.shape)} but the decoder's mean has shape {tuple(mu.shape)}")


def _sum_nonbatch(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).sum(1)


class Likelihood(nn.Module):
    """Base class: p(x | mu) with mu the decoder output."""

    name = "base"

    def log_prob(self, x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def error(self, x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def mean(self, mu: torch.Tensor) -> torch.Tensor:
        """E[x | mu] in data space ([-1, 1] for images)."""
        return mu

    def sample(self, mu: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class GaussianLikelihood(Likelihood):
    """x ~ N(mu, sigma^2 I).  log p = -|x - mu|^2 / (2 sigma^2) - n log sigma - n/2 log 2 pi.

    e(x, mu) = (x - mu) / sigma^2, the precision-weighted prediction error.
    ``learn_sigma=True`` makes log sigma a (scalar) parameter of the generative model.
    """

    name = "gaussian"

    def __init__(self, sigma: float = 1.0, learn_sigma: bool = False):
        super().__init__()
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"GaussianLikelihood: sigma must be a positive finite number, got {sigma}")
        log_sigma = torch.tensor(math.log(sigma))
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def log_prob(self, x, mu):
        _check_pair(x, mu)
        n = x[0].numel()
        sq = _sum_nonbatch((x - mu) ** 2)
        return -0.5 * sq * torch.exp(-2 * self.log_sigma) - n * (self.log_sigma + 0.5 * LOG_2PI)

    def error(self, x, mu):
        return (x - mu) * torch.exp(-2 * self.log_sigma)

    def sample(self, mu, generator=None):
        return mu + self.sigma * torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)


class _DiscretizedGaussianLogProb(torch.autograd.Function):
    """Elementwise log P(bin(x) | mu, sigma) with analytic gradients in mu and sigma.

    A hand-written backward keeps the edge bins (a = -inf or b = +inf) free of the inf - inf NaNs that
    autograd through log_ndtr produces, and costs one pass instead of a graph of a dozen ops.
    """

    @staticmethod
    def forward(ctx, x, mu, sigma, half_width):
        k = torch.round((x + 1) / (2 * half_width))  # bin index 0..255
        lower_edge = k <= 0
        upper_edge = k >= 255
        inv_s = 1.0 / sigma
        a = torch.where(lower_edge, torch.full_like(x, -math.inf), (x - half_width - mu) * inv_s)
        b = torch.where(upper_edge, torch.full_like(x, math.inf), (x + half_width - mu) * inv_s)
        # log(Phi(b) - Phi(a)), computed on the side of the bin away from the mode for accuracy.
        flip = a > 0
        hi = torch.where(flip, -a, b)
        lo = torch.where(flip, -b, a)
        log_hi = torch.special.log_ndtr(hi)
        log_lo = torch.special.log_ndtr(lo)
        diff = (log_lo - log_hi).clamp(max=0.0)
        # log1mexp(diff) for diff <= 0 (Maechler 2012): two branches for accuracy.
        log1mexp = torch.where(diff > -math.log(2.0), torch.log(-torch.expm1(diff)), torch.log1p(-torch.exp(diff)))
        logp = log_hi + log1mexp
        ctx.save_for_backward(a, b, logp, sigma)
        ctx.sigma_shape = sigma.shape
        return logp

    @staticmethod
    def backward(ctx, g):
        a, b, logp, sigma = ctx.saved_tensors
        half_log_2pi = 0.5 * LOG_2PI
        # phi(a) / P and phi(b) / P in log space; phi(+-inf) = 0.
        pa = torch.exp(-0.5 * a * a - half_log_2pi - logp)
        pb = torch.exp(-0.5 * b * b - half_log_2pi - logp)
        pa = torch.where(torch.isfinite(a), pa, torch.zeros_like(pa))
        pb = torch.where(torch.isfinite(b), pb, torch.zeros_like(pb))
        inv_s = 1.0 / sigma
        d_mu = (pa - pb) * inv_s
        grad_mu = g * d_mu
        grad_sigma = None
        if ctx.needs_input_grad[2]:
            aa = torch.where(torch.isfinite(a), a * pa, torch.zeros_like(pa))
            bb = torch.where(torch.isfinite(b), b * pb, torch.zeros_like(pb))
            grad_sigma = (g * (aa - bb) * inv_s).sum_to_size(ctx.sigma_shape)
        return None, grad_mu, grad_sigma, None


class DiscretizedGaussianLikelihood(Likelihood):
    """Discretised Gaussian over 256 bins on [-1, 1] (DDPM / PixelCNN++ style, open edge bins).

    Pixel values are bin centres x_k = -1 + 2k/255; with half bin width h = 1/255,
        P(x_k | mu) = Phi((x_k + h - mu)/sigma) - Phi((x_k - h - mu)/sigma)   for 0 < k < 255,
        P(x_0 | mu) = Phi((x_0 + h - mu)/sigma),   P(x_255 | mu) = 1 - Phi((x_255 - h - mu)/sigma).
    The probabilities of the 256 bins sum to 1 exactly (telescoping), and are computed stably in log
    space.  e(x, mu) = d log P / d mu = (phi(a) - phi(b)) / (sigma P).  sigma is a learned scalar by
    default (``learn_sigma``), initialised at ``sigma``.  Inputs not on bin centres are rounded to the
    nearest bin.
    """

    name = "discretized_gaussian"
    bins = 256

    def __init__(self, sigma: float = 0.1, learn_sigma: bool = True, min_sigma: float = 1e-3):
        super().__init__()
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"DiscretizedGaussianLikelihood: sigma must be positive and finite, got {sigma}")
        self.min_sigma = float(min_sigma)
        log_sigma = torch.tensor(math.log(sigma))
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)
        self.half_width = 1.0 / (self.bins - 1)

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp().clamp(min=self.min_sigma)

    def elementwise_log_prob(self, x, mu):
        _check_pair(x, mu)
        sigma = self.sigma.to(mu.dtype)
        return _DiscretizedGaussianLogProb.apply(x.to(mu.dtype), mu, sigma, self.half_width)

    def log_prob(self, x, mu):
        return _sum_nonbatch(self.elementwise_log_prob(x, mu))

    def error(self, x, mu):
        with torch.enable_grad():
            m = mu.detach().requires_grad_(True)
            lp = self.elementwise_log_prob(x, m)
            (g,) = torch.autograd.grad(lp.sum(), m)
        return g

    def bind(self, x: torch.Tensor) -> "DiscretizedGaussianEvaluator":
        """An evaluator of log P, e and d log P / d log sigma at many mu for the fixed data ``x``
        (:class:`DiscretizedGaussianEvaluator`: one pass, bit for bit ``log_prob`` / ``error`` / autograd)."""
        return DiscretizedGaussianEvaluator(self, x)

    def mean(self, mu):
        return mu.clamp(-1, 1)

    def sample(self, mu, generator=None):
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        x = (mu + self.sigma * noise).clamp(-1, 1)
        return torch.round((x + 1) * 127.5) / 127.5 - 1


class DiscretizedGaussianEvaluator:
    """log P(x | mu), e(x, mu) and d sum log P / d log sigma of a discretised Gaussian, for fixed data x, in one pass.

    A circuit evaluates the likelihood of one batch x at a new mu every step and needs the error
    e = d log P / d mu (its error units), often log P itself (records) and, when sigma is learned, the
    gradient of sum log P in log sigma. Through ``log_prob`` / ``error`` / autograd that is the forward of
    ``_DiscretizedGaussianLogProb`` up to three times (its two ``log_ndtr`` passes are most of the cost);
    :meth:`evaluate` runs the forward once and the backward's formulas on the same intermediates, and
    computes what depends on x only (bin index, edge masks, bin edges x -+ h) once, at construction.
    Every value is computed by the autograd Function's own operations in the same order (in place where
    that changes nothing), so the results are bit for bit those of ``log_prob``, ``error`` and
    ``log_prob(x, mu).sum()`` backpropagated to ``log_sigma`` (tests/test_likelihoods.py). sigma is read
    at every call (it may be learned between calls).
    """

    def __init__(self, likelihood: "DiscretizedGaussianLikelihood", x: torch.Tensor):
        self.lik = likelihood
        self.x = x
        self._bins: dict = {}

    def _data(self, dtype):
        d = self._bins.get(dtype)
        if d is None:
            x = self.x.to(dtype)
            hw = self.lik.half_width
            k = torch.round((x + 1) / (2 * hw))
            d = self._bins[dtype] = (x, k <= 0, k >= 255, x - hw, x + hw)
        return d

    def evaluate(self, mu: torch.Tensor, error: bool = True, sigma_grad: bool = False):
        """(log P elementwise (mu.shape), e (mu.shape) or None, d sum log P / d log_sigma or None).

        ``sigma_grad`` needs a learned sigma (``log_sigma`` a parameter)."""
        x, lower_edge, upper_edge, x_lo, x_hi = self._data(mu.dtype)
        _check_pair(x, mu)
        lik = self.lik
        mu = mu.detach()
        with torch.enable_grad():
            sigma = lik.sigma.to(mu.dtype) if sigma_grad else lik.sigma.detach().to(mu.dtype)
        # the forward of _DiscretizedGaussianLogProb
        inv_s = 1.0 / sigma.detach()
        a = torch.sub(x_lo, mu).mul_(inv_s).masked_fill_(lower_edge, -math.inf)
        b = torch.sub(x_hi, mu).mul_(inv_s).masked_fill_(upper_edge, math.inf)
        flip = a > 0
        hi = torch.where(flip, -a, b)
        lo = torch.where(flip, -b, a)
        log_hi = torch.special.log_ndtr(hi)
        diff = torch.special.log_ndtr(lo).sub_(log_hi).clamp_(max=0.0)
        log1mexp = torch.where(diff > -math.log(2.0), torch.expm1(diff).neg_().log_(), torch.exp(diff).neg_().log1p_())
        logp = log_hi.add_(log1mexp)
        if not (error or sigma_grad):
            return logp, None, None
        # its backward with the incoming gradient 1 (g * t = t exactly)
        half_log_2pi = 0.5 * LOG_2PI
        fin_a, fin_b = torch.isfinite(a), torch.isfinite(b)
        pa = torch.mul(a, -0.5).mul_(a).sub_(half_log_2pi).sub_(logp).exp_()
        pb = torch.mul(b, -0.5).mul_(b).sub_(half_log_2pi).sub_(logp).exp_()
        pa = torch.where(fin_a, pa, torch.zeros_like(pa))
        pb = torch.where(fin_b, pb, torch.zeros_like(pb))
        err = torch.sub(pa, pb).mul_(inv_s) if error else None
        g_log_sigma = None
        if sigma_grad:
            aa = torch.where(fin_a, a * pa, torch.zeros_like(pa))
            bb = torch.where(fin_b, b * pb, torch.zeros_like(pb))
            grad_sigma = aa.sub_(bb).mul_(inv_s).sum_to_size(sigma.shape)
            (g_log_sigma,) = torch.autograd.grad(sigma, lik.log_sigma, grad_sigma)
        return logp, err, g_log_sigma

    def log_prob(self, mu: torch.Tensor) -> torch.Tensor:
        """log P(x | mu) summed per sample (B,), as ``DiscretizedGaussianLikelihood.log_prob``."""
        return _sum_nonbatch(self.evaluate(mu, error=False)[0])


class BernoulliLikelihood(Likelihood):
    """x in {-1, 1} (pixels in [-1, 1] are mapped to y = (x + 1)/2 in [0, 1]); mu are the logits.

    log p = y log sigmoid(mu) + (1 - y) log(1 - sigmoid(mu));  e(x, mu) = y - sigmoid(mu).
    Non-binary y in (0, 1) gives the continuous-Bernoulli-free cross-entropy, as is common practice.
    """

    name = "bernoulli"

    def log_prob(self, x, mu):
        _check_pair(x, mu)
        y = (x + 1) * 0.5
        return -_sum_nonbatch(F.binary_cross_entropy_with_logits(mu, y, reduction="none"))

    def error(self, x, mu):
        return (x + 1) * 0.5 - torch.sigmoid(mu)

    def mean(self, mu):
        return torch.sigmoid(mu) * 2 - 1

    def sample(self, mu, generator=None):
        u = torch.rand(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return (u < torch.sigmoid(mu)).to(mu.dtype) * 2 - 1


LIKELIHOODS: dict[str, type[Likelihood]] = {
    "gaussian": GaussianLikelihood,
    "discretized_gaussian": DiscretizedGaussianLikelihood,
    "bernoulli": BernoulliLikelihood,
}


def make_likelihood(name: str, **kwargs) -> Likelihood:
    """Build a likelihood from the registry ``LIKELIHOODS`` by name."""
    try:
        cls = LIKELIHOODS[name]
    except KeyError:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {sorted(LIKELIHOODS)}") from None
    return cls(**kwargs)
