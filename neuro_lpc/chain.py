"""What every sampler path shares: the chain's result and its finite-value watch.

The eager loops of :mod:`neuro_lpc.langevin` (ULA, Algorithm 1, MALA) and the fused / CUDA-graph loops of
:mod:`neuro_lpc.fast` all return a :class:`SampleResult` and all catch a diverging chain the same way:

* per step and chain, w_b(t) = sum_i z_{b,i}(t) + log p(x_b, z_b(t-1)) goes into a device ring
  (:class:`FiniteWatch`, or the fast chain's own ring); w_b(t) is non-finite iff the state or the
  log-joint the step computed anyway is, so one small reduction per step and no host sync suffice;
* every ``check_every`` steps (every graph block) the host reads the ring once (:func:`first_non_finite`)
  and names the first bad step and chain; the eager loops then raise with :func:`raise_divergence`, which
  also names the unit (a latent unit when z is non-finite, else the decoder output unit found by
  :func:`describe_bad_log_joint`, which the circuit simulator uses too).

:func:`check_finite_input` refuses a non-finite observation x before any step.  This module is the
lowest of the sampler layers: chain <- fast <- langevin.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import DivergenceError

__all__ = ["SampleResult", "FiniteWatch", "first_non_finite", "describe_bad_log_joint", "raise_divergence",
           "check_finite_input"]


@dataclass
class SampleResult:
    """Output of ``LangevinSampler.sample``.

    z: final state (B, d).  Traces hold the state after every ``record_every``-th step:
    z_trace (R, B, d), log_joint_trace (R, B), score_norm_trace (R, B), t (R,) step numbers, R = steps // record_every.
    z_sum / z_sqsum: sums of z(t) and z(t)^2 over t = 1..T (for the forward-KL objective), when tracked.
    accept_rate: (B,) MALA acceptance rates.
    gain: (B, d) the preconditioner G of the last step (for ``preconditioner="frozen"`` the G it froze);
    None without preconditioning.
    v: (B, d) the final momenta of a dynamics="underdamped" chain (BAOAB, after the last half kick); else None.
    path: what ran the chain (``neuro_lpc.fast``): "eager"; "eager: <why the asked fast path did not apply>";
    "fused" (the torch.compile'd update ran); "fused: uncompiled (<why>)"; "fused-eager"; "graphs".
    """

    z: torch.Tensor
    steps: int
    t: torch.Tensor | None = None
    z_trace: torch.Tensor | None = None
    log_joint_trace: torch.Tensor | None = None
    score_norm_trace: torch.Tensor | None = None
    z_sum: torch.Tensor | None = None
    z_sqsum: torch.Tensor | None = None
    accept_rate: torch.Tensor | None = None
    log_joint_sum: torch.Tensor | None = None
    gain: torch.Tensor | None = None
    path: str = "eager"
    v: torch.Tensor | None = None


def first_non_finite(ring: torch.Tensor, k: int) -> tuple[int, int] | None:
    """(row, chain) of the first non-finite entry in the first k rows of a (rows, B) ring, or None (one host sync)."""
    bad = ~torch.isfinite(ring[:k])
    if not bool(bad.any()):
        return None
    row, chain = (int(i) for i in bad.nonzero()[0])
    return row, chain


class FiniteWatch:
    """Finds the first step and chain with a non-finite state or log-joint, at one small reduction per
    step and no host sync.

    Per chain, sum_i z_i(t) + log p(x, z(t-1)) is non-finite iff the state or the log-joint the step
    computed anyway is (a NaN/inf state stays non-finite: the next score is computed from it; a decoder
    that returns NaN for a chain makes its log-joint NaN even when the score, and so z, stays finite).
    The (B,) sums go into a device ring of ``check_every`` rows; the host looks every ``check_every``
    steps and, on failure, names the first bad step of the window and its first bad chain.
    """

    def __init__(self, z: torch.Tensor, check_every: int):
        self.ring = torch.zeros(check_every, z.shape[0], device=z.device, dtype=z.dtype)
        self.n = check_every

    def note(self, z: torch.Tensor, t: int, lj: torch.Tensor | None = None) -> None:
        row = self.ring[(t - 1) % self.n]
        torch.sum(z, dim=1, out=row)
        if lj is not None:
            row.add_(lj.detach())

    def first_bad(self, t: int) -> int | None:
        """Host check after step t (a sync); the first bad step since the previous check, or None."""
        found = self.first_bad_chain(t)
        return None if found is None else found[0]

    def first_bad_chain(self, t: int) -> tuple[int, int] | None:
        """(step, chain) of the first non-finite entry since the previous check, or None."""
        k = (t - 1) % self.n + 1                       # rows filled in this window
        found = first_non_finite(self.ring, k)
        if found is None:
            return None
        row, chain = found
        return t - k + 1 + row, chain


def describe_bad_log_joint(model, x: torch.Tensor, z: torch.Tensor, chain: int) -> tuple[str | None, str]:
    """(unit, text) for a chain whose log p(x, z) is non-finite while z is finite: the decoder's first
    non-finite output unit of that chain at state z, else (an overflow of the likelihood) the output unit
    with the largest prediction error |x - g(z)|. Units are named "x[c, h, w]"."""
    with torch.no_grad():
        mu = model.decode(z.detach())          # the whole batch: a decoder may depend on a chain's position
    out = mu[chain]
    bad = (~torch.isfinite(out)).nonzero()
    if len(bad):
        unit = "x[" + ", ".join(str(int(i)) for i in bad[0]) + "]"
        return unit, f"the decoder's output unit {unit} is {float(out[tuple(bad[0])])}"
    r = (x[chain].to(out.dtype) - out).abs()
    idx = torch.unravel_index(torch.argmax(r), r.shape)
    unit = "x[" + ", ".join(str(int(i)) for i in idx) + "]"
    return unit, f"the decoder's output is finite; the largest prediction error |x - g(z)| = {float(r[idx]):.3g} is at unit {unit}"


def raise_divergence(z: torch.Tensor, step: int, what: str = "Langevin chain", chain: int | None = None,
                      model=None, x: torch.Tensor | None = None) -> None:
    """Name the step, chain and unit: a latent unit when z is non-finite, else (the log-joint of ``chain``
    was) the first non-finite decoder output unit of that chain, re-evaluated at the current state."""
    bad = (~torch.isfinite(z)).nonzero()
    if len(bad):
        chain, unit = int(bad[0, 0]), int(bad[0, 1])
        raise DivergenceError(
            f"{what} diverged at step {step}: non-finite z in chain {chain}, latent unit {unit} "
            f"(try a smaller step size or preconditioning)",
            step=step, chain=chain, unit=unit,
        )
    unit, where = (describe_bad_log_joint(model, x, z, chain) if (model is not None and chain is not None)
                   else (None, "unit unknown"))
    raise DivergenceError(f"{what} diverged at step {step}: non-finite log p(x, z) in chain {chain} ({where} at the "
                          f"current state; check the decoder, its weights and the step size)",
                          step=step, chain=chain, unit=unit)


def check_finite_input(x: torch.Tensor) -> None:
    """One-line ValueError naming the first non-finite entry of x (B, ...): x must be finite."""
    if bool(torch.isfinite(x).all()):
        return
    bad = (~torch.isfinite(x)).nonzero()
    first = [int(i) for i in bad[0]]
    raise ValueError(f"x contains {len(bad)} non-finite value(s) (NaN/inf), the first in sample {first[0]} at "
                     f"unit x[{', '.join(map(str, first[1:]))}] = {float(x[tuple(first)])}")
