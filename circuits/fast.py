"""CUDA-graph fast path of the circuit's Euler-Maruyama loop (docs/scale.md).

:func:`simulate_graphed` is ``Circuit.simulate`` for sampling runs (no learning, no HDF5 streaming) with the
``record_every`` steps between two records captured once as a CUDA graph and replayed: one launch per
block instead of 4-10 kernel launches per step (the plain linear kernels) or a forward + vector-Jacobian
product per step (the conv decoder). Records are taken between replays, eagerly (``CircuitRun.measure``,
which for the reduced linear kernel rebuilds eps from the host step count), so a graph holds steps only.

What a graph can hold: every per-step quantity must live in a tensor the graph captured. That excludes
noise sources (dynamic states, per-step Python bookkeeping), analog arrays, Adam's bias-corrected gain
units (1 - beta^t is a host number per step; ``precondition=True`` / "rms" gain units are fine), the
"frozen" preconditioner and learning. Those runs, and every run off CUDA, go through the eager loop
(``circuits.integrate.run_em``) and the trajectory's ``attrs["fast"]`` says why. The intrinsic noise comes from the
run's generator registered with the graph (``CUDAGraph.register_generator_state``): every replay draws
fresh numbers, the same law as the eager loop (the numbers themselves are the eager ones only where the
Philox offsets agree).

Buffer swaps: a step swaps z with its scratch buffer (and eps with its own for finite tau_e). After an
odd number of swaps the graph ends with the state in the other buffer; the capture then ends with one
copy back into the starting buffer, so every replay starts and ends on the same addresses.

NaN/inf: the eager loop's divergence guard (``circuits._loop.DivergenceGuard``), checked on the host after every
``check_every`` steps' worth of blocks; on failure the window is replayed eagerly from the last good snapshot to
name the first bad step and unit.
"""
from __future__ import annotations

import torch

from neuro_lpc.record import Trajectory

from ._checks import check_int
from ._loop import DivergenceGuard, Records, final_state
from .bound import BoundCircuit
from .integrate import run_em
from .run import CircuitRun

__all__ = ["simulate_graphed", "graph_unsupported_reason"]

_SWAPS = (("z", "zn"), ("_eps", "en"), ("v", "vn"))   # v: the momentum units of an underdamped circuit


def graph_unsupported_reason(circuit: BoundCircuit, accumulate_grad: bool = False) -> str | None:
    """Why this circuit's run cannot be captured (None when it can)."""
    if circuit.device.type != "cuda" or not torch.cuda.is_available():
        return "not on CUDA"
    if circuit.sources:
        return "noise sources " + ", ".join(b.source.type for b in circuit.sources)
    if circuit.array is not None:
        return "an analog array"
    cfg = circuit.config
    if cfg.preconditioner == "frozen":
        return "the frozen preconditioner"
    if isinstance(cfg.precondition, float) and 0 < cfg.precondition < 1:
        return "bias-corrected gain units (precondition=beta): use precondition='rms'"
    if accumulate_grad:
        return "learning"
    return None


class _BlockGraph:
    """``block`` steps of a CircuitRun captured as one CUDA graph."""

    def __init__(self, run: CircuitRun, block: int):
        self.run, self.block = run, block
        start = {a: getattr(run, a) for pair in _SWAPS for a in pair if getattr(run, a, None) is not None}
        k0 = run.k
        snap = run.snapshot()
        side = torch.cuda.Stream(device=run.z.device)
        side.wait_stream(torch.cuda.current_stream(run.z.device))
        with torch.cuda.stream(side):
            for _ in range(min(3, block)):   # warm-up: lazy kernel / autograd initialisation
                run.step()
        torch.cuda.current_stream(run.z.device).wait_stream(side)
        self._restore_buffers(start)
        run.restore(snap)                    # state and generator back to before the warm-up
        self.graph = torch.cuda.CUDAGraph()
        self.graph.register_generator_state(run.gen)
        with torch.cuda.graph(self.graph):
            for _ in range(block):
                run.step()
            self._restore_buffers(start, copy=True)
        run.k = k0                           # capture executes nothing: only the host step count moved

    def _restore_buffers(self, start: dict, copy: bool = False) -> None:
        run = self.run
        for a, b in _SWAPS:
            # a pair without its scratch buffer (adiabatic eps: settled afresh every step, en None) is not swapped
            if a not in start or b not in start or getattr(run, a) is start[a]:
                continue
            if copy:
                start[a].copy_(getattr(run, a))
            setattr(run, a, start[a])
            setattr(run, b, start[b])

    def replay(self) -> None:
        self.graph.replay()
        self.run.k += self.block


class _EagerBlock(_BlockGraph):
    """The same block schedule and buffer handling run eagerly (CPU checks of the bookkeeping)."""

    def __init__(self, run: CircuitRun, block: int):
        self.run, self.block = run, block
        self.start = {a: getattr(run, a) for pair in _SWAPS for a in pair if getattr(run, a, None) is not None}

    def replay(self) -> None:
        for _ in range(self.block):
            self.run.step()
        self._restore_buffers(self.start, copy=True)


def simulate_graphed(circuit: BoundCircuit, x: torch.Tensor, z0=None, steps: int = 1000, record_every: int = 10,
                     generator: torch.Generator | None = None, _emulate: bool = False) -> Trajectory:
    """``circuit.simulate(x, z0, steps, record_every, generator)`` through CUDA graphs where it can be captured
    (module docstring), else the eager loop; ``traj.attrs["fast"]`` is "graphs" or "eager: <reason>"; the final
    state is kept as ``circuit.state``.  ``_emulate`` (tests): run the graph path's block schedule eagerly, on any
    device."""
    reason = graph_unsupported_reason(circuit)
    if _emulate and reason == "not on CUDA":
        reason = None
    if reason is not None:
        traj, circuit.state = run_em(circuit, x, z0, steps=steps, record_every=record_every, generator=generator,
                                     record_path=circuit.config.record_path)
        traj.attrs["fast"] = f"eager: {reason}"
        return traj
    traj, circuit.state = _run_graphed(circuit, x, z0, steps, record_every, generator, _emulate)
    return traj


def _run_graphed(circuit: BoundCircuit, x, z0, steps: int, record_every: int, generator, emulate: bool):
    """The graphed loop: (trajectory, final state)."""
    check_int("steps", steps, 1)
    check_int("record_every", record_every, 1, steps)
    gen = circuit.make_generator(generator)
    x, z0 = circuit.initial_state(x, z0, gen, None)
    run = CircuitRun(circuit, x, z0, gen)
    run.defer_records = False                # records are measured between replays, outside the graph
    R, dt = steps // record_every, float(circuit.config.dt)
    recs = Records(run, R)
    graph = (_EagerBlock if emulate else _BlockGraph)(run, record_every)
    check_every = max(1, circuit.config.check_every // record_every)   # in blocks
    guard = DivergenceGuard(run, recs, dt)
    for r in range(R):
        graph.replay()
        recs.put(r, run)
        if (r + 1) % check_every == 0 or r == R - 1:
            guard.check(r + 1)
    for _ in range(steps - R * record_every):   # steps after the last record, eagerly
        run.step()
    if steps % record_every:
        guard.check(R)
    run.finish()
    attrs = circuit.attrs(steps=steps, record_every=record_every, kernel=run.kernel, batch=run.B,
                          accumulate_grad=False, online_lr=None, fast="emulated" if emulate else "graphs",
                          graph_block=record_every)
    return Trajectory(*recs.block(R, dt), attrs), final_state(run, steps, dt)
