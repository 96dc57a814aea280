"""Input checks shared by the diagnostics modules: float64 numpy copies, shapes, positive numbers.

Every public function converts its inputs here first, so bad input fails with a one-line ValueError
before any work.  (Kept separate from ``circuits.analysis``, which re-exports this package: importing
it from here would be circular.)
"""
from __future__ import annotations

import numpy as np


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


def positive(name: str, value, allow_zero: bool = False) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} finite number, got {value}")
    return value


def integer(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def square(name: str, value) -> np.ndarray:
    m = array(name, value, 2)
    if m.shape[0] != m.shape[1]:
        raise ValueError(f"{name} must be square, got shape {m.shape}")
    return m


def stable(name: str, A: np.ndarray) -> None:
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
    return 0.5 * (m + np.swapaxes(m, -1, -2))
