"""Forward / feedback decoder parameters of one circuit run: the analog array's reads and the weight hooks."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .circuit import Circuit

__all__ = ["_Weights"]


class _Weights:
    """Forward / feedback parameters of the decoder for one step.

    Forward weights at run time t (s): for a parameter the circuit's analog array holds,
    w = array.read(name, t) (the stored conductance -- programming error of its last write -- with drift
    since that write at the array's clock + t); else the parameter itself. Then the static weight hooks
    (e.g. weight quantisation) and the dynamic ones, in source order. The feedback copy is the forward
    weights through the feedback hooks (feedback mismatch). Read noise is not here: it is fresh per
    matrix-vector product (``ReadNoiseHooks`` on the decoder's layers / the linear kernel).

    Gradients pass straight through every perturbation: p_eff = p + (w - p).detach(), built with
    gradients enabled (the step runs under no_grad). ``fwd`` / ``fb`` are dicts for ``functional_call``
    (None: use the module's own parameters; ``fb is fwd`` when the feedback path has no mismatch of its own).
    """

    def __init__(self, circuit: Circuit, learning: bool):
        self.c = circuit
        self.params = dict(circuit.model.decoder.named_parameters())
        h = circuit.hooks
        self.static, self.dynamic, self.fb_static = h["weight_static"], h["weight_dynamic"], h["feedback_static"]
        self.array = circuit.array
        self.any = bool(self.static or self.dynamic or self.fb_static or self.array is not None)
        drifting = self.array is not None and self.array.time_dependent
        self.per_step = bool(self.dynamic) or drifting or (learning and self.any)
        self.learning = learning
        arr = self.array
        # the forward path is the true model's when nothing perturbs it (e.g. in-memory learning on devices that
        # neither drift nor read noisily, whose stored values are the parameters): records may then reuse it
        self.forward_exact = not (self.static or self.dynamic) and (arr is None or (
            arr.drift is None and arr.read_std == 0
            and all(torch.equal(arr.stored[n], self.params[n].detach()) for n in arr.names)))
        self.fwd = self.fb = None
        if self.any and not self.per_step:
            self._build(0.0, None)

    def _base(self, t: float) -> dict[str, torch.Tensor]:
        out = {}
        arr = self.array
        with torch.no_grad():
            for name, p in self.params.items():
                w = arr.read(name, t) if (arr is not None and name in arr.stored) else p.detach()
                for hook in self.static:
                    w = hook(name, w)
                out[name] = w
        return out

    def _build(self, t: float, gen):
        fwd = {}
        with torch.no_grad():
            for name, w in self._base(t).items():
                for hook in self.dynamic:
                    w = hook(name, w, t, gen)
                fwd[name] = w
        if self.learning:  # straight-through: gradients reach the unperturbed parameters. The caller runs
            # the step under no_grad (the state update builds no graph), so the graph is enabled here:
            # without it p_eff has no grad_fn and no gradient reaches the stored parameters
            with torch.enable_grad():
                fwd = {name: p + (fwd[name] - p.detach()) for name, p in self.params.items()}
        if self.fb_static:
            fb = {}
            with torch.no_grad():
                for name, w in fwd.items():
                    w = w.detach()
                    for hook in self.fb_static:
                        w = hook(name, w)
                    fb[name] = w
            if self.learning:
                with torch.enable_grad():
                    fb = {name: fwd[name] + (fb[name] - fwd[name].detach()) for name in fwd}
        else:
            fb = fwd
        self.fwd, self.fb = fwd, fb

    def step(self, t: float, gen) -> None:
        if self.per_step:
            self._build(t, gen)
