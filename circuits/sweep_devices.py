"""The device sweep of ``sims/sweep.py --sweep devices`` (issue 17 section 3; docs/learning_modes.md).

Learning in memory with the arrays' own local pulsed rule (``in-memory-local``, ``circuits.local_update``) on device
presets, against its fair digital twin -- discrete LPC with plain SGD on the decoder at the same learning rate
(``TrainConfig.optimizer = "sgd"``: like the arrays, no per-weight optimiser state; the likelihood's sigma and the
encoder keep Adam in both) -- at the main job's budget (``StudyConfig``: the MLP decoder, T = 10, gamma = 0.1,
preconditioning beta = 0.25, Jeffreys warm start, 700 optimiser steps of batch 64; ``--quick``: the quick budget),
over ``--seeds`` seeds, scored by the small-classifier FD of the samples of the model as it sits on its devices.

Rows (``DEVICE_ROWS``; the circuit of a local row is the ideal circuit plus the row's weight devices, so the rows
differ by the devices alone):
  * ``adam``        context: discrete LPC with Adam at the main job's rate (what the plain-SGD constraint costs);
  * ``twin``        discrete LPC, plain SGD on the decoder (the reference of the issue's "within 20 %");
  * ``ideal``       an ideal pulsed device: constant step dw_min = 0.001 (aihwkit ``ConstantStepDevice``), no
                    device-to-device or cycle-to-cycle spread, no asymmetry; drawn pulse trains (BL 31, aihwkit's
                    update and BL management);
  * ``pcm``         PCM-like: aihwkit's ``PulsedDevice`` with its spreads (``AIHWKIT_PULSED_SPREADS``) for the writes,
                    and the ``analog`` preset's PCM reads -- programming noise, drift with the accumulated 1/f noise
                    (aihwkit ``PCMLikeNoiseModel``), read noise on the forward and the transposed read;
  * ``reram``       ReRAM-like with asymmetry: soft bounds with aihwkit ``ReRamESPresetDevice``'s asymmetry
                    (up_down 0.259), step (dw_min 0.00135), bounds (+-1) and spreads (dtod 0.2 / 0.05 / 0.3 / 0.3,
                    cycle-to-cycle 5.0 x dw_min). Its exponential-step nonlinearity and write noise are not modelled;
  * ``reram-tt``    the same device with a Tiki-Taka transfer (``transfer_every = 1``: aihwkit ``TransferCompound``).
The ``pcm`` row is also scored along the deploy-time curve (``circuits.modes.TIME_POINTS``: 1 s ... 1 month after
the last write): drift and the accumulated 1/f noise grow while the array sits.
"""
from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import torch

from neuro_lpc.errors import DivergenceError

from .noise.arrays import AIHWKIT_PULSED_SPREADS

IDEAL_PULSED = {"type": "pulsed", "dw_min": 0.001, "dw_min_dtod": 0.0, "dw_min_std": 0.0, "up_down": 0.0}
RERAM_LIKE = {"type": "pulsed", "kind": "soft_bounds", "dw_min": 0.00135, "up_down": 0.259359, "w_max": 1.0,
              "w_min": -1.0, "dw_min_dtod": 0.2, "up_down_dtod": 0.05, "w_max_dtod": 0.3, "w_min_dtod": 0.3,
              "dw_min_std": 5.0}      # aihwkit simulator/presets/devices.py ReRamESPresetDevice (Gong et al. 2018)


def _pcm_sources() -> list[dict]:
    """aihwkit's pulsed device with its spreads, and the analog preset's PCM reads (1/f on, both reads noisy)."""
    from .noise import PRESETS

    reads = []
    for s in PRESETS["analog"]["sources"]:
        if s["type"] == "weight_programming":
            reads.append(dict(s))
        elif s["type"] == "drift":
            reads.append(dict(s, one_over_f=True))
        elif s["type"] == "weight_read":
            reads.append(dict(s, reads="both"))
    return [{"type": "pulsed", **AIHWKIT_PULSED_SPREADS}] + reads


DEVICE_ROWS = {
    "adam": dict(label="context: discrete LPC with Adam (the main job's recipe; no plain-SGD constraint)"),
    "twin": dict(label="digital twin: discrete LPC, plain SGD"),
    "ideal": dict(label="local · ideal pulsed device", sources=lambda: [IDEAL_PULSED]),
    "pcm": dict(label="local · PCM-like (aihwkit PulsedDevice + PCM reads, 1/f)", sources=_pcm_sources,
                deploy_curve=True),
    "reram": dict(label="local · ReRAM-like, asymmetric (up_down 0.26)", sources=lambda: [RERAM_LIKE]),
    "reram-tt": dict(label="local · ReRAM-like + Tiki-Taka transfer", sources=lambda: [RERAM_LIKE],
                     pulse_update={"transfer_every": 1}),
}


def _study(cfg, seed: int):
    from .study import StudyConfig

    return StudyConfig(quick=cfg.quick, seed=seed, device=cfg.device).apply_quick()


def row_config(key: str, seed: int, cfg, n_train: int = 9000):
    """The training config of one row at the study's budget: the twin's ``TrainConfig`` (optimizer "sgd") or a local
    row's ``CircuitTrainConfig`` (in-memory-local on the ideal circuit plus the row's devices); the decoder's rate
    is ``cfg.local_lr`` in both, the encoder and sigma keep the study's Adam rate."""
    from .learn import CircuitTrainConfig
    from .study import train_config

    spec = DEVICE_ROWS[key]
    st = _study(cfg, seed)
    if key == "adam":
        return train_config(st, "lpc", n_train=n_train)
    if key == "twin":
        return train_config(st, "lpc", n_train=n_train, decoder_lr=cfg.local_lr, optimizer="sgd")
    tc = train_config(st, "lpc", n_train=n_train, decoder_lr=cfg.local_lr)
    ctc = CircuitTrainConfig(**{**tc.to_dict(), "method": "circuit"}, dt=st.step_size * st.tau_z, tau_z=st.tau_z,
                             tau_e=0.0, noise={"preset": "ideal", "sources": spec["sources"]()},
                             presentation_steps=st.langevin_steps, learning="in-memory-local",
                             pulse_update=spec.get("pulse_update"))
    ctc.temperature = None        # the noise model's (1)
    return ctc


def train_row(key: str, seed: int, cfg, out: Path, device) -> tuple[dict, object]:
    """Train one row (``row_config``); returns (row, the trainer, or None when it diverged). Cached per config
    (``fit_cached``: a finished row is loaded, a crashed one resumes)."""
    from neuro_lpc.data import load_dataset
    from neuro_lpc.train import LPCTrainer, build_model

    from .learn import CircuitTrainer
    from .study import fit_cached
    from .study.train import cache_folder

    spec = DEVICE_ROWS[key]
    train, _, info = load_dataset(_study(cfg, seed).dataset)
    tc = row_config(key, seed, cfg, len(train))
    torch.manual_seed(seed)
    m, e = build_model(tc, info.image_size, info.channels)
    trainer = LPCTrainer(m, e, tc) if key in ("adam", "twin") else CircuitTrainer(m, e, tc)
    row = dict(row=key, label=spec["label"], seed=seed, decoder_lr=tc.decoder_lr,
               optimiser_steps=tc.epochs * tc.max_batches_per_epoch)
    before = {n: p.detach().clone() for n, p in m.decoder.named_parameters()}
    try:
        fit = fit_cached(trainer, train, cache_folder(out / "models", f"dev-{key}-s{seed}", tc))
    except DivergenceError as err:
        return dict(row, diverged=True, error=str(err).splitlines()[0]), None
    last = fit.history[-20:] if getattr(fit, "history", None) else []
    row.update(diverged=False, train_wall_s=fit.wall_s, cached=fit.cached,
               final_loss_per_dim=(sum(r["loss_per_dim"] for r in last) / len(last)) if last else math.nan,
               decoder_moved=math.sqrt(sum(float((p.detach() - before[n]).pow(2).sum())
                                           for n, p in m.decoder.named_parameters()) /
                                       sum(float(before[n].pow(2).sum()) for n in before)))
    return row, trainer


def sampler_at(trainer, t: float | None, seed: int, device):
    """The trained model as it samples: the twin's digital decoder, or the local row's array ``t`` s after its last
    write (None: the deploy time)."""
    from neuro_lpc.train import LPCTrainer

    if isinstance(trainer, LPCTrainer):
        return trainer.model.eval()
    return trainer.deployed(t=t, generator=torch.Generator(device=device).manual_seed(seed + 5))


def score(model, cfg, out: Path, device, seed: int) -> dict:
    from .sweep_dynamics import score_samples

    return score_samples(model, cfg, out, device, seed)


def add_verdict(rows: list[dict]) -> dict:
    """The issue's criterion per seed: the ideal local row's FD within 20 % of the twin's (same seed); and each row's
    FD relative to the twin's."""
    twin = {r["seed"]: r.get("fd", math.nan) for r in rows if r["row"] == "twin" and r.get("t_label") is None}
    for r in rows:
        ref = twin.get(r["seed"], math.nan)
        r["fd_over_twin"] = r.get("fd", math.nan) / ref if ref and math.isfinite(ref) else math.nan
    ideal = [r for r in rows if r["row"] == "ideal" and r.get("t_label") is None]
    ratios = [r["fd_over_twin"] for r in ideal]
    ok = bool(ratios) and all(math.isfinite(v) and v <= 1.2 for v in ratios)
    return {"ideal_over_twin": ratios, "within_20pct": ok}


def write_csv(rows: list[dict], path: Path) -> Path:
    keys = list(dict.fromkeys(k for r in rows for k in r if not k.startswith("_")))
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    tmp.replace(path)
    return path


def plot(rows: list[dict], path: Path) -> Path:
    """Left: FD per row (a dot per seed, the bar their mean; the twin's mean dashed, with its +20 % band). Right: the
    PCM-like row's FD along the deploy-time curve, a line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    trained = [r for r in rows if r.get("t_label") is None and not r.get("diverged")]
    keys = [k for k in DEVICE_ROWS if any(r["row"] == k for r in trained)]
    for i, k in enumerate(keys):
        fds = [r["fd"] for r in trained if r["row"] == k and math.isfinite(r.get("fd", math.nan))]
        if fds:
            a.bar(i, sum(fds) / len(fds), color="C0" if k != "twin" else "C2", alpha=0.6)
            a.plot([i] * len(fds), fds, "k.")
    twin = [r["fd"] for r in trained if r["row"] == "twin"]
    if twin:
        mu = sum(twin) / len(twin)
        a.axhline(mu, ls="--", c="C2", lw=1)
        a.axhspan(mu, 1.2 * mu, color="C2", alpha=0.12, label="twin .. +20 %")
        a.legend(fontsize=8)
    a.set_xticks(range(len(keys)))
    a.set_xticklabels(keys, fontsize=8)
    a.set_ylabel("FD (small classifier; lower is better)")
    a.set_title("local in-memory learning by device")
    curve = [r for r in rows if r.get("t_label") is not None and math.isfinite(r.get("fd", math.nan))]
    for s in sorted({r["seed"] for r in curve}):
        pts = sorted((r["t_seconds"], r["fd"]) for r in curve if r["seed"] == s)
        b.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"seed {s}")
    b.set_xscale("log")
    b.set_xlabel("time since the last write (s)")
    b.set_ylabel("FD")
    b.set_title("PCM-like row: drift + accumulated 1/f")
    if curve:
        b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(path: Path, rows: list[dict], verdict: dict, command: str) -> Path:
    def f(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    keys = ["row", "seed", "decoder_lr", "optimiser_steps", "final_loss_per_dim", "decoder_moved", "fd", "fd_over_twin",
            "coverage", "pixel_std", "train_wall_s", "diverged"]
    trained = [r for r in rows if r.get("t_label") is None]
    lines = [f"# Device sweep: local in-memory learning (issue 17 section 3)", "", f"Command: `{command}`", "",
             "Rows: " + "; ".join(f"`{k}` = {v['label']}" for k, v in DEVICE_ROWS.items()) + ".", "",
             "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(f(r.get(k, "")) for k in keys) + " |" for r in trained]
    ratios = ", ".join(f"{v:.2f}" for v in verdict["ideal_over_twin"]) or "none"
    lines += ["", f"**Ideal local row within 20 % of the twin's FD on every seed: "
                  f"{'yes' if verdict['within_20pct'] else 'no'}** (FD ratios per seed: {ratios})."]
    curve = [r for r in rows if r.get("t_label") is not None]
    if curve:
        lines += ["", "Deploy-time curve of the PCM-like row (FD of its samples t after the last write):", "",
                  "| seed | t | fd | pixel_std |", "|---|---|---|---|"]
        lines += [f"| {r['seed']} | {r['t_label']} | {f(r.get('fd', math.nan))} | {f(r.get('pixel_std', math.nan))} |"
                  for r in curve]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_devices_sweep(cfg, out: Path, device, log=print) -> Path:
    """Every row for every seed (seed-major: a run cut short has each row once), the deploy-time curve of the
    PCM-like row, the CSV (rewritten after every row), the PNG, a samples grid and the markdown report."""
    from . import plots
    from .modes import TIME_POINTS

    points = list(TIME_POINTS.items())
    if cfg.quick:
        points = [points[0], points[-1]]
    rows, grids = [], {}
    csv_path = out / "sweep_devices.csv"
    for k in range(cfg.seeds):
        seed = cfg.seed + k
        for key, spec in DEVICE_ROWS.items():
            log(f"[devices] {key} seed {seed}")
            t0 = time.perf_counter()
            row, trainer = train_row(key, seed, cfg, out, device)
            if trainer is not None:
                with torch.no_grad():
                    row.update(score(sampler_at(trainer, None, seed, device), cfg, out, device, seed))
                grids.setdefault(f"{key} (seed {seed})", row.pop("_samples", None))
                if spec.get("deploy_curve"):
                    for label, t in points:
                        with torch.no_grad():
                            s = score(sampler_at(trainer, t, seed, device), cfg, out, device, seed)
                        s.pop("_samples", None)
                        rows.append(dict(row=key, label=spec["label"], seed=seed, t_label=label, t_seconds=t, **s))
            row["wall_s"] = time.perf_counter() - t0
            rows.append(row)
            write_csv(rows, csv_path)
    verdict = add_verdict(rows)
    write_csv(rows, csv_path)
    plot(rows, out / "sweep_devices.png")
    grids = {k: v for k, v in grids.items() if v is not None}
    if grids:
        plots.plot_sample_grids(grids, out / "sweep_devices_samples.png")
    write_report(out / "sweep_devices.md", rows, verdict, getattr(cfg, "command", "sims/sweep.py --sweep devices"))
    return csv_path
