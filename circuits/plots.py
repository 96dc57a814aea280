"""Figures of the circuit-vs-discrete study (matplotlib, Agg backend; PNG files).

* ``plot_sample_grids``: one grid of generative samples per method.
* ``plot_trajectories``: latent trajectories projected on their first two principal components over the
  log-joint landscape (paper Fig. 1 and Appendix A.2 / Fig. 6).
* ``plot_delta_log_joint``: Delta log p(x, z) = log p(x, z(t)) - log p(x, z(0)) during sampling (paper Fig. 3).
* ``plot_log_joint``: log p(x, z(t)) over time, mean and 10-90 % band across chains, per method.
* ``plot_training``: training loss against optimiser step per method.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .analysis import pca_landscape_grid, pca_projection  # noqa: E402

COLOURS = {"discrete": "tab:blue", "circuit": "tab:red", "vae": "tab:green", "pc": "tab:purple"}
_CYCLE = ["tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]


def colours(names) -> dict[str, str]:
    """A colour per method name: its kind's (first word: discrete, circuit, VAE, PC) for the first of a kind,
    then colours from a cycle (so "circuit · analog" and "circuit · deploy" differ)."""
    out, k = {}, 0
    for n in names:
        base = COLOURS.get(n.split()[0].lower() if n else "")
        if base is not None and base not in out.values():
            out[n] = base
        else:
            out[n], k = _CYCLE[k % len(_CYCLE)], k + 1
    return out


def _save(fig, path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_sample_grids(samples: dict[str, torch.Tensor], path, n: int = 64) -> Path:
    """samples: method -> images (N, C, H, W) in [-1, 1]."""
    from torchvision.utils import make_grid

    ncol = max(1, min(len(samples), 4))
    nrow = max(1, math.ceil(len(samples) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 4.3 * nrow), squeeze=False)
    axes = axes.ravel()
    for ax in axes[len(samples):]:
        ax.axis("off")
    for ax, (name, imgs) in zip(axes, samples.items()):
        grid = make_grid((imgs[:n].clamp(-1, 1) + 1) / 2, nrow=int(math.ceil(math.sqrt(min(n, len(imgs))))), padding=1)
        ax.imshow(grid.permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    return _save(fig, path)


@torch.no_grad()
def plot_trajectories(trajectories: dict[str, tuple[torch.Tensor, torch.Tensor]], log_joint_fn, path,
                      chains: int = 3, resolution: int = 21) -> Path:
    """trajectories: method -> (z_trace (R, B, d), x (B, ...)); log_joint_fn(x, z) -> (N,) evaluates the model.

    For each of the first ``chains`` chains, PCA of [z(t) - z(T)] (Appendix A.2), the trajectory in the
    plane of the first two components, over contours of log p(x, z) on a grid in that plane.
    """
    fig, axes = plt.subplots(len(trajectories), chains, figsize=(3.6 * chains, 3.3 * len(trajectories)), squeeze=False)
    for row, (name, (z_trace, x)) in enumerate(trajectories.items()):
        zt = z_trace[:, :chains].double().cpu()
        proj = pca_projection(zt)
        grid, points = pca_landscape_grid(proj, resolution=resolution)
        r, _, b, d = points.shape
        xb = x[:chains]
        dev = x.device
        flat = points.permute(2, 0, 1, 3).reshape(b, r * r, d)  # (b, r*r, d)
        for col in range(b):
            zz = flat[col].to(dev, torch.float32)
            xx = xb[col:col + 1].expand(zz.shape[0], *xb.shape[1:])
            lj = log_joint_fn(xx, zz).double().cpu().reshape(r, r).numpy()
            ax = axes[row, col]
            g = grid.numpy()
            # quantile levels: detail where the trajectory is, not only in the far tails of the landscape
            levels = np.unique(np.quantile(lj, np.linspace(0, 1, 21)))
            cs = ax.contourf(g, g, lj.T, levels=levels if len(levels) > 2 else 20, cmap="RdYlBu_r")
            ax.contour(g, g, lj.T, levels=levels[::2] if len(levels) > 4 else 10, colors="k", linewidths=0.3)
            c = proj.coords[:, col].numpy()
            ax.plot(c[:, 0], c[:, 1], "-", color="k", lw=0.5, alpha=0.6)
            ax.scatter(c[:, 0], c[:, 1], c=np.linspace(0.15, 1, len(c)), cmap="Greys", s=6, zorder=3)
            ax.set_title(f"{name}, chain {col}", fontsize=9)
            ax.set_xticks([]), ax.set_yticks([])
            fig.colorbar(cs, ax=ax, fraction=0.046, format="%.3g")
    fig.suptitle("Latent trajectories on their first two PCs over log p(x, z) (colour: log p, quantile levels; darker dots = later)")
    return _save(fig, path)


def _band(ax, t, y, name, c, label=None):
    y = np.asarray(y)
    m, lo, hi = y.mean(1), np.percentile(y, 10, axis=1), np.percentile(y, 90, axis=1)
    ax.plot(t, m, color=c, label=label or name)
    ax.fill_between(t, lo, hi, color=c, alpha=0.2)


def plot_delta_log_joint(traces: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path, time_label="time (s)") -> Path:
    """traces: method -> (t (R,), log_joint (R, B), log_joint_at_start (B,))."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    col = colours(traces)
    for name, (t, lj, lj0) in traces.items():
        _band(ax, t, np.asarray(lj) - np.asarray(lj0)[None], name, col[name])
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel(time_label)
    ax.set_ylabel("Δ log p(x, z) from the warm start")
    ax.set_title("Change in log joint during sampling (mean, 10-90 % band)")
    ax.legend()
    return _save(fig, path)


def plot_log_joint(traces: dict[str, tuple[np.ndarray, np.ndarray]], path, time_label="time (s)") -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    col = colours(traces)
    for name, (t, lj) in traces.items():
        _band(ax, t, lj, name, col[name])
    ax.set_xlabel(time_label)
    ax.set_ylabel("log p(x, z)")
    ax.set_title("log p(x, z) over time")
    ax.legend()
    return _save(fig, path)


def plot_training(histories: dict[str, list[dict]], path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    col = colours(histories)
    for name, hist in histories.items():
        if hist:
            ax.plot([h["step"] for h in hist], [h["loss_per_dim"] for h in hist], color=col[name], label=name)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss per dimension (nats)")
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_title("Training loss (LPC/PC/circuit: -mean log p(x, z) over the chain; VAE: -ELBO)")
    ax.legend()
    return _save(fig, path)


def plot_sweep(rows: list[dict], x_key: str, y_keys: list[str], path, group_key: str | None = None, logx: bool = False,
               xticklabels: list[str] | None = None) -> Path:
    """One panel per y_key, one line per value of group_key."""
    fig, axes = plt.subplots(1, len(y_keys), figsize=(4.2 * len(y_keys), 3.4), squeeze=False)
    groups = sorted({r.get(group_key) for r in rows}, key=str) if group_key else [None]
    for ax, yk in zip(axes[0], y_keys):
        for gval in groups:
            sel = [r for r in rows if group_key is None or r.get(group_key) == gval]
            sel = sorted(sel, key=lambda r: r[x_key])
            ax.plot([r[x_key] for r in sel], [r[yk] for r in sel], "o-", label=f"{group_key}={gval}" if group_key else None)
        ax.set_xlabel(x_key)
        ax.set_ylabel(yk)
        if logx:
            ax.set_xscale("log")
        if xticklabels:
            ax.set_xticks([r[x_key] for r in sorted(rows, key=lambda r: r[x_key])])
            ax.set_xticklabels(xticklabels, rotation=60, ha="right", fontsize=7)
        if group_key:
            ax.legend(fontsize=8)
    return _save(fig, path)


def plot_learning_curves(curves: dict[str, list[list[dict]]], path, metric_label: str, references: dict | None = None
                         ) -> Path:
    """Learning curves (the paper's Fig. 5B): ``curves`` maps a row's label to one list of points per training seed
    (``{"step", "train_wall_s", "kid", "kid_se"}``); the metric against optimiser steps (left) and against training
    wall time (right), one colour per row, ± se bars, seeds drawn separately.  ``references``: label -> value, drawn
    as horizontal lines (the data floor and the untrained ceiling at the curves' n)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    col = colours(curves)
    for name, seeds in curves.items():
        for i, pts in enumerate(seeds):
            pts = [p for p in pts if p.get("kid") is not None and math.isfinite(p["kid"])]
            if not pts:
                continue
            y = np.array([p["kid"] for p in pts])
            e = np.array([p.get("kid_se") or 0.0 for p in pts])
            for ax, key in zip(axes, ("step", "train_wall_s")):
                x = np.array([p.get(key, np.nan) for p in pts], dtype=float)
                ax.errorbar(x, y, yerr=e, color=col[name], marker="o", ms=3, lw=1.2, capsize=2, alpha=1.0 if i == 0 else 0.55,
                            label=name if i == 0 else None)
    for ax in axes:
        for j, (name, v) in enumerate((references or {}).items()):
            if v is not None and math.isfinite(v) and v > 0:   # KID is unbiased: the data floor may read <= 0
                ax.axhline(v, color="k", ls=("--", ":")[j % 2], lw=1, label=name)
            elif v is not None and math.isfinite(v):
                ax.plot([], [], color="k", ls=("--", ":")[j % 2], lw=1, label=f"{name}: {v:.3g} (≤ 0, off the log axis)")
        ax.set_xscale("log")
        ax.set_yscale("log")
    axes[0].set_xlabel("optimiser steps")
    axes[1].set_xlabel("training wall time (s, one thread; curve points not counted)")
    axes[0].set_ylabel(f"{metric_label} (lower is better)")
    axes[0].legend(fontsize=7)
    fig.suptitle("Learning curves: each seed's training, metric at log-spaced steps")
    return _save(fig, path)
