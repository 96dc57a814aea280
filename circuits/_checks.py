"""Argument checks shared by the whole ``circuits`` package: integers, float64 arrays, shapes, positive numbers.

The lowest layer of ``circuits``: it imports nothing from the package (numpy, and ``neuro_lpc.validation``'s
``check_positive`` as :func:`positive`), so every module
may use it.  Each check fails with a one-line ``ValueError`` naming the argument, before any work.

* :func:`check_int` -- an ``int`` (not a ``bool``) with ``lo <= v`` and, when given, ``v <= hi``;
* :func:`array`, :func:`square` -- float64 numpy copies of tensors / array-likes, dimensions checked;
* :func:`positive`, :func:`integer` -- scalars (``integer`` also accepts numpy integers);
* :func:`stable` -- a drift matrix A with max Re eig(A) < 0 (an OU process dX = A X dt + ... has a
  stationary law only then);
* :func:`projection` -- rows v_k of a projection of an N-dimensional state;
* :func:`symmetric` -- (m + m^T) / 2 over the last two axes.
"""
from __future__ import annotations

import numpy as np

from neuro_lpc.validation import check_positive as positive  # one check for both packages

__all__ = ["check_int", "array", "positive", "integer", "square", "stable", "projection", "symmetric"]


def check_int(name, v, lo, hi=None):
    """Reject ``v`` unless it is an ``int`` (``bool`` excluded) with ``lo <= v`` and ``v <= hi`` (when ``hi`` is given)."""
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be an integer {rng}, got {v!r}")


def array(name: str, value, ndim, min_len: int = 1) -> np.ndarray:
    """float64 numpy copy of a torch tensor / array-like with its number of dimensions checked.

    ``ndim``: an int or a tuple of allowed ints; ``min_len``: the least length of axis 0.
    """
    if hasattr(value, "detach"):                       # torch.Tensor without importing torch
        value = value.detach().cpu().double().numpy()
    try:
        out = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric array, got {type(value).__name__}") from None
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if out.ndim not in allowed:
        raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimensions, got shape {out.shape}")
    if out.ndim and out.shape[0] < min_len:
        raise ValueError(f"{name} needs at least {min_len} entries along axis 0, got shape {out.shape}")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} has non-finite entries")
    return out


def integer(name: str, value, minimum: int) -> int:
    """``value`` as an int: a Python or numpy integer (``bool`` excluded) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def square(name: str, value) -> np.ndarray:
    """float64 copy of a square matrix (n, n)."""
    m = array(name, value, 2)
    if m.shape[0] != m.shape[1]:
        raise ValueError(f"{name} must be square, got shape {m.shape}")
    return m


def stable(name: str, A: np.ndarray) -> None:
    """Reject a drift matrix with an eigenvalue of real part >= 0 (no stationary law)."""
    worst = float(np.max(np.linalg.eigvals(A).real))
    if worst >= 0:
        raise ValueError(f"{name} is not stable: an eigenvalue has real part {worst:.4g} >= 0 (no stationary law)")


def projection(value, N: int) -> np.ndarray:
    """Rows v_k of a projection, shape (k, N): None -> identity (each coordinate), (N,) -> one row."""
    if value is None:
        return np.eye(N)
    V = array("projection", value, (1, 2))
    V = V[None] if V.ndim == 1 else V
    if V.shape[1] != N:
        raise ValueError(f"projection must have shape (N={N},) or (k, N={N}), got {V.shape}")
    if np.any(np.linalg.norm(V, axis=1) == 0):
        raise ValueError("projection has a zero row")
    return V


def symmetric(m: np.ndarray) -> np.ndarray:
    """(m + m^T) / 2 over the last two axes."""
    return 0.5 * (m + np.swapaxes(m, -1, -2))
