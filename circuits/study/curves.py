"""Learning curves of every training row (the paper's Fig. 5B) and the converged / still-improving flag.

A curve is a cheap sample-quality metric at a few optimiser steps of a training: ``curve_samples`` generative
samples (through the row's read-out path: the model as it sits on its device for the analog rows) scored by KID
against the real test split on a feature network that costs almost nothing next to the training -- the small
classifier trained on the data set (``neuro_lpc.metrics.SmallClassifierFeatures``; Inception where the data set has
no labels).  KID is unbiased at any n, so points with few samples sit where the full metric would, only noisier;
each point carries its se (from subsets, ``neuro_lpc.metrics.kernel_inception_distance``).

The steps are log-spaced, halving back from the end: total/2^(P-1), ..., total/2, total.  The last two points are
then one doubling of the training apart, and :func:`curve_status` reads the end of the curve:

* ``converged``       -- the last point is within ``TIE_SE`` combined se of the one before (doubling the training
                         changed nothing measurable);
* ``still improving`` -- the last point is lower by more than that (the row's rank is a statement about this
                         budget only);
* ``got worse``       -- higher by more than that (over-fitting or instability at the end of the budget);
* ``too short``       -- fewer than two points.

Points are appended to ``curve.jsonl`` in the training's folder as they are measured (a crash keeps them; a
resumed training drops points past its checkpoint) and the time they take is not training time: the trainer's
wall clock excludes it (``neuro_lpc.train.Trainer.step_hooks``), so the same-wall-time VAE is matched on training
alone.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import torch

TIE_SE = 2.0
CONVERGED, IMPROVING, WORSE, SHORT = "converged", "still improving", "got worse", "too short"
CURVE_FILE = "curve.jsonl"


def curve_steps(total: int, points: int) -> list[int]:
    """``points`` log-spaced optimiser steps ending at ``total`` (halving back from the end), without repeats."""
    if points <= 0 or total <= 0:
        return []
    steps = sorted({max(1, round(total / 2 ** k)) for k in range(points)})
    return steps


def curve_status(points: list[dict], key: str = "kid", tie_se: float = TIE_SE) -> dict:
    """The flag of a curve from its last two points (module docstring): ``{"status", "change", "change_se"}``
    (change: last minus the one before; lower is better)."""
    pts = [p for p in points if _finite(p.get(key))]
    if len(pts) < 2:
        return {"status": SHORT, "change": None, "change_se": None}
    a, b = pts[-2], pts[-1]
    se = math.hypot(a.get(f"{key}_se") or 0.0, b.get(f"{key}_se") or 0.0)
    d = b[key] - a[key]
    if abs(d) <= tie_se * se:
        status = CONVERGED
    else:
        status = IMPROVING if d < 0 else WORSE
    return {"status": status, "change": d, "change_se": se, "from_step": a.get("step"), "to_step": b.get("step")}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class CurveRecorder:
    """A trainer step hook (``Trainer.step_hooks``): at the steps of ``steps`` it draws samples with
    ``sample(trainer, n, generator)``, scores them with ``score(images) -> {"kid", "kid_se", ...}`` and appends the
    point to ``folder/curve.jsonl``; returns the seconds it took (not counted as training)."""

    def __init__(self, steps: list[int], sample: Callable, score: Callable, n: int, seed: int, folder: Path | None,
                 points: int | None = None):
        self.steps, self.sample, self.score, self.n, self.seed = set(int(s) for s in steps), sample, score, n, seed
        self.n_points = points if points is not None else len(self.steps)
        self.walls: list[float] | None = None  # a wall-time budget training: points at budget / 2^k of training time
        self.path = Path(folder) / CURVE_FILE if folder is not None else None
        self.points: list[dict] = []
        self._synced = False

    def resume(self, step: int) -> None:
        """Keep the points measured up to ``step`` (a resumed training), drop later ones."""
        if self.path is None or not self.path.is_file():
            return
        pts = []
        for ln in self.path.read_text().splitlines():
            try:
                p = json.loads(ln)
            except ValueError:          # a line cut short by a kill
                continue
            if isinstance(p, dict) and p.get("step", 0) <= step:
                pts.append(p)
        self.points = pts
        self.path.write_text("".join(json.dumps(p) + "\n" for p in pts))

    def __call__(self, trainer) -> float:
        if not self._synced:            # first step of this fit: keep the points of a resumed run's earlier part only
            self.resume(trainer.global_step - 1)
            self._synced = True
            budget = getattr(trainer.config, "max_wall_s", None)
            if budget:                  # steps unknown in advance: log-spaced fractions of the wall budget instead
                self.walls = sorted(budget / 2 ** k for k in range(self.n_points))
        if self.walls is not None:
            due = bool(self.walls) and trainer.train_wall_s >= self.walls[0]
            while self.walls and trainer.train_wall_s >= self.walls[0]:
                self.walls.pop(0)
            if not due:
                return 0.0
        elif trainer.global_step not in self.steps or any(p["step"] == trainer.global_step for p in self.points):
            return 0.0
        t0 = time.perf_counter()
        was = trainer.model.training, trainer.encoder.training
        trainer.model.eval(), trainer.encoder.eval()
        try:
            with torch.no_grad():
                images = self.sample(trainer, self.n, torch.Generator(device=trainer.device).manual_seed(self.seed))
            finite = bool(torch.isfinite(images).all())
            point = dict(self.score(images)) if finite else {"kid": float("nan"), "kid_se": float("nan")}
        finally:
            trainer.model.train(was[0]), trainer.encoder.train(was[1])
        point.update(step=int(trainer.global_step), train_wall_s=float(getattr(trainer, "train_wall_s", float("nan"))),
                     n=int(images.shape[0]), eval_s=time.perf_counter() - t0)
        self.points.append(point)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(point) + "\n")
        return time.perf_counter() - t0


def read_curve(folder: Path) -> list[dict]:
    """The points in ``folder/curve.jsonl`` (a cached model's curve)."""
    path = Path(folder) / CURVE_FILE
    if not path.is_file():
        return []
    pts = []
    for ln in path.read_text().splitlines():
        try:
            pts.append(json.loads(ln))
        except ValueError:
            continue
    return sorted((p for p in pts if isinstance(p, dict)), key=lambda p: p.get("step", 0))


class CurveScorer:
    """KID of images against the real test split on a cheap feature network (module docstring); the real
    features are computed once (before the training workers fork, so every worker shares them)."""

    def __init__(self, net, real_images: torch.Tensor, label: str, kid_subsets: int = 50):
        self.net, self.label, self.kid_subsets = net, label, kid_subsets
        self.real = net(real_images)

    def __call__(self, images: torch.Tensor) -> dict:
        from neuro_lpc.metrics import kernel_inception_distance

        fake = self.net(images)
        k = kernel_inception_distance(self.real.numpy(), fake.numpy(), subset_size=min(1000, fake.shape[0]),
                                      n_subsets=self.kid_subsets)
        return {"kid": k["kid"], "kid_se": k["kid_se"]}
