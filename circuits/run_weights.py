"""The forward / feedback decoder weights one circuit run reads: the analog array's reads and the weights' noise hooks."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .bound import BoundCircuit

__all__ = ["RunWeights"]


class RunWeights:
    """Forward / feedback parameters of the decoder for one step.

    Forward weights at run time t (s): for a parameter the circuit's analog array holds,
    w = array.read(name, t) (the stored conductance -- programming error of its last write -- with drift
    since that write at the array's clock + t); else the parameter itself. Then the static weight hooks
    (e.g. weight quantisation) and the dynamic ones, in source order. The feedback copy is the forward
    weights through the feedback hooks (feedback mismatch). Read noise is not here: it is fresh per
    matrix-vector product, forward and / or transposed as the ``weight_read`` source's ``reads`` says
    (``ReadNoiseHooks`` on the decoder's layers; the linear kernel's ``read_sigma`` / ``read_sigma_b``).

    Gradients pass straight through every perturbation: p_eff = p + (w - p).detach(), built with
    gradients enabled (the step runs under no_grad). ``fwd`` / ``fb`` are dicts for ``functional_call``
    (None: use the module's own parameters; ``fb is fwd`` when the feedback path has no mismatch of its own).
    """

    def __init__(self, circuit: BoundCircuit, learning: bool):
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
        self._base_memo = self._built = None
        if self.any and not self.per_step:
            self._build(0.0, None)

    def base(self, t: float) -> dict[str, torch.Tensor]:
        """Every tensor's base weights at run time t (:meth:`_read`), remembered with their :meth:`_key`: a record after
        step k (``records="device"``) and step k + 1 read the array at the same time, and steps that share the key
        read the same weights. The remembered tensors are never written in place."""
        key = self._key(t)
        if self._base_memo is not None and self._same(key, self._base_memo[0]):
            return self._base_memo[1]
        with torch.no_grad():
            out = {name: self._read(name, p, t) for name, p in self.params.items()}
        self._base_memo = (key, out) if key is not None else None
        return out

    def _key(self, t: float):
        """What the weights at run time t are a function of, or None (always rebuild: dynamic hooks draw afresh).

        The parameters' and the array's tensors (object and version: an online update or a write changes it) and,
        for each drifting array tensor, the log-age log((age + t0) / t0) its devices share when they were written
        at one time (``AnalogArray._uniform_log_age``: the drift factor is then a function of that one float32
        number, so equal numbers give bit-equal weights; in float32 consecutive steps of a presentation an hour
        after programming often share it), else (clock, t). The log-age is read on the CPU only (elsewhere it
        would synchronise the device)."""
        if self.dynamic:
            return None
        arr = self.array
        ts = list(self.params.values())
        time = ()
        if arr is not None:
            ts += [d[n] for d in (arr.stored, arr.t_write, arr.nu, arr.pair, arr.acc_xi) for n in arr.names if n in d]
            if arr.drift is not None:
                time = tuple(self._log_age(arr, n, t) for n in arr.names)
        return [(x, x._version) for x in ts], time

    @staticmethod
    def _log_age(arr, name: str, t: float):
        if name in arr.acc_xi or arr.paired(name):   # 1/f noise or a pair's own factors: not one log-age's function
            return ("t", arr.clock, t)
        if arr.t_write[name].device.type == "cpu":
            log_age = arr._uniform_log_age(name, t)
            if log_age is not None:
                return float(log_age)
        return ("t", arr.clock, t)

    @staticmethod
    def _same(a, b) -> bool:
        if a is None or b is None:
            return False
        (ta, xa), (tb, xb) = a, b
        return xa == xb and len(ta) == len(tb) and all(p is q and u == v for (p, u), (q, v) in zip(ta, tb))

    def _read(self, name: str, p: torch.Tensor, t: float) -> torch.Tensor:
        """One tensor's base weights: the array's read at run time t (or the parameter), then the static hooks."""
        arr = self.array
        w = arr.read(name, t) if (arr is not None and name in arr.stored) else p.detach()
        for hook in self.static:
            w = hook(name, w)
        return w

    def _build(self, t: float, gen):
        """This step's forward and feedback weights, one tensor at a time (each of the ~10 passes over a weight
        tensor then finds it in cache); the dynamic hooks still draw in parameter order. Kept as they are when the
        :meth:`_key` is that of the last build (the same weights, bit for bit).

        Learning (straight-through): the forward reads p_eff = p + (w - p) -- the value of the former graph
        p + (w - p.detach()) bit for bit -- as a leaf of its own (requires_grad as p); d p_eff / d p = 1, so its
        gradient is the parameter's, which the run hands on (:meth:`grad_leaves`), and no graph through p is
        built. The feedback weights take the values of fwd + (fb - fwd.detach()) without a graph: the feedback
        read gives only J^T eps, no parameter gradient flows through it."""
        key = self._key(t)
        if self.fwd is not None and self._same(key, self._built):
            return                                          # the same weights as the last build: kept
        fwd, fb = {}, {}
        memo = self._base_memo[1] if self._base_memo is not None and self._same(key, self._base_memo[0]) else None
        with torch.no_grad():
            for name, p in self.params.items():
                w = memo[name] if memo is not None else self._read(name, p, t)
                for hook in self.dynamic:
                    w = hook(name, w, t, gen)
                if self.learning:
                    pd = p.detach()
                    w = torch.sub(w, pd).add_(pd).requires_grad_(p.requires_grad)   # pd + (w - pd)
                fwd[name] = w
                if self.fb_static:
                    wd = w.detach()
                    v = wd
                    for hook in self.fb_static:
                        v = hook(name, v)
                    fb[name] = torch.sub(v, wd).add_(wd) if self.learning else v      # wd + (v - wd)
        self.fwd, self.fb = fwd, (fb if self.fb_static else fwd)
        self._built = key

    def step(self, t: float, gen) -> None:
        if self.per_step:
            self._build(t, gen)

    def grad_leaves(self, params: list) -> list:
        """What the forward's graph holds for each of ``params`` (decoder parameters): the parameter itself, or its
        straight-through leaf in ``fwd`` (whose gradient is the parameter's)."""
        if self.fwd is None or not self.learning:
            return list(params)
        name = {id(p): n for n, p in self.params.items()}
        return [self.fwd[name[id(p)]] for p in params]
