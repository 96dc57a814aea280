"""The gain units of the diagonal preconditioner: Algorithm 1's second-moment estimate and gain, written once.

    m' = beta m + (1 - beta) s^2                    (the Euler step of tau_m dm = (s^2 - m) dt, beta = 1 - dt / tau_m)
    m_hat = sqrt(m' / (1 - beta^t))                  (Adam's bias correction; none for the continuous "rms" form)
    G = min(1 / (m_hat + delta), G_max)              (G_max: the gain unit's saturation, ``neuro_lpc.langevin``)

Used by the discrete sampler (``neuro_lpc.langevin``, in place), its fused / graphed update (``neuro_lpc.fast``, out
of place so that ``torch.compile`` and CUDA graphs can hold it) and the circuit's gain units (``circuits.units``).
"""
from __future__ import annotations

import torch

__all__ = ["second_moment_update_", "second_moment_update", "rms", "gain_of_rms"]


def second_moment_update_(m: torch.Tensor, s: torch.Tensor, beta) -> torch.Tensor:
    """m <- beta m + (1 - beta) s^2 in place (beta a float, or a per-unit tensor broadcast over the batch)."""
    if isinstance(beta, torch.Tensor):
        return m.mul_(beta).addcmul_(s * s, 1.0 - beta)
    return m.mul_(beta).addcmul_(s, s, value=1 - beta)


def second_moment_update(m: torch.Tensor, s: torch.Tensor, beta) -> torch.Tensor:
    """beta m + (1 - beta) s^2 out of place (the same equation; for compiled / graphed updates)."""
    return m * beta + (1.0 - beta) * (s * s)


def rms(m: torch.Tensor, correction=None) -> torch.Tensor:
    """m_hat = sqrt(m / correction) (correction = 1 - beta^t, a float or a 0-d tensor), or sqrt(m) without one."""
    return torch.sqrt(m / correction) if correction is not None else torch.sqrt(m)


def gain_of_rms(m_hat: torch.Tensor, delta: float, max_gain: float | None) -> torch.Tensor:
    """G = min(1 / (m_hat + delta), max_gain) (a new tensor; ``m_hat`` is left as it is)."""
    G = 1.0 / (m_hat + delta)
    return G if max_gain is None else torch.clamp(G, max=max_gain)
