"""Fast paths of the Langevin sampler: fused preconditioner arithmetic and CUDA-graph blocks of steps.

``LangevinSampler(..., fast=...)`` (docs/scale.md):

* ``None`` (default): the eager loop of ``neuro_lpc.langevin``.
* ``"fused"``: the same chain, the preconditioner's elementwise work (Algorithm 1)

      m' = beta m + (1 - beta) s^2,   m_hat = sqrt(m' / (1 - beta^t)),   G = min(1 / (m_hat + delta), max_gain),
      z' = z + gamma G s + sqrt(2 gamma T) sqrt(G) n          (noise "literal": sqrt(m_hat) instead of sqrt(G))

  written as one out-of-place function, :func:`precondition_update`, compiled by ``torch.compile`` into
  one kernel (one Triton kernel on a GPU, one vectorised C++ loop on a CPU) instead of ~9 kernels of
  the eager form. ``compile=False`` (``fast="fused-eager"``) runs the same function uncompiled: the
  reference the compiled kernel is tested against.
* ``"graphs"``: on CUDA, blocks of k Langevin steps (decoder forward, one backward for the drift and the
  parameter gradient, preconditioner, noise) are captured once as a CUDA graph and replayed T / k times
  per chain: one launch per block instead of hundreds of kernel launches per step. Static input buffers
  hold x, z, the preconditioner state m, the step counter t (on the device, so that Adam's bias
  correction 1 - beta^t advances inside the graph) and the gradient accumulators; the noise comes from
  the run's generator registered with the graph (``CUDAGraph.register_generator_state``), whose Philox
  offset advances at every replay, so every block draws fresh noise. Off CUDA, and for what a graph
  cannot hold (records of the trajectory, MALA, the "frozen" preconditioner), the sampler runs the
  eager loop: results are the same chain either way, to float rounding (the graph's noise is the
  generator's stream consumed in the same order; the numbers equal the eager ones when the CUDA Philox
  offsets agree, which is not promised across torch versions: the *law* is the same).

The first call with a new (model, batch shape, dtype, options) captures the graph (a few eager warm-up
steps on a side stream first; the generator state is restored afterwards, so capture consumes no noise);
later calls copy the new x and z0 into the static buffers and replay. The model's parameters must stay
the same tensors (optimisers update them in place: fine); the graph is rebuilt if they are replaced.
NaN/inf are caught per block: per step and chain, sum_i z_i + log p(x, z) goes into a device ring read once
per block (a decoder that returns NaN for one chain is caught through its log-joint even while z stays finite).
"""
from __future__ import annotations

import math

import torch

from .chain import SampleResult, first_non_finite
from .distributed import shard_randn
from .errors import DivergenceError
from .gain import gain_of_rms, rms, second_moment_update

__all__ = ["FAST_MODES", "fast_unavailable_reason", "precondition_update", "compiled_precondition_update", "sample_fast", "graphs_available"]

FAST_MODES = (None, "fused", "fused-eager", "graphs")
DEFAULT_BLOCK = 50


def precondition_update(z, m, s, n, corr, gamma: float, beta: float, delta: float, max_gain: float | None,
                        noise_scale: float, literal: bool = False):
    """One preconditioned ULA update (Algorithm 1), out of place: returns (z', m', G).

    ``corr`` = 1 - beta^t (a float, or a 0-d tensor inside a CUDA graph). The order of operations is the
    eager sampler's (``neuro_lpc.langevin``), so the uncompiled function gives its numbers to rounding.
    """
    m_new = second_moment_update(m, s, beta)      # the gain units (neuro_lpc.gain)
    m_hat = rms(m_new, corr)
    G = gain_of_rms(m_hat, delta, max_gain)
    noise_var = m_hat if literal else G
    z_new = z + gamma * (G * s) + noise_scale * (torch.sqrt(noise_var) * n)
    return z_new, m_new, G


_COMPILED = None


def compiled_precondition_update():
    """:func:`precondition_update` through ``torch.compile`` (fullgraph, static shapes; built once).

    If compilation fails on this machine (no C++ / Triton toolchain), the first call warns once and the
    uncompiled function is used from then on: the same numbers, without the fusion.  The returned function
    says what ran: ``update.compiled_calls`` counts the calls the compiled kernel served, ``update.fallback`` is
    None or why it fell back (``SampleResult.path`` reports both)."""
    global _COMPILED
    if _COMPILED is None:
        compiled = torch.compile(precondition_update, fullgraph=True, dynamic=False)
        state = {"fn": compiled}

        def update(*args):
            if state["fn"] is precondition_update:
                return precondition_update(*args)
            try:
                out = state["fn"](*args)
            except Exception as e:  # noqa: BLE001 - any compiler failure: fall back to the same maths eagerly
                import warnings

                warnings.warn(f"torch.compile of the preconditioner update failed ({type(e).__name__}); "
                              f"using the uncompiled function", stacklevel=2)
                state["fn"] = precondition_update
                update.fallback = f"{type(e).__name__}: {e}".splitlines()[0][:200]
                return precondition_update(*args)
            update.compiled_calls += 1
            return out

        update.compiled_calls, update.fallback = 0, None
        _COMPILED = update
    return _COMPILED


def graphs_available(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available()


# ---------------------------------------------------------------------------------- the chain ----

class _Chain:
    """Static state of one chain batch and the body of one step (shared by the fused loop and the graph)."""

    def __init__(self, sampler, model, x, z0, generator, accumulate_grad, track_moments, update_fn, block,
                 device_t: bool):
        self.s, self.model, self.gen = sampler, model, generator
        self.x = x.detach().clone()
        self.z = z0.detach().clone()
        beta = sampler.precondition
        self.m = torch.zeros_like(self.z) if beta is not None else None
        self.G = torch.zeros_like(self.z) if beta is not None else None
        self.t = torch.zeros((), device=z0.device, dtype=torch.float64) if device_t else 0
        self.params = [p for p in model.parameters() if p.requires_grad] if accumulate_grad else []
        self.acc = [torch.zeros_like(p) for p in self.params]
        self.lj_total = torch.zeros((), device=z0.device, dtype=z0.dtype)
        self.z_sum = torch.zeros_like(self.z) if track_moments else None
        self.z_sq = torch.zeros_like(self.z) if track_moments else None
        self.ring = torch.zeros(block, z0.shape[0], device=z0.device, dtype=z0.dtype)   # per step and chain
        self.update = update_fn
        self.noise_scale = math.sqrt(2 * float(sampler.step_size) * sampler.temperature)

    def reset(self, x, z0):
        self.x.copy_(x)
        self.z.copy_(z0)
        for buf in (self.m, self.G, self.z_sum, self.z_sq, self.lj_total, *self.acc):
            if buf is not None:
                buf.zero_()
        if isinstance(self.t, torch.Tensor):
            self.t.zero_()
        else:
            self.t = 0

    def step(self, i: int) -> None:
        """Step t -> t + 1 of the chain (the eager sampler's step, module docstring); i = slot in the ring."""
        sp = self.s
        gamma, beta = float(sp.step_size), sp.precondition
        zl = self.z.detach().requires_grad_(True)
        with torch.enable_grad():
            lj = self.model.log_joint(self.x, zl)
            grads = torch.autograd.grad(lj.sum(), [zl, *self.params], allow_unused=True)
        s = grads[0]
        for a, g in zip(self.acc, grads[1:]):
            if g is not None:                           # a parameter log p does not use keeps a zero gradient
                a.add_(g)
        if self.params:
            self.lj_total.add_(lj.detach().sum())
        n = shard_randn(self.z.shape, generator=self.gen, device=self.z.device, dtype=self.z.dtype)
        if beta is None:
            self.z.add_(s, alpha=gamma).add_(n, alpha=self.noise_scale)
        else:
            if isinstance(self.t, torch.Tensor):
                self.t.add_(1.0)
                corr = 1.0 - torch.pow(beta, self.t)
            else:
                self.t += 1
                corr = 1 - beta**self.t
            z_new, m_new, G = self.update(self.z, self.m, s, n, corr, gamma, beta, sp.delta, sp.max_gain,
                                          self.noise_scale, sp.noise == "literal")
            self.z.copy_(z_new)
            self.m.copy_(m_new)
            self.G.copy_(G)
        if self.z_sum is not None:
            self.z_sum.add_(self.z)
            self.z_sq.addcmul_(self.z, self.z)
        # sum_i z_i(t) + log p(x, z(t-1)) per chain: non-finite iff the state or the step's log-joint is
        torch.sum(self.z, dim=1, out=self.ring[i])
        self.ring[i].add_(lj.detach())


def _finish(sampler, chain, steps, B, grad_scale, stash, path: str):
    if chain.params:
        scale = grad_scale if grad_scale is not None else -1.0 / (B * steps)
        for p, a, g in zip(chain.params, chain.acc, stash):
            p.grad = a.mul(scale) if g is None else g.add(a, alpha=scale)
    return SampleResult(z=chain.z.clone(), steps=steps,
                        z_sum=None if chain.z_sum is None else chain.z_sum.clone(),
                        z_sqsum=None if chain.z_sq is None else chain.z_sq.clone(),
                        log_joint_sum=chain.lj_total.clone() if chain.params else None,
                        gain=None if chain.G is None else chain.G.clone(), path=path)


def _raise(chain, step: int, bad_chain: int, stash):
    for p, g in zip(chain.params, stash):
        p.grad = g
    bad = (~torch.isfinite(chain.z[bad_chain])).nonzero()
    unit = int(bad[0, 0]) if len(bad) else None
    what = f"non-finite z, latent unit {unit}" if unit is not None else "a non-finite log-joint (decoder output)"
    raise DivergenceError(f"Langevin chain diverged at step {step}: {what} in chain {bad_chain} "
                          f"(try a smaller step size or preconditioning)", step=step, chain=bad_chain, unit=unit)


# ------------------------------------------------------------------------------------ graphs ----

class _GraphedChain:
    """A CUDA graph of ``block`` steps of a :class:`_Chain` (module docstring)."""

    def __init__(self, chain: _Chain, block: int):
        self.chain, self.block = chain, block
        gen = chain.gen
        state = gen.get_state() if gen is not None else torch.cuda.get_rng_state(chain.z.device)
        side = torch.cuda.Stream(device=chain.z.device)
        side.wait_stream(torch.cuda.current_stream(chain.z.device))
        with torch.cuda.stream(side):
            for i in range(min(3, block)):   # warm-up: lazy initialisation of kernels and autograd buffers
                chain.step(i)
        torch.cuda.current_stream(chain.z.device).wait_stream(side)
        if gen is not None:
            gen.set_state(state)
        else:
            torch.cuda.set_rng_state(state, chain.z.device)
        self.graph = torch.cuda.CUDAGraph()
        if gen is not None:
            self.graph.register_generator_state(gen)
        with torch.cuda.graph(self.graph):
            for i in range(block):
                chain.step(i)

    def replay(self):
        self.graph.replay()


def _block_size(steps: int, block: int) -> int:
    """The largest divisor of ``steps`` not above ``block`` (every replay runs whole blocks)."""
    block = max(1, min(block, steps))
    while steps % block:
        block -= 1
    return block


def _cache_key(sampler, model, x, z0, generator, accumulate_grad, track_moments, block):
    params = tuple(p.data_ptr() for p in model.parameters())
    return (id(model), params, tuple(x.shape), tuple(z0.shape), x.dtype, str(x.device), bool(accumulate_grad),
            bool(track_moments), id(generator), block, sampler.step_size, sampler.precondition, sampler.temperature,
            sampler.noise, sampler.delta, sampler.max_gain)


def fast_unavailable_reason(sampler, record_every, device) -> str | None:
    """Why the sampler's fast path does not apply to this call (None when it does); the chain then runs eager."""
    if getattr(sampler, "dynamics", "overdamped") != "overdamped":
        return f"dynamics={sampler.dynamics!r} has no fast path"
    if record_every is not None:
        return "records of the trajectory"
    if sampler.preconditioner != "adam":
        return f"the {sampler.preconditioner!r} preconditioner"
    if sampler.fast == "graphs" and not graphs_available(device):
        return "not on CUDA"
    return None


def sample_fast(sampler, model, x, z0, record_every, generator, accumulate_grad, grad_scale, track_moments):
    """The fast form of ``LangevinSampler._sample_ula``; None where it does not apply (the caller runs eager)."""
    mode = sampler.fast
    if mode is None or fast_unavailable_reason(sampler, record_every, z0.device) is not None:
        return None
    use_graph = mode == "graphs"
    T, B = sampler.steps, z0.shape[0]
    update = precondition_update if mode == "fused-eager" else compiled_precondition_update()
    params = [p for p in model.parameters() if p.requires_grad] if accumulate_grad else []
    stash = [p.grad for p in params]
    if use_graph:
        block = _block_size(T, sampler.graph_block)
        cache = sampler.__dict__.setdefault("_graphs", {})
        key = _cache_key(sampler, model, x, z0, generator, accumulate_grad, track_moments, block)
        if key not in cache:
            cache.clear()                             # one graph per sampler: the training shape
            chain = _Chain(sampler, model, x, z0, generator, accumulate_grad, track_moments, update, block, True)
            cache[key] = _GraphedChain(chain, block)
        graphed = cache[key]
        chain = graphed.chain
        chain.reset(x, z0)
        for b in range(T // block):
            graphed.replay()
            bad = first_non_finite(chain.ring, block)       # one host sync per block
            if bad is not None:
                _raise(chain, b * block + bad[0] + 1, bad[1], stash)
        return _finish(sampler, chain, T, B, grad_scale, stash, "graphs")
    check = sampler.check_every
    # the compiled update takes 1 - beta^t as a device tensor (a Python float would be a new constant, and a
    # recompilation, at every step); the uncompiled reference keeps the eager sampler's host float
    chain = _Chain(sampler, model, x, z0, generator, accumulate_grad, track_moments, update, check,
                   device_t=mode != "fused-eager")
    for t in range(1, T + 1):
        chain.step((t - 1) % check)
        if t % check == 0 or t == T:
            k = (t - 1) % check + 1
            bad = first_non_finite(chain.ring, k)
            if bad is not None:
                _raise(chain, t - k + 1 + bad[0], bad[1], stash)
    if mode == "fused-eager":
        path = "fused-eager"
    else:
        path = "fused" if update.fallback is None else f"fused: uncompiled ({update.fallback})"
    return _finish(sampler, chain, T, B, grad_scale, stash, path)
