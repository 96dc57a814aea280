"""Warm-start (amortised inference) objectives of the paper, section 1.2, and the VAE ELBO.

q(z | x; phi) = N(mean(x), diag(var(x))) from the encoder.

* reverse KL (eq. 12-16): grad_phi KL(q || p(z|x)) = grad_phi of the negative ELBO
      -E_q[log p(x | z)] + KL(q(z|x) || p(z)),  one reparameterised sample, decoder held fixed.
* forward KL (eq. 9-11): -(1/T) sum_t log q(z(t) | x) over the Langevin chain z(1..T).  Since log q is
  quadratic in z, it is computed exactly from the chain's running sums S1 = sum_t z(t), S2 = sum_t z(t)^2:
      -(1/T) sum_t log q(z(t)|x) = 1/2 sum_i [ (S2 - 2 mean S1 + T mean^2)_i / (T var_i) + log var_i + log 2 pi ]
  which costs one encoder backward per batch instead of T.
* Jeffreys (Algorithm 1): (forward + reverse) / 2.
* none: chains start from the prior; the encoder is not trained.
"""
from __future__ import annotations

import math

import torch

from .distributed import shard_randn
from .likelihoods import LOG_2PI
from .model import GenerativeModel

WARM_START_OBJECTIVES = ("none", "forward", "reverse", "jeffreys")


def check_objective(name: str) -> str:
    if name not in WARM_START_OBJECTIVES:
        raise ValueError(f"unknown warm-start objective {name!r}; choose one of {WARM_START_OBJECTIVES}")
    return name


def gaussian_log_prob(z: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, diag(var)), (B,)."""
    return -0.5 * (((z - mean) ** 2) / var + var.log() + LOG_2PI).sum(1)


def kl_to_prior(mean: torch.Tensor, var: torch.Tensor, prior_std: float) -> torch.Tensor:
    """KL(N(mean, diag var) || N(0, s_p^2 I)), (B,)."""
    s2 = prior_std**2
    return 0.5 * ((var + mean**2) / s2 - 1 - var.log() + math.log(s2)).sum(1)


def reparameterise(mean, var, generator=None):
    eps = shard_randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)  # = torch.randn off DDP
    return mean + var.sqrt() * eps


def negative_elbo(model: GenerativeModel, x, mean, var, generator=None) -> torch.Tensor:
    """-ELBO per example, (B,): -log p(x | z) + KL(q || p(z)), z ~ q by reparameterisation."""
    z = reparameterise(mean, var, generator)
    return -model.log_likelihood(x, z) + kl_to_prior(mean, var, model.prior_std)


def forward_kl_from_moments(mean, var, z_sum, z_sqsum, T: int) -> torch.Tensor:
    """-(1/T) sum_{t=1..T} log q(z(t) | x) from the chain's sums (module docstring), (B,)."""
    quad = (z_sqsum - 2 * mean * z_sum + T * mean**2) / T
    return 0.5 * (quad / var + var.log() + LOG_2PI).sum(1)


def warm_start_loss(objective: str, model, x, mean, var, result=None, generator=None) -> torch.Tensor:
    """Scalar encoder loss for ``objective``; ``result`` is the chain's SampleResult (forward / Jeffreys)."""
    if objective == "none":
        return mean.sum() * 0.0
    parts = []
    if objective in ("reverse", "jeffreys"):
        parts.append(negative_elbo(model, x, mean, var, generator).mean())
    if objective in ("forward", "jeffreys"):
        if result is None or result.z_sum is None:
            raise ValueError("forward-KL objectives need the chain's moments (track_moments=True)")
        parts.append(forward_kl_from_moments(mean, var, result.z_sum, result.z_sqsum, result.steps).mean())
    loss = sum(parts)
    return loss / 2 if objective == "jeffreys" else loss
