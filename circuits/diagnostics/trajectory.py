"""Diagnostics of recorded trajectories: Fano factors, across-chain spread, and 2-D PCA views of each chain.

Torch or numpy in, the same type out; float64; vectorised over chains; time is axis 0 throughout.

* :func:`fano_factor` - var / mean along an axis.
* :func:`across_chain_spread` - the across-chain standard deviation at each time (variability quenching).
* :func:`pca_projection` - each chain's trajectory in its own top-two principal plane (paper Appendix
  A.2); :func:`pca_landscape_grid` - latent points on a grid in that plane, for log-joint contours.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .._checks import positive
from ._tensors import float64_tensor, like_input

__all__ = ["fano_factor", "across_chain_spread", "PCAProjection", "pca_projection", "pca_landscape_grid"]


def fano_factor(x, axis: int = 0):
    """Fano factor var / mean along ``axis`` (ddof=1): 1 for Poisson counts.

    Meaningful for non-negative quantities (rates, counts); axis 0 is time, axis 1 across trials/chains.
    """
    xt, as_numpy = float64_tensor("x", x, 1)
    if xt.shape[axis] < 2:
        raise ValueError(f"fano_factor needs at least 2 entries along axis {axis}, got shape {tuple(xt.shape)}")
    return like_input(xt.var(dim=axis, unbiased=True) / xt.mean(dim=axis), as_numpy)


def across_chain_spread(z_trace):
    """Across-chain standard deviation at each time, averaged over units: z (R, B, d) -> (R,).

    spread(t) = (1/d) sum_i std_b z_{b,i}(t) (ddof=1): the across-trial variability whose drop after
    stimulus onset is variability quenching.
    """
    zt, as_numpy = float64_tensor("z_trace", z_trace, 3, min_len=1)
    if zt.ndim != 3 or zt.shape[1] < 2:
        raise ValueError(f"z_trace must have shape (R, B>=2, d), got {tuple(zt.shape)}")
    return like_input(zt.std(dim=1, unbiased=True).mean(dim=-1), as_numpy)


class PCAProjection(NamedTuple):
    """Result of :func:`pca_projection` (arrays of the input's type)."""

    coords: object            # (R, B, 2): (z(t) - z(T)) . u_k, the final state at the origin
    directions: object        # (B, 2, d): orthonormal principal directions u_1, u_2 per chain
    explained_variance: object  # (B, 2): fraction of the displacement variance on u_1, u_2
    final_state: object       # (B, d): z(T), the origin of the projection


def pca_projection(z_trace, center: bool = True) -> PCAProjection:
    """Two-dimensional projection of each chain's trajectory (paper Appendix A.2, after Li et al. 2017).

    For chain b, PCA of the displacements D = [z(1) - z(T), ..., z(T-1) - z(T)] from the final state
    (records 0..R-2 here); every state is then projected as coords(t) = (z(t) - z(T)) . u_k, so the
    final state sits at the origin. ``center=True`` removes the mean displacement before the PCA
    (as sklearn's PCA in Li et al.'s code); ``center=False`` takes the directions of largest second
    moment about z(T). Signs are fixed so the start z(0) has non-negative coordinates. Batched SVD,
    no loop over chains. z_trace (R >= 3, B, d >= 2).
    """
    zt, as_numpy = float64_tensor("z_trace", z_trace, 3, min_len=3)
    if zt.ndim != 3 or zt.shape[2] < 2:
        raise ValueError(f"z_trace must have shape (R>=3, B, d>=2), got {tuple(zt.shape)}")
    final = zt[-1]
    displacements = (zt[:-1] - final).transpose(0, 1)              # (B, R-1, d)
    data = displacements - displacements.mean(1, keepdim=True) if center else displacements
    _, singular, vh = torch.linalg.svd(data, full_matrices=False)  # vh (B, k, d)
    directions = vh[:, :2]
    coords = torch.einsum("rbd,bkd->rbk", zt - final, directions)
    sign = torch.where(coords[0] < 0, -1.0, 1.0).to(coords.dtype)  # (B, 2)
    coords, directions = coords * sign, directions * sign[..., None]
    power = singular ** 2
    explained = power[:, :2] / power.sum(1, keepdim=True).clamp_min(torch.finfo(power.dtype).tiny)
    return PCAProjection(*(like_input(v, as_numpy) for v in (coords, directions, explained, final)))


def pca_landscape_grid(projection: PCAProjection, resolution: int = 25, extent: float | None = None):
    """Latent points on a grid in each chain's PCA plane, to evaluate the log joint for contour plots.

    points[i, j, b] = z_b(T) + a_i u_{b,1} + c_j u_{b,2} with a, c on ``linspace(-extent, extent,
    resolution)``; extent defaults to 1.1 x the largest |coordinate| of the projected trajectories.
    Returns ``(grid (resolution,), points (resolution, resolution, B, d))``.
    """
    as_numpy = not isinstance(projection.coords, torch.Tensor)
    coords, directions, _, final = (torch.as_tensor(v).to(torch.float64) for v in projection)
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    extent = 1.1 * float(coords.abs().max()) if extent is None else positive("extent", extent)
    grid = torch.linspace(-extent, extent, resolution, dtype=torch.float64, device=coords.device)
    points = (final[None, None] + grid[:, None, None, None] * directions[None, None, :, 0]
              + grid[None, :, None, None] * directions[None, None, :, 1])
    return like_input(grid, as_numpy), like_input(points, as_numpy)
