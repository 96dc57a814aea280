"""A mismatched feedback path: J^T computed with a frozen perturbed copy of the weights."""
from __future__ import annotations

from .base import BoundSource, NoiseSource

class _FeedbackMismatch(BoundSource):
    def __init__(self, source, ctx):
        super().__init__(source, ctx)
        p = source.params
        self.multiplicative = p["mode"] == "multiplicative"
        for name, w in ctx.weights.items():
            if w.dim() < 2:
                continue
            xi = ctx.frozen_randn(w.shape)
            # multiplicative: the factor 1 + std xi; additive: the offset std w_max xi
            self.frozen[name] = 1 + p["std"] * xi if self.multiplicative else p["std"] * w.detach().abs().max() * xi
        if self.frozen:
            self.feedback_static = self._apply

    def _apply(self, name, w):
        t = self.frozen.get(name)
        if t is None:
            return w
        return w * t if self.multiplicative else w + t


class FeedbackMismatch(NoiseSource):
    """A mismatched feedback path: J^T is computed with a frozen perturbed copy of the weights.

    ``mode="multiplicative"`` (default): w_fb = w (1 + std xi); ``"additive"``: w_fb = w + std w_max xi.
    ``std`` (0.1). The forward path keeps its own weights; the feedback copy also sees every forward
    perturbation (programming, drift, read noise) and then its own mismatch.

    Source: separate forward and feedback arrays in analog PC hardware are programmed independently;
    sigma ~ 0.1 follows rockpool's mismatch level (Lillicrap 2016's random feedback is the extreme case).
    """

    type = "feedback_mismatch"
    defaults = {"std": 0.1, "mode": "multiplicative"}
    nonnegative = ("std",)
    choices = {"mode": ("multiplicative", "additive")}

    def bind(self, ctx):
        if self.params["std"] == 0:
            return None
        b = _FeedbackMismatch(self, ctx)
        return b if b.active else None

