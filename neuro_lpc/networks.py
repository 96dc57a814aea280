"""Decoder g_theta(z) and warm-start encoder q(z | x; phi) of the paper's Table 2 (Appendix A.1).

Layer arguments follow Table 2: Conv(out, kernel, stride, padding), default 4, 2, 1.  Decoder layers
are transposed convolutions (they upsample), except the 3x3 layer before the output, which is a plain
convolution: with padding 1 it keeps 16x16 (32x32 images) and with padding 0 it turns 16x16 into 14x14
so that the last 4/2/1 layer gives 28x28 -- the only reading of Table 2 that yields 28x28 (a
transposed 3/1/0 layer would give 18x18 and then 36x36).  Activations are SiLU; the encoder's
variance is Softplus(beta=0.3) of its second head, plus a floor ``min_var`` for numerical safety.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["SUPPORTED_IMAGE_SIZES", "ConvDecoder", "ConvEncoder", "MLPEncoder", "MLPDecoder", "MLPImageEncoder",
           "ARCHITECTURES", "build_decoder_encoder"]

SUPPORTED_IMAGE_SIZES = (28, 32, 64)


def _check_image_size(image_size: int) -> None:
    if image_size not in SUPPORTED_IMAGE_SIZES:
        raise ValueError(
            f"unsupported image size {image_size}: the paper's architecture (Table 2) is defined for "
            f"{SUPPORTED_IMAGE_SIZES}; pass your own decoder/encoder for other sizes"
        )


def _check_channels(channels: int) -> None:
    if not (isinstance(channels, int) and channels >= 1):
        raise ValueError(f"channels must be a positive integer, got {channels!r}")


class ConvDecoder(nn.Module):
    """g_theta: z (B, d) -> mean of x (B, C, H, W); Table 2, left column."""

    def __init__(self, image_size: int = 32, channels: int = 3, latent_dim: int = 40):
        super().__init__()
        _check_image_size(image_size)
        _check_channels(channels)
        self.image_size, self.channels, self.latent_dim = image_size, channels, latent_dim
        if image_size == 64:
            penultimate = nn.ConvTranspose2d(32, 32, 4, 2, 1)  # 16 -> 32
        else:
            penultimate = nn.Conv2d(32, 32, 3, 1, 0 if image_size == 28 else 1)  # 16 -> 14 | 16
        self.fc = nn.Linear(latent_dim, 256)
        self.net = nn.Sequential(
            nn.SiLU(),
            nn.Unflatten(1, (256, 1, 1)),
            nn.ConvTranspose2d(256, 64, 4, 1, 0), nn.SiLU(),  # 1 -> 4
            nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.SiLU(),  # 4 -> 8
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.SiLU(),  # 8 -> 16
            penultimate, nn.SiLU(),
            nn.ConvTranspose2d(32, channels, 4, 2, 1),  # -> image_size
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z))


class ConvEncoder(nn.Module):
    """q(z | x; phi) = N(mean(x), diag(var(x))); Table 2, right column. Returns (mean, var)."""

    def __init__(self, image_size: int = 32, channels: int = 3, latent_dim: int = 40, min_var: float = 1e-5):
        super().__init__()
        _check_image_size(image_size)
        _check_channels(channels)
        self.image_size, self.channels, self.latent_dim, self.min_var = image_size, channels, latent_dim, min_var
        first = nn.Conv2d(channels, 32, 3, 3, 1) if image_size == 64 else nn.Conv2d(channels, 32, 4, 2, 1)
        fourth = nn.Conv2d(64, 64, 3, 2, 1) if image_size == 28 else nn.Conv2d(64, 64, 4, 2, 1)
        self.net = nn.Sequential(
            first, nn.SiLU(),
            nn.Conv2d(32, 32, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(32, 64, 4, 2, 1), nn.SiLU(),
            fourth, nn.SiLU(),
            nn.Conv2d(64, 256, 4, 2, 1), nn.SiLU(),
            nn.Flatten(),
        )
        self.head = nn.Linear(256, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        expected = (self.channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"encoder expects images of shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        h = self.head(self.net(x))
        mean, raw = h.chunk(2, dim=1)
        return mean, F.softplus(raw, beta=0.3) + self.min_var


class MLPEncoder(nn.Module):
    """A small encoder for vector observations (B, n): used with vector decoders (e.g. linear models)."""

    def __init__(self, obs_dim: int, latent_dim: int, hidden: int = 256, min_var: float = 1e-5):
        super().__init__()
        self.obs_dim, self.latent_dim, self.min_var = obs_dim, latent_dim, min_var
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.SiLU(), nn.Linear(hidden, 2 * latent_dim))

    def forward(self, x):
        if x.dim() != 2 or x.shape[1] != self.obs_dim:
            raise ValueError(f"encoder expects x of shape (B, {self.obs_dim}), got {tuple(x.shape)}")
        mean, raw = self.net(x).chunk(2, dim=1)
        return mean, F.softplus(raw, beta=0.3) + self.min_var


class MLPDecoder(nn.Module):
    """g_theta: z (B, d) -> mean of x (B, C, H, W) through fully connected layers d -> h -> ... -> h -> C H W.

    Not the paper's network: the CPU-sized default of the main job on 28x28 data (docs/study.md,
    "the default decoder"): at batch 64 and T = 10 a training step costs ~1/4.5 of the Table-2 conv
    decoder's on one CPU thread and reaches a better FID in the same wall time (bench/RESULTS.md).
    SiLU activations, as Table 2."""

    def __init__(self, image_size: int = 28, channels: int = 1, latent_dim: int = 40, hidden: tuple = (512, 512)):
        super().__init__()
        _check_channels(channels)
        if not (isinstance(image_size, int) and image_size >= 1):
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        self.image_size, self.channels, self.latent_dim, self.hidden = image_size, channels, latent_dim, tuple(hidden)
        widths = (latent_dim, *self.hidden)
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.SiLU()]
        layers += [nn.Linear(widths[-1], channels * image_size * image_size), nn.Unflatten(1, (channels, image_size, image_size))]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MLPImageEncoder(nn.Module):
    """q(z | x; phi) = N(mean(x), diag(var(x))) for images through fully connected layers C H W -> h -> ... -> 2d;
    the variance head as ``ConvEncoder``'s (Softplus(beta=0.3) + ``min_var``).  Returns (mean, var)."""

    def __init__(self, image_size: int = 28, channels: int = 1, latent_dim: int = 40, hidden: tuple = (512, 512),
                 min_var: float = 1e-5):
        super().__init__()
        _check_channels(channels)
        self.image_size, self.channels, self.latent_dim, self.min_var = image_size, channels, latent_dim, min_var
        widths = (channels * image_size * image_size, *tuple(hidden))
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.SiLU()]
        self.net = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        expected = (self.channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"encoder expects images of shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        mean, raw = self.head(self.net(x)).chunk(2, dim=1)
        return mean, F.softplus(raw, beta=0.3) + self.min_var


def _conv_pair(image_size: int, channels: int, latent_dim: int):
    return ConvDecoder(image_size, channels, latent_dim), ConvEncoder(image_size, channels, latent_dim)


def _mlp_pair(image_size: int, channels: int, latent_dim: int):
    return MLPDecoder(image_size, channels, latent_dim), MLPImageEncoder(image_size, channels, latent_dim)


# name -> (image_size, channels, latent_dim) -> (decoder, encoder).  "conv": the paper's Table 2 (the reference, and the
# default for 32x32 / 64x64 data and on a GPU); "mlp": 40 -> 512 -> 512 -> C H W, the main job's CPU default on 28x28.
ARCHITECTURES = {"conv": _conv_pair, "mlp": _mlp_pair}


def build_decoder_encoder(image_size: int, channels: int, latent_dim: int = 40, architecture: str = "conv"):
    """The decoder/encoder pair named ``architecture`` (``ARCHITECTURES``); "conv" is the paper's Table-2 pair for an
    image size in (28, 32, 64) and any channel count."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[architecture](image_size, channels, latent_dim)
