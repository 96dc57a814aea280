"""The shared problems of the tests (as torchdiffeq's tests/problems.py): small models -- linear, MLP, conv, a decoder
that counts its calls --, moment checks and stationary samples of a linear circuit."""
import math

import numpy as np
import torch
from torch import nn

from neuro_lpc import GaussianLikelihood, GenerativeModel


F64 = torch.float64


def linear_model(d=3, n=5, sigma=0.5, seed=0, scale=1.0, learn_sigma=False):
    g = torch.Generator().manual_seed(seed)
    dec = nn.Linear(d, n).double()
    with torch.no_grad():
        dec.weight.copy_(torch.randn(n, d, generator=g, dtype=F64) * scale / math.sqrt(n))
        dec.bias.copy_(torch.randn(n, generator=g, dtype=F64) * 0.1)
    model = GenerativeModel(dec, GaussianLikelihood(sigma, learn_sigma=learn_sigma).double())
    x1 = torch.randn(1, n, generator=g, dtype=F64)
    return model, x1


def mlp_model(d=3, n=6, sigma=0.5, seed=0):
    torch.manual_seed(seed)
    dec = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, n)).double()
    return GenerativeModel(dec, GaussianLikelihood(sigma).double(), latent_dim=d)


def conv_model(d=4, sigma=0.5, seed=0, learn_sigma=False):
    torch.manual_seed(seed)
    dec = nn.Sequential(nn.Linear(d, 8 * 2 * 2), nn.Unflatten(1, (8, 2, 2)), nn.SiLU(),
                        nn.ConvTranspose2d(8, 1, 4, 2, 1)).double()  # -> (1, 4, 4)
    return GenerativeModel(dec, GaussianLikelihood(sigma, learn_sigma=learn_sigma).double(), latent_dim=d)


def Wbx(model, x1):
    return model.decoder.weight.detach(), model.decoder.bias.detach(), x1[0]


def assert_moments(samples, mean, cov, n_sigma=5.0, n_eff=None):
    """Empirical mean/cov of samples (N, k) against (mean, cov) within n_sigma Monte Carlo errors."""
    samples = torch.as_tensor(samples, dtype=F64)
    mean, cov = torch.as_tensor(mean, dtype=F64), torch.as_tensor(cov, dtype=F64)
    N = samples.shape[0] if n_eff is None else n_eff
    var = torch.diagonal(cov)
    z_mean = (samples.mean(0) - mean).abs() / (var / N).sqrt()
    se_cov = ((var[:, None] * var[None, :] + cov**2) / N).sqrt()
    z_cov = (torch.cov(samples.T) - cov).abs() / se_cov
    assert z_mean.max() < n_sigma, (samples.mean(0), mean, z_mean)
    assert z_cov.max() < n_sigma, (torch.cov(samples.T), cov, z_cov)
    return z_cov.max().item()


def max_z_cov(samples, cov):
    samples, cov = torch.as_tensor(samples, dtype=F64), torch.as_tensor(cov, dtype=F64)
    var = torch.diagonal(cov)
    se = ((var[:, None] * var[None, :] + cov**2) / samples.shape[0]).sqrt()
    return ((torch.cov(samples.T) - cov).abs() / se).max().item()


def relaxation_steps(A, dt):
    """Steps of one e-folding of the slowest mode of the linear drift A."""
    return 1.0 / (np.min(np.abs(np.linalg.eigvals(A).real)) * dt)


def stationary_samples(circuit, x1, chains, A, dt, records=10, record_eps=True, seed=0, z0=None, burn=8.0,
                       spacing=3.0):
    """(z, eps) samples: `records` snapshots spaced `spacing` relaxation times, after `burn` of burn-in."""
    e_fold = relaxation_steps(A, dt)
    spacing = int(math.ceil(spacing * e_fold))
    burn = int(math.ceil(burn * e_fold / spacing)) * spacing
    x = x1.expand(chains, -1)
    z0 = torch.zeros(chains, circuit.model.latent_dim, dtype=F64) if z0 is None else z0
    traj = circuit.simulate(x, z0, steps=burn + records * spacing, record_every=spacing, record_eps=record_eps,
                            generator=torch.Generator().manual_seed(seed))
    keep = slice(burn // spacing, None)
    z = traj.z[keep].reshape(-1, traj.z.shape[-1])
    if not record_eps:
        return z
    eps = traj.extras["eps"][keep].reshape(z.shape[0], -1)
    return torch.cat([z, eps], 1)


class CountingDecoder(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, z):
        self.calls += 1
        return self.inner(z)


def counted_model():
    """A one-layer MLP decoder that counts its forward calls (0 after construction): checks run before any work."""
    dec = CountingDecoder(nn.Sequential(nn.Linear(3, 6)).double())
    model = GenerativeModel(dec, GaussianLikelihood(0.5).double(), latent_dim=3)
    model.output_shape  # probe once
    dec.calls = 0
    return model, dec


def tiny_image_model(d=8, seed=0, sigma=0.3, learn_sigma=False):
    """(model, encoder): a small MLP decoder d -> 64 -> 28x28 and an MLP encoder on the embedded images (fast enough
    to train under every noise source and learning mode)."""
    from neuro_lpc import MLPEncoder
    torch.manual_seed(seed)
    dec = nn.Sequential(nn.Linear(d, 64), nn.Tanh(), nn.Linear(64, 784), nn.Unflatten(1, (1, 28, 28)))
    model = GenerativeModel(dec, GaussianLikelihood(sigma, learn_sigma=learn_sigma), latent_dim=d)
    enc = nn.Sequential(nn.Flatten(), MLPEncoder(784, d, hidden=64))
    return model, enc
