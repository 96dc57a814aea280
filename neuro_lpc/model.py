"""GenerativeModel: p(x, z; theta) = L(x; g_theta(z)) N(z; 0, s_p^2 I)  (DESIGN.md section 3).

    log p(x, z) = log L(x; g(z)) + log N(z; 0, s_p^2 I)
    grad_z log p(x, z) = J_g(z)^T e(x, g(z)) - z / s_p^2

The decoder is any ``nn.Module`` from z (B, d) to the mean of x: a vector (B, n) or an image
(B, C, H, W).  x must have the decoder's output shape; that is checked once per call with a clear
error, from a cached probe of the decoder's output shape.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .distributed import shard_randn
from .likelihoods import LOG_2PI, Likelihood


def _infer_latent_dim(decoder: nn.Module) -> int | None:
    d = getattr(decoder, "latent_dim", None)
    if isinstance(d, int):
        return d
    if isinstance(decoder, nn.Linear):
        return decoder.in_features
    for m in decoder.modules():
        if isinstance(m, nn.Linear):
            return m.in_features
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)):
            return None
    return None


class GenerativeModel(nn.Module):
    """Decoder + likelihood + isotropic Gaussian prior.

    Args:
        decoder: nn.Module, z (B, d) -> mean of x.
        likelihood: a ``neuro_lpc.likelihoods.Likelihood``.
        prior_std: s_p, the prior's standard deviation.
        latent_dim: d; inferred from ``decoder.latent_dim`` or its first ``nn.Linear`` when omitted.
    """

    def __init__(self, decoder: nn.Module, likelihood: Likelihood, prior_std: float = 1.0, latent_dim: int | None = None):
        super().__init__()
        if not isinstance(decoder, nn.Module):
            raise TypeError(f"decoder must be a torch.nn.Module, got {type(decoder).__name__}")
        if not isinstance(likelihood, Likelihood):
            raise TypeError(f"likelihood must be a neuro_lpc Likelihood, got {type(likelihood).__name__}")
        if not (prior_std > 0 and math.isfinite(prior_std)):
            raise ValueError(f"prior_std must be positive and finite, got {prior_std}")
        self.decoder = decoder
        self.likelihood = likelihood
        self.prior_std = float(prior_std)
        latent_dim = latent_dim if latent_dim is not None else _infer_latent_dim(decoder)
        if latent_dim is None:
            raise ValueError("cannot infer the latent dimension from the decoder: pass latent_dim=")
        self.latent_dim = int(latent_dim)
        self._output_shape: tuple[int, ...] | None = None

    # ----------------------------------------------------------------- shapes
    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one observation, probed once from the decoder."""
        if self._output_shape is None:
            p = next(self.decoder.parameters(), None)
            dev = p.device if p is not None else torch.device("cpu")
            dt = p.dtype if p is not None else torch.get_default_dtype()
            was_training = self.decoder.training
            self.decoder.eval()
            with torch.no_grad():
                out = self.decoder(torch.zeros(1, self.latent_dim, device=dev, dtype=dt))
            self.decoder.train(was_training)
            self._output_shape = tuple(out.shape[1:])
        return self._output_shape

    def check_inputs(self, x: torch.Tensor, z: torch.Tensor | None = None) -> None:
        """Raise a clear ValueError when x or z does not fit the model."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if tuple(x.shape[1:]) != self.output_shape:
            raise ValueError(
                f"x has shape {tuple(x.shape)} but the decoder produces observations of shape (B, "
                f"{', '.join(map(str, self.output_shape))})"
            )
        if z is not None:
            if z.dim() != 2 or z.shape[1] != self.latent_dim:
                raise ValueError(f"z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
            if z.shape[0] != x.shape[0]:
                raise ValueError(f"x and z batch sizes differ: {x.shape[0]} vs {z.shape[0]}")

    # ------------------------------------------------------------- densities
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, s_p^2 I), (B,)."""
        d = z.shape[1]
        return -0.5 * (z * z).sum(1) / self.prior_std**2 - d * (math.log(self.prior_std) + 0.5 * LOG_2PI)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.likelihood.log_prob(x, self.decoder(z))

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x, z; theta), shape (B,)."""
        return self.log_likelihood(x, z) + self.log_prior(z)

    def score(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """grad_z log p(x, z), shape (B, d); no parameter gradients are computed."""
        return self.log_joint_and_score(x, z)[1]

    def log_joint_and_score(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            lj = self.log_joint(x, zz)
            (s,) = torch.autograd.grad(lj.sum(), zz)
        return lj.detach(), s

    def error(self, x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        """Precision-weighted prediction error e(x, mu) = d log L / d mu."""
        return self.likelihood.error(x, mu)

    # -------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, mean: bool = True) -> torch.Tensor:
        """Ancestral samples: z ~ N(0, s_p^2 I), x = E[x | z] (``mean=True``) or x ~ L(x; g(z))."""
        p = next(self.decoder.parameters())
        z = self.prior_std * torch.randn(n, self.latent_dim, generator=generator, device=p.device, dtype=p.dtype)
        mu = self.decoder(z)
        return self.likelihood.mean(mu) if mean else self.likelihood.sample(mu, generator)

    def prior_sample(self, n: int, generator: torch.Generator | None = None, like: torch.Tensor | None = None):
        dev = like.device if like is not None else next(self.parameters()).device
        dt = like.dtype if like is not None else next(self.parameters()).dtype
        # shard_randn is torch.randn except in a data-parallel rank (neuro_lpc.distributed: the global batch's draw)
        return self.prior_std * shard_randn((n, self.latent_dim), generator=generator, device=dev, dtype=dt)
