"""Sampler families beyond reversible overdamped Langevin, and their parameters (issue 16; docs/dynamics.md).

Three families sample the same law p(z | x) (at temperature T: p^(1/T)):

  "overdamped"    dz = G s dt + sqrt(2 T G) dW                                 (paper eq. 5 in continuous time)
  "nonreversible" dz = (G + J) s dt + sqrt(2 T G) dW,  J constant, J^T = -J    (div(J grad p) = 0: same law)
  "underdamped"   dz = M^-1 v dt,  dv = (s - gamma_f M^-1 v) dt + sqrt(2 gamma_f T) dW
                  (stationary law p(z | x) (x) N(0, T M); friction gamma_f > 0, diagonal mass M > 0)

with s = grad_z log p(x, z).  This module holds the parameters' validation and the skew matrices J; the
samplers live in :mod:`neuro_lpc.langevin` and ``circuits``.  It imports only torch (layer of ``theory``).

Skews (``skew``):
  None        no skew (J = 0).
  "random"    J = scale * K / ||K||_2 with K = A - A^T, A_ij ~ N(0, 1) (from ``generator``): the spectral
              norm of J is exactly ``scale``.
  "optimal"   J = scale * J_opt(P): the antisymmetric matrix of Lelievre, Nier & Pavliotis 2013 (J. Stat. Phys.
              152, "Optimal non-reversible linear drift for the convergence to equilibrium of a diffusion") for
              which every eigenvalue of (I + J) P has real part tr(P) / d, the best rate any J can give
              (:func:`optimal_skew`).  scale = 1 is the optimum; other scales are an interpolation.
  tensor      a user's (d, d) antisymmetric matrix, used as given (``skew_scale`` must then be 1).
"""
from __future__ import annotations

import math

import torch

__all__ = ["DYNAMICS", "SKEWS", "check_dynamics", "skew_matrix", "optimal_skew", "mass_vector",
           "ANTISYMMETRY_RTOL"]

DYNAMICS = ("overdamped", "nonreversible", "underdamped")
SKEWS = ("random", "optimal")
ANTISYMMETRY_RTOL = 1e-6      # ||J + J^T||_max <= rtol * max(1, ||J||_max): antisymmetric "within tolerance"


def _is_positive_finite(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0)


def _check_skew_tensor(skew: torch.Tensor, where: str, dim: int | None = None) -> None:
    if skew.ndim != 2 or skew.shape[0] != skew.shape[1]:
        raise ValueError(f"{where}: skew must be a square 2-D (d, d) tensor, got shape {tuple(skew.shape)}")
    if dim is not None and skew.shape[0] != dim:
        raise ValueError(f"{where}: skew must have shape ({dim}, {dim}) for latent dimension {dim}, "
                         f"got {tuple(skew.shape)}")
    if not bool(torch.isfinite(skew).all()):
        raise ValueError(f"{where}: skew contains NaN or inf")
    s = skew.detach().double()
    asym = float((s + s.T).abs().max()) if s.numel() else 0.0
    size = float(s.abs().max()) if s.numel() else 0.0
    if asym > ANTISYMMETRY_RTOL * max(1.0, size):
        raise ValueError(f"{where}: skew must be antisymmetric (J^T = -J), got max |J + J^T| = {asym:.3g}")


def _check_mass(mass, where: str, dim: int | None = None) -> None:
    if isinstance(mass, torch.Tensor):
        if mass.ndim != 1 or (dim is not None and mass.shape[0] != dim):
            want = f"({dim},)" if dim is not None else "(d,)"
            raise ValueError(f"{where}: mass must be a positive number or a 1-D tensor of shape {want}, "
                             f"got shape {tuple(mass.shape)}")
        if not (bool(torch.isfinite(mass).all()) and bool((mass > 0).all())):
            raise ValueError(f"{where}: mass must be positive and finite in every entry")
        return
    if not _is_positive_finite(mass):
        raise ValueError(f"{where}: mass must be a positive finite number or a 1-D positive tensor, got {mass!r}")


def check_dynamics(dynamics, skew=None, skew_scale=1.0, friction=1.0, mass=1.0, *, where="LangevinSampler") -> None:
    """One-line ValueError naming ``where`` for any bad sampler-family parameter; returns None when all are valid.

    Rules: ``dynamics`` in DYNAMICS; ``skew`` only with "nonreversible" (a skew with another family would do
    nothing: refused); a named skew in SKEWS, or a finite antisymmetric square 2-D tensor; ``skew_scale`` finite
    and >= 0 (and 1 with a tensor skew, which is used as given); ``friction`` positive finite; ``mass`` a positive
    finite number or 1-D positive tensor.  ``friction`` and ``mass`` are checked for every family (their defaults
    are valid) but used only by "underdamped".
    """
    if dynamics not in DYNAMICS:
        raise ValueError(f"{where}: dynamics must be one of {DYNAMICS}, got {dynamics!r}")
    if skew is not None:
        if dynamics != "nonreversible":
            raise ValueError(f"{where}: skew={skew if isinstance(skew, str) else 'tensor'!s} applies only to "
                             f"dynamics='nonreversible', got dynamics={dynamics!r}")
        if isinstance(skew, torch.Tensor):
            _check_skew_tensor(skew, where)
        elif skew not in SKEWS:
            raise ValueError(f"{where}: skew must be None, one of {SKEWS} or a (d, d) antisymmetric tensor, "
                             f"got {skew!r}")
    if not (isinstance(skew_scale, (int, float)) and not isinstance(skew_scale, bool)
            and math.isfinite(skew_scale) and skew_scale >= 0):
        raise ValueError(f"{where}: skew_scale must be a finite number >= 0, got {skew_scale!r}")
    if isinstance(skew, torch.Tensor) and skew_scale != 1.0:
        raise ValueError(f"{where}: skew_scale must be 1 with a tensor skew (the tensor is used as given), "
                         f"got {skew_scale!r}")
    if not _is_positive_finite(friction):
        raise ValueError(f"{where}: friction must be a positive finite number, got {friction!r}")
    _check_mass(mass, where)


def optimal_skew(precision: torch.Tensor) -> torch.Tensor:
    """Antisymmetric J with every eigenvalue of (I + J) P of real part tr(P) / d (Lelievre, Nier & Pavliotis 2013).

    Construction (LNP 2013, Sec. 3, written through the similarity (I + J) P ~ P^(1/2) (I + J) P^(1/2) = P + A,
    A = P^(1/2) J P^(1/2) antisymmetric):
      1. an orthonormal basis psi_1..psi_d with <psi_k, P psi_k> = a = tr(P)/d for every k (built one vector at a
         time: psi = cos(t) e_min + sin(t) e_max between the extreme eigenvectors of P restricted to the current
         complement, with sin(t)^2 = (a - l_min) / (l_max - l_min); the complement keeps mean eigenvalue a);
      2. in that basis P = a I + N with N symmetric, zero diagonal; with distinct weights pi_k = k,
         A_jk = N_jk (pi_j + pi_k) / (pi_k - pi_j) makes diag(pi) (N + A) antisymmetric, so N + A has purely
         imaginary eigenvalues and P + A has all real parts a;
      3. J = P^(-1/2) A P^(-1/2).
    J is unique only up to the weights pi (any distinct positive values; LNP's lambda's): pi_k = k here.
    Input: (d, d) symmetric positive definite tensor; output: (d, d) in its dtype and device (computed in float64).
    """
    if not (isinstance(precision, torch.Tensor) and precision.ndim == 2 and precision.shape[0] == precision.shape[1]):
        got = tuple(precision.shape) if isinstance(precision, torch.Tensor) else type(precision).__name__
        raise ValueError(f"optimal_skew: precision must be a square 2-D tensor, got {got}")
    P = 0.5 * (precision.detach().double().cpu() + precision.detach().double().cpu().T)
    lam, U = torch.linalg.eigh(P)
    if not (bool(torch.isfinite(lam).all()) and float(lam[0]) > 0):
        raise ValueError(f"optimal_skew: precision must be symmetric positive definite, smallest eigenvalue "
                         f"{float(lam[0]):.4g}")
    d = P.shape[0]
    psi = _constant_diagonal_basis(P)                 # (d, d), columns psi_k
    N = psi.T @ P @ psi
    N = 0.5 * (N + N.T)
    N.fill_diagonal_(0.0)
    w = torch.arange(1, d + 1, dtype=torch.float64)
    diff = w[None, :] - w[:, None]
    diff.fill_diagonal_(1.0)
    A_tilde = N * (w[:, None] + w[None, :]) / diff
    A_tilde.fill_diagonal_(0.0)
    A = psi @ A_tilde @ psi.T
    P_inv_half = (U * lam.rsqrt()) @ U.T
    J = P_inv_half @ A @ P_inv_half
    J = 0.5 * (J - J.T)
    return J.to(dtype=precision.dtype, device=precision.device)


def _constant_diagonal_basis(P: torch.Tensor) -> torch.Tensor:
    """Orthonormal columns psi_k with psi_k^T P psi_k = tr(P)/d (step 1 of :func:`optimal_skew`), float64."""
    d = P.shape[0]
    a = float(torch.diagonal(P).sum()) / d
    basis = torch.eye(d, dtype=torch.float64)      # columns span the current complement
    cols = []
    for _ in range(d - 1):
        R = basis.T @ P @ basis
        lam, V = torch.linalg.eigh(0.5 * (R + R.T))
        lo, hi = float(lam[0]), float(lam[-1])
        if hi - lo <= 1e-14 * max(1.0, abs(hi)):
            u = V[:, 0]
        else:
            sin2 = min(max((a - lo) / (hi - lo), 0.0), 1.0)
            u = math.sqrt(1.0 - sin2) * V[:, 0] + math.sqrt(sin2) * V[:, -1]
        psi = basis @ u
        cols.append(psi)
        # orthonormal basis of the complement of u inside span(basis): the other columns of a full QR of u
        Q, _ = torch.linalg.qr(torch.cat([u[:, None], torch.eye(len(u), dtype=torch.float64)], dim=1))
        basis = basis @ Q[:, 1:len(u)]
    cols.append(basis[:, 0])
    return torch.stack(cols, dim=1)


def skew_matrix(skew, dim: int, *, scale: float = 1.0, precision: torch.Tensor | None = None,
                generator: torch.Generator | None = None, dtype=torch.float32, device=None) -> torch.Tensor | None:
    """The skew J (dim, dim) for a skew choice (module docstring): None -> None; "random" -> spectral norm ``scale``;
    "optimal" -> ``scale`` * :func:`optimal_skew` (``precision``), needs precision (dim, dim); tensor -> checked
    (shape, antisymmetry) and returned as given.  "random" draws A on the CPU from ``generator`` (float64)."""
    if skew is None:
        return None
    if isinstance(skew, torch.Tensor):
        _check_skew_tensor(skew, "skew_matrix", dim)
        return skew
    if skew == "random":
        if dim < 2:
            return torch.zeros(dim, dim, dtype=dtype, device=device)
        gen_device = generator.device if generator is not None else "cpu"
        A = torch.randn(dim, dim, generator=generator, dtype=torch.float64, device=gen_device).cpu()
        K = A - A.T
        J = K * (float(scale) / float(torch.linalg.matrix_norm(K, ord=2)))
        return J.to(dtype=dtype, device=device)
    if skew == "optimal":
        if precision is None or tuple(precision.shape) != (dim, dim):
            got = None if precision is None else tuple(precision.shape)
            raise ValueError(f"skew_matrix: skew='optimal' needs a precision of shape ({dim}, {dim}), got {got}")
        return (float(scale) * optimal_skew(precision.double())).to(dtype=dtype, device=device)
    raise ValueError(f"skew_matrix: skew must be None, one of {SKEWS} or a (d, d) antisymmetric tensor, got {skew!r}")


def mass_vector(mass, dim: int, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """The diagonal of M as a (dim,) positive tensor: a number broadcast, or a (dim,) tensor checked and cast."""
    _check_mass(mass, "mass_vector", dim)
    if isinstance(mass, torch.Tensor):
        return mass.detach().to(dtype=dtype, device=device)
    return torch.full((dim,), float(mass), dtype=dtype, device=device)
