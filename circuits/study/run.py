"""``run_study``: training, posterior, metrics, figures, report -- each stage timed -- and the CLI."""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from neuro_lpc.config import atomic_write_text, git_commit, package_versions, resolve_device
from neuro_lpc.errors import CheckpointError, DivergenceError

from . import posterior as post_mod
from . import quality
from .config import DEFAULT_NOISE, LOCAL_LR, StudyConfig, StudyError, check_inputs, resolve_noise
from .methods import StudyContext, default_methods, noise_label, with_seed_replicas
from .report import add_row, render_markdown, verdict
from .train import NotRun


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Stages(dict):
    """Wall seconds per stage, in the order the stages ran; ``cpu``: CPU seconds of the same stages (this
    process and its finished workers; on a shared machine nearer to the unloaded cost than the wall time)."""

    def __init__(self):
        super().__init__()
        self.cpu = {}

    @contextmanager
    def time(self, name: str):
        t0, c0 = time.perf_counter(), _cpu_s()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - t0
            self.cpu[name] = self.cpu.get(name, 0.0) + _cpu_s() - c0


@contextmanager
def torch_threads(n: int | None):
    """torch intra-op threads set to n inside the block (None: unchanged)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_out(cfg: StudyConfig) -> str:
    return str(Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{noise_label(cfg)}")


def run_study(cfg: StudyConfig, log=print, methods=None) -> dict:
    """Run the whole study; returns the report dict (also written to cfg.out).

    ``methods``: the rows (``circuits.study.methods.Method``), default ``default_methods(cfg)``.
    """
    cfg.apply_quick()
    if cfg.out is None:
        cfg.out = default_out(cfg)
    methods = list(methods) if methods is not None else default_methods(cfg)
    names = [m.name for m in methods]
    if len(set(names)) != len(names) or not names or names[0] != "discrete":
        raise StudyError("the method rows need unique names, the first one 'discrete' (the reference)")
    out = check_inputs(cfg, names)
    methods = with_seed_replicas(methods, cfg.seeds)
    cfg.skip = list(cfg.skip) + [m.name for m in methods if m.replica_of in cfg.skip and m.name not in cfg.skip]
    noise = resolve_noise(cfg)
    for stale in ("report.json", "report.md", "FAILED.txt"):
        (out / stale).unlink(missing_ok=True)
    try:
        report = _run(cfg, out, noise, log, methods)
    except BaseException as e:
        atomic_write_text(out / "FAILED.txt", f"the study did not finish: {type(e).__name__}: {e}\n\n{traceback.format_exc()}")
        raise
    return report


@dataclass
class _StudyRun:
    """What the stages of one study run share: the config, the rows, their results so far, the stage clock."""

    cfg: StudyConfig
    out: Path
    noise: Any
    log: Callable
    methods: list
    stages: Stages
    device: Any = None
    ctx: Any = None                 # the StudyContext the rows' trainers and samplers see
    board: Any = None               # the ProgressBoard
    by_name: dict = field(default_factory=dict)    # row name -> Method
    parts: dict = field(default_factory=dict)      # row name -> {"errors", "samples", "posterior", "not_run"}
    feature: str | None = None      # the feature network's kind (inception | classifier)
    net: Any = None                 # the feature network
    scorer: Any = None              # the learning curves' scorer (None: no curves)
    n_for: Callable | None = None   # row name -> its number of samples


def _run(cfg: StudyConfig, out: Path, noise, log, methods) -> dict:
    """The study's stages in order: set-up, feature network, 1. training and 2. posteriors, 3. sample quality (rows,
    then the references), 4. figures and diagnostics, 5. the table and the report (written last: marks success)."""
    from .. import plots  # noqa: F401 -- matplotlib loaded before the clock starts and the training workers fork
    t_start, cpu_start = time.perf_counter(), _cpu_s()
    run = _StudyRun(cfg, out, noise, log, methods, Stages())
    _set_up(run)
    _feature_stage(run)
    ref, traces, lj = _training_and_posterior_stage(run)
    real, samples, label, metric_key, references = _quality_stage(run)
    curves, curve_label = _figures_stage(run, ref, traces, lj, samples, references)
    with run.stages.time("diagnostics"):   # issue 9: flux, quenching, noise correlations, spontaneous vs evoked
        from .diagnostics import diagnostics_section
        diagnostics = diagnostics_section(traces, lj, prior_std=float(ref.model.prior_std), out=out,
                                          onset_by_method=run.ctx.onsets or None)
    table = _results_table(run, references, metric_key)
    report = _report_dict(run, table, metric_key, label, curve_label, real, diagnostics, curves)
    return _write_report(run, report, t_start, cpu_start)


def _set_up(run: _StudyRun) -> None:
    """Device, seed, progress board, the data set and the resolved budget; the rows' StudyContext."""
    from neuro_lpc.data import load_dataset

    from .progress import ProgressBoard

    cfg, log = run.cfg, run.log
    run.device = device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    run.board = board = ProgressBoard(log)
    if cfg.budget == "quick":
        log("[quick] budget quick: a first look whose models are NOT trained enough to rank (use the default budget "
            "or --budget long for numbers to compare)")
    with run.stages.time("set-up"):
        train_set, test_set, info = load_dataset(cfg.dataset, cfg.data_root)
        cfg.resolve_train_batches(info.n_train)
        cfg.architecture = cfg.resolved_architecture(info.image_size, device)
    log(f"[budget] {cfg.budget}: {cfg.train_batches} optimiser steps of batch {cfg.batch_size} "
        f"({cfg.train_batches / cfg.steps_per_epoch(info.n_train):.3g} epochs), T = {cfg.langevin_steps}, "
        f"{cfg.architecture} networks, {cfg.seeds} seed(s) of the compared rows, {cfg.n_samples} samples per row")
    run.ctx = ctx = StudyContext(cfg, device, run.noise, run.out, run.out / "models", train_set, test_set, info, log)
    ctx.board, ctx.progress = board, board.update
    run.parts = {m.name: {"errors": {}} for m in run.methods}
    run.by_name = {m.name: m for m in run.methods}


def _feature_stage(run: _StudyRun) -> None:
    """The feature network first: training workers compute each row's sample features as soon as it has trained."""
    cfg, device = run.cfg, run.device
    run.feature = quality.choose_feature(cfg, device)
    with run.stages.time("metrics: feature network"):
        run.board.stage("feature networks")
        run.net = quality.feature_network(cfg, device, run.feature)
        run.scorer = quality.curve_scorer(cfg, device, run.ctx.info, run.net) if cfg.curve_points else None
    if run.scorer is not None:
        run.ctx.curve_recorder = quality.curve_recorder_factory(cfg, run.scorer)
    run.n_for = quality.samples_per_row(cfg, run.by_name)


def _training_and_posterior_stage(run: _StudyRun):
    """1. Every row's training (with the worker jobs: real-set and reference features, samples of the rows the parent
    trains) and 2. the posterior rows, at ``cfg.threads`` torch threads; returns (reference Trained, traces, lj)."""
    cfg, device, net, methods, board = run.cfg, run.device, run.net, run.methods, run.board
    with torch_threads(cfg.threads):   # training and sampling: many small ops (StudyConfig.threads)
        post = quality.worker_features(cfg, device, net, run.n_for)
        jobs = [("real set features", lambda _ctx: quality.real_set(cfg, net), ())]
        jobs += [(REFERENCE_JOB + r, quality.reference_job(cfg, r, net), ()) for r in quality.REFERENCES]
        jobs += [(SAMPLES_JOB + m.name, _samples_job(run.by_name, m, post), m.after)
                 for m in methods if not m.pretrain and m.name != "discrete" and m.name not in cfg.skip]
        board.stage(f"training ({sum(1 for m in methods if m.name not in cfg.skip)} trainings)")
        ref = _train(run.ctx, methods, run.parts, run.stages, post=post, jobs=jobs)
        board.close()
        board.stage("posterior comparison")
        traces, lj = _posteriors(run.ctx, methods, run.parts, run.stages, ref)
    return ref, traces, lj


def _quality_stage(run: _StudyRun):
    """3. Sample quality of every row (seeds pooled) and of the references (data floor, untrained ceiling).

    Returns (real-set statistics, sample grids per label, the metric's label, metric key, references)."""
    from neuro_lpc.data import dataset_tensor

    cfg, ctx, device = run.cfg, run.ctx, run.device
    run.board.stage("sample quality")
    run.log(f"[metrics] {run.feature} features ({_feature_path(run.net, device)}), {cfg.n_samples} "
            f"samples per row (a row with {cfg.seeds} seeds: {run.n_for('discrete')} per seed, pooled)")
    with run.stages.time("metrics: real set"):
        real = quality.real_set(cfg, run.net)   # from the cache a worker wrote (or computed here)
    test_x, _ = dataset_tensor(ctx.test_set, min(500, len(ctx.test_set)))
    test_x = test_x.to(device)
    images, features = _row_samples(run)
    samples, label = _score_rows(run, images, features, real, test_x)
    metric_key = getattr(run.net, "metric", "fid" if run.feature == "inception" else "fd")
    references = {}
    for r in quality.REFERENCES:           # the data floor and the untrained ceiling, at the same n
        o = ctx.worker_jobs.get("job:" + REFERENCE_JOB + r, {}).get("value")
        with run.stages.time(f"metrics: reference {r}"):
            references[r] = quality.evaluate_reference(r, o, real, run.net, run.feature, cfg, device, ctx.info,
                                                       run.scorer)
        if r == "untrained" and references[r].get("images") is not None:
            samples[quality.REFERENCE_LABELS[r]] = references[r]["images"][:64]
    return real, samples, label, metric_key, references


def _row_samples(run: _StudyRun) -> tuple[dict, dict]:
    """(images, features) per trained row: drawn and featurised by its training worker, else here."""
    cfg, ctx = run.cfg, run.ctx
    images, features = {}, {}
    workers = ctx.train_workers if run.device.type == "cpu" else 1
    for name, tr in ctx.trained.items():
        if tr.same_as is not None:          # the same model as another row: its metrics, not a second evaluation
            continue
        with run.stages.time(f"metrics: {name.split('@')[0]}"):
            done = ctx.worker_samples.get(name)
            if done is not None:            # drawn and featurised by the row's training worker
                imgs, feats = done["images"], done["features"]
            else:
                imgs = quality.draw_samples(tr.sampler if tr.sampler is not None else tr.model, run.n_for(name),
                                            quality.sample_seed(cfg, run.by_name[name]), run.device)
                feats = (quality.features_in_parallel(run.net, imgs, workers, run.out)
                         if torch.isfinite(imgs).all() else None)
        images[name], features[name] = imgs, feats
    return images, features


def _score_rows(run: _StudyRun, images: dict, features: dict, real, test_x) -> tuple[dict, str | None]:
    """Each row's sample quality over its seeds (into ``run.parts``) and its encoder's aggregate posterior on
    ``test_x``; a row sharing another's model copies its scores. Returns (sample grids per label, metric label)."""
    cfg, ctx, by_name, parts = run.cfg, run.ctx, run.by_name, run.parts
    samples, label = {}, None
    for m in run.methods:
        if m.replica_of is not None or m.name not in images:
            continue
        group = _seed_group(m.name, images, by_name)
        with run.stages.time(f"metrics: {m.name}"):
            try:
                q = quality.evaluate_group([images[g] for g in group], [features[g] for g in group], real, run.net,
                                           run.feature, cfg, seeds=[(ctx.trained[g].training or {}).get(
                                               "seed", cfg.seed + by_name[g].seed_index) for g in group])
            except quality.NonFiniteSamples as e:
                parts[m.name]["errors"]["samples"] = str(e)
                continue
        samples[m.label] = torch.cat([images[g] for g in group])[: 64]
        try:                                # the encoder's aggregate posterior (the verdict's narrowness sentence)
            aggs = [quality.aggregate_posterior(ctx.trained[g].encoder, test_x,
                                                float(getattr(ctx.trained[g].model, "prior_std", 1.0))) for g in group]
            q["aggregate"] = {k: float(np.mean([a[k] for a in aggs])) for k in ("variance_ratio", "kl_to_prior")}
        except (RuntimeError, ValueError, TypeError) as e:   # a custom row without a Gaussian encoder
            q["aggregate"] = {"error": f"{type(e).__name__}: {e}"}
        parts[m.name]["samples"], label = q, q.get("label", label)
    for name, tr in ctx.trained.items():
        if tr.same_as is not None and "samples" in parts.get(tr.same_as, {}):
            parts[name]["samples"] = dict(parts[tr.same_as]["samples"], same_as=tr.same_as)
    return samples, label


def _figures_stage(run: _StudyRun, ref, traces, lj, samples, references) -> tuple[dict, str]:
    """4. The figures: sample grids, posterior trajectories and log joints, training losses, learning curves.

    Returns (learning curves per label, the curves' metric label)."""
    from .. import plots

    ctx, by_name, out = run.ctx, run.by_name, run.out
    run.board.stage("figures and report")
    with run.stages.time("figures"):
        labels = {m.name: m.label for m in run.methods}
        plots.plot_sample_grids(samples, out / "samples.png")
        plots.plot_trajectories(traces, lambda xx, zz: ref.model.log_joint(xx, zz), out / "trajectories.png")
        plots.plot_delta_log_joint(lj, out / "delta_log_joint.png")
        plots.plot_log_joint({k: (v[0], v[1]) for k, v in lj.items()}, out / "log_joint.png")
        plots.plot_training({labels[n]: tr.history for n, tr in ctx.trained.items() if by_name[n].replica_of is None},
                            out / "training.png")
        curves = {}
        for m in run.methods:
            if m.replica_of is None and m.name in ctx.trained and ctx.trained[m.name].training:
                pts = [ctx.trained[n].training.get("curve") or [] for n in _seed_group(m.name, ctx.trained, by_name)]
                if any(pts) and ctx.trained[m.name].same_as is None and pts not in curves.values():
                    curves[m.label] = pts          # (deploy rows share discrete LPC's training: drawn once)
        curve_label = run.scorer.label if run.scorer is not None else "KID"
        if curves:
            plots.plot_learning_curves(curves, out / "learning_curves.png", curve_label,
                                       {quality.REFERENCE_LABELS[r]: (references[r].get("curve_kid")) for r in references})
    return curves, curve_label


def _results_table(run: _StudyRun, references: dict, metric_key: str) -> dict:
    """5. The table: one row per method (its seeds folded in), then the references."""
    table = {}
    for m in run.methods:
        if m.replica_of is not None:
            continue
        p, tr = run.parts[m.name], run.ctx.trained.get(m.name)
        training = _seed_training(run.ctx, run.by_name, m) if tr else None
        add_row(table, m.name, label=m.label, kind=m.kind, training=training,
                samples=p.get("samples"), posterior=p.get("posterior"), errors=_seed_errors(run.parts, run.by_name, m),
                not_run=p.get("not_run"), metric_key=metric_key)
    for r in quality.REFERENCES:
        add_row(table, r, label=quality.REFERENCE_LABELS[r], kind="reference", samples=references[r].get("samples"),
                not_run=references[r].get("not_run"), metric_key=metric_key)
    return table


def _report_dict(run: _StudyRun, table, metric_key, label, curve_label, real, diagnostics, curves) -> dict:
    """The report (report.json's content before the verdict and the stage times): the table, what produced it
    (feature network, budget, seeds, noise, device, versions), diagnostics, figures and recordings."""
    cfg, ctx, out, net, device, noise = run.cfg, run.ctx, run.out, run.net, run.device, run.noise
    recordings = [f"posterior_{ctx.slug(m.name)}.h5" for m in run.methods
                  if m.posterior is not None and (out / f"posterior_{ctx.slug(m.name)}.h5").is_file()]
    report = {
        "methods": table, "metric_key": metric_key, "feature": run.feature,
        "feature_label": label or getattr(net, "label", run.feature),
        "feature_path": _feature_path(net, device),
        "curve_metric": curve_label,
        "budget": cfg.budget, "seeds": cfg.seeds_of(True), "architecture": cfg.architecture,
        "real_set": quality.real_set_description(cfg, real),
        "preconditioner": ctx.preconditioner, "config": asdict(cfg), "noise_label": noise_label(cfg),
        "noise": noise if isinstance(noise, str) else noise.to_dict(),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": {"training_and_sampling": cfg.threads or torch.get_num_threads(), "metrics": torch.get_num_threads()},
        "versions": package_versions(), "git_commit": git_commit(),
        "diagnostics": diagnostics,
        "figures": ["samples.png", "learning_curves.png", "trajectories.png", "delta_log_joint.png", "log_joint.png",
                    "training.png"] + list(diagnostics.get("figures", [])),
        "recordings": recordings,
    }
    if not curves:
        report["figures"].remove("learning_curves.png")
    return report


def _write_report(run: _StudyRun, report: dict, t_start: float, cpu_start: float) -> dict:
    """The verdict and the stage times (total since ``t_start``; training per row; worker jobs) into ``report``,
    then report.md and report.json (written last: it marks a finished run)."""
    ctx, stages = run.ctx, run.stages
    report["verdict"] = verdict(report)
    stages["total"] = time.perf_counter() - t_start
    stages.cpu["total"] = _cpu_s() - cpu_start
    report["stages"] = dict(stages)
    report["stages_cpu"] = dict(stages.cpu)
    report["stages_training"] = {n: ctx.train_walls.get(n) for n in ctx.trained if n in ctx.train_walls}
    report["stages_training_cpu"] = {n: ctx.train_cpu.get(n) for n in ctx.trained if n in ctx.train_cpu}
    report["train_workers"] = ctx.train_workers
    # sample features computed in the training workers (overlapping other rows' training), and extra worker jobs
    report["stages_worker_metrics"] = dict(ctx.worker_metric_walls)
    report["stages_worker_jobs"] = {n[4:]: o.get("wall_s") for n, o in ctx.worker_jobs.items()}
    report["wall_s"] = stages["total"]
    atomic_write_text(run.out / "report.md", render_markdown(report))
    # report.json last: it marks success
    atomic_write_text(run.out / "report.json", json.dumps(report, indent=2, default=_json_default))
    return report


def _feature_path(net, device) -> str | None:
    """Which Inception path computed the features, and why (``neuro_lpc.metrics.inception.precision_reason``)."""
    precision = getattr(net, "precision", None)
    if precision is None:
        return getattr(net, "key", None)
    try:
        from neuro_lpc.metrics.inception import precision_reason, resolve_precision
        return precision_reason("auto" if resolve_precision("auto", device) == precision else precision, device)
    except (ImportError, TypeError, ValueError):
        return str(precision)


def _seed_group(base: str, names, by_name) -> list[str]:
    """The row ``base`` and its seed replicas among ``names``, in seed order."""
    return [n for n in names if n == base or by_name[n].replica_of == base]


def _seed_training(ctx, by_name, m) -> dict:
    """A row's training columns with its seeds: the base seed's training dict, plus ``seeds`` (the list), per-seed
    wall times, curves and convergence flags, and the row's flag: ``still improving`` when any seed is."""
    from .curves import CONVERGED, IMPROVING, WORSE

    base = dict(ctx.trained[m.name].training)
    group = _seed_group(m.name, ctx.trained, by_name)
    trs = [ctx.trained[n].training or {} for n in group]
    base["seeds"] = [t.get("seed", ctx.cfg.seed + by_name[n].seed_index) for n, t in zip(group, trs)]
    base["per_seed"] = [{"seed": s, "wall_s": t.get("wall_s"), "optimiser_steps": t.get("optimiser_steps"),
                         "final_train_loss_per_dim": t.get("final_train_loss_per_dim"), "curve": t.get("curve"),
                         "convergence": t.get("convergence")} for s, t in zip(base["seeds"], trs)]
    flags = [(t.get("convergence") or {}).get("status") for t in trs]
    flags = [f for f in flags if f]
    if flags:
        base["convergence_status"] = (IMPROVING if IMPROVING in flags else WORSE if WORSE in flags
                                      else CONVERGED if all(f == CONVERGED for f in flags) else flags[0])
    walls = [t.get("wall_s") for t in trs if isinstance(t.get("wall_s"), (int, float))]
    if walls:
        base["wall_s"] = float(np.mean(walls))
        base["wall_s_seeds"] = walls
    return base


def _seed_errors(parts, by_name, m) -> dict:
    """A row's errors, with a replica's training divergence named by its seed (any seed diverging marks the row)."""
    errors = dict(parts[m.name]["errors"])
    for name, p in parts.items():
        if by_name.get(name) is not None and by_name[name].replica_of == m.name:
            for stage, msg in p["errors"].items():
                errors.setdefault(stage, f"seed {by_name[name].seed_index}: {msg}")
    return errors


SAMPLES_JOB = "samples of "   # a worker job: the samples and features of a row trained in the parent pass
REFERENCE_JOB = "reference: "  # a worker job: the samples and features of a reference row (data, untrained)


def _samples_job(by_name, m, post):
    """A worker job for a row the parent trains (e.g. ``deploy``: discrete LPC's model programmed onto the array,
    seeded): load its ``after`` rows from their caches, build the row the same way, draw its samples and features."""
    def job(ctx):
        for a in m.after:
            ctx.trained[a] = by_name[a].train(ctx)
        return post(ctx, m.name, m.train(ctx))
    return job


def _train(ctx, methods, parts, stages, post=None, jobs=()):
    """1. Every row's training; returns the reference row's (discrete LPC's) Trained.

    Rows marked ``pretrain`` first train in parallel workers (``parallel.pretrain``: ``cfg.train_workers``, default
    as many one-thread processes as fit 2 cores); the sequential pass in table order then loads their cached
    models, records their outcomes and trains every other row.  ``ctx.train_walls``: each row's training wall
    time in this run (rows in workers overlap).
    """
    from . import parallel

    cfg, log = ctx.cfg, ctx.log
    workers = cfg.train_workers or parallel.default_workers(cfg.threads)
    outcomes = {}
    if workers > 1:
        with stages.time(f"training: {workers} workers in parallel"):
            outcomes = parallel.pretrain(ctx, methods, workers, cfg.threads or 1, cfg.skip, post=post, jobs=jobs)
    ctx.worker_jobs = {n: o for n, o in outcomes.items() if n.startswith("job:")}
    outcomes = {n: o for n, o in outcomes.items() if not n.startswith("job:")}
    ctx.worker_samples = {n: o["post"] for n, o in outcomes.items()
                          if isinstance(o.get("post"), dict) and o["post"].get("features") is not None}
    for n, o in ctx.worker_jobs.items():    # rows the parent trains, sampled by a worker job
        v = o.get("value")
        if n.startswith("job:" + SAMPLES_JOB) and isinstance(v, dict) and v.get("features") is not None:
            ctx.worker_samples[n[len("job:" + SAMPLES_JOB):]] = v
    ctx.worker_metric_walls = {n: o["post_wall_s"] for n, o in outcomes.items() if "post_wall_s" in o}
    ctx.train_walls = {n: o["wall_s"] for n, o in outcomes.items()}
    ctx.train_cpu = {n: o["cpu_s"] for n, o in outcomes.items() if "cpu_s" in o}
    ctx.train_workers = workers if outcomes else 1
    with stages.time("training: sequential pass" if outcomes else "training"):
        for i, m in enumerate(methods, 1):
            if m.name in cfg.skip:
                parts[m.name]["not_run"] = "skipped (--skip)"
                continue
            if m.replica_of is not None and m.replica_of not in ctx.trained:   # its base row did not train
                parts[m.name]["not_run"] = f"its seed-{cfg.seed} row did not train"
                continue
            o = outcomes.get(m.name, {})
            if o.get("status") == "not_run":
                parts[m.name]["not_run"] = o["message"]
                continue
            if o.get("status") == "diverged":
                if m.required:
                    raise DivergenceError(o["message"], step=o.get("step"), chain=o.get("chain"), unit=o.get("unit"))
                parts[m.name]["errors"]["training"] = o["message"]
                continue
            if not o:
                log(f"[train {i}/{len(methods)}] {m.label}")
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                ctx.trained[m.name] = m.train(ctx)
            except NotRun as e:
                parts[m.name]["not_run"] = str(e)
                log(f"      not run: {e}")
            except DivergenceError as e:
                if m.required:
                    raise
                parts[m.name]["errors"]["training"] = str(e)   # a finding, not a crash: the other rows still run
                log(f"      {m.label} training diverged: {str(e).splitlines()[0]}")
            if not o:
                ctx.train_walls[m.name] = time.perf_counter() - t0
                ctx.train_cpu[m.name] = time.process_time() - c0
            elif m.name in ctx.trained and ctx.trained[m.name].training is not None:
                # loaded here from what the worker trained: "cached" is whether the *worker* found it cached
                ctx.trained[m.name].training.update(cached=o.get("cached", False), trained_by="worker")
    for tr in ctx.trained.values():
        tr.model.eval(), tr.encoder.eval()
    return ctx.trained["discrete"]


def _posteriors(ctx, methods, parts, stages, ref):
    """2. The posterior rows on the discrete-LPC model: same test images, same warm starts.

    Returns the figures' inputs: (traces, log joints) per row label."""
    from neuro_lpc.data import dataset_tensor

    from . import parallel

    cfg = ctx.cfg
    ctx.log(f"[posterior] {cfg.posterior_chains} chains x {cfg.posterior_steps} steps")
    traces, lj = {}, {}
    with stages.time("posterior: preconditioner bias"):
        ctx.preconditioner = post_mod.preconditioner_info(cfg)
    with stages.time("posterior"):
        test_x, _ = dataset_tensor(ctx.test_set, cfg.posterior_chains)
        inp = post_mod.make_inputs(cfg, ref.model, ref.encoder, test_x, ctx.device, cfg.seed + 1000)
        rows = [m for m in methods if m.posterior is not None and m.name not in cfg.skip]
        # the sampler rows are independent: side by side in the training workers' processes (one thread each)
        workers = (cfg.train_workers or parallel.default_workers(cfg.threads)) if ctx.device.type == "cpu" else 1
        runs = parallel.fork_map(lambda m: m.posterior(ctx, inp), rows, workers, cfg.threads or 1, ctx.out)
        for m, run in zip(rows, runs):
            parts[m.name]["posterior"] = run.summary
            if "diverged" in run.summary:
                parts[m.name]["errors"]["posterior"] = run.summary["diverged"]
            if run.trace is not None:
                traces[m.label], lj[m.label] = run.trace, run.log_joint
            if run.onset is not None:
                ctx.onsets[m.label] = run.onset
    return traces, lj


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    raise TypeError(type(o).__name__)


# --------------------------------------------------------------------------------------------- CLI
def build_parser():
    import argparse

    p = argparse.ArgumentParser(
        description="Circuit vs discrete Langevin predictive coding on the same data: posterior and learning comparison "
                    "against noise-free PC and VAEs (same steps, same wall time), sample quality (FID + KID, density, "
                    "coverage, collapse flags), a status and verdict per method, figures.")
    p.add_argument("--noise", default=DEFAULT_NOISE, help="noise preset: none | ideal | thermal | analog | cortical")
    p.add_argument("--noise-config", help="a JSON noise-model file (overrides --noise)")
    p.add_argument("--model", help="a trained discrete-LPC checkpoint to use instead of training one")
    p.add_argument("--out", help="output folder (default runs/<time>-<noise>)")
    p.add_argument("--dataset", default="animal-mnist")
    p.add_argument("--data-root")
    p.add_argument("--quick", action="store_true", help="= --budget quick: a <= 2-minute first look (models not trained "
                                                        "enough to rank)")
    p.add_argument("--budget", default="default", help="quick | default (target 10 min on 2 CPU cores; measured 17) | "
                                                       "long (16 epochs) | paper (the paper's settings, for a GPU); "
                                                       "docs/study.md")
    p.add_argument("--seeds", type=int, help="training seeds of the compared rows (discrete LPC, each circuit row); "
                                             "default: the budget's (3)")
    p.add_argument("--architecture", help="decoder/encoder: auto (mlp for 28x28 data on a CPU, else conv) | mlp | conv "
                                          "(the paper's Table 2)")
    p.add_argument("--train-epochs", type=float, help="epochs of every training row (default: the budget's)")
    p.add_argument("--curve-points", type=int, help="learning-curve points per training (default 5; 0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--feature", default="auto",
                   help="auto (neuro_lpc.metrics.default_feature: Inception FID) | classifier (small-classifier FD) | inception")
    p.add_argument("--full-protocol", action="store_true", help="the paper's FID protocol: 50,000 samples, Inception features")
    p.add_argument("--dynamics", help="the circuit rows' value units: overdamped (default) | nonreversible | underdamped "
                                      "(docs/circuits_dynamics.md; the discrete rows are unchanged)")
    p.add_argument("--skew", help="nonreversible: none | random | optimal")
    p.add_argument("--skew-scale", type=float, help="nonreversible: scale of the named skew (default 1)")
    p.add_argument("--friction", type=float, help="underdamped: friction gamma_f (default 1)")
    p.add_argument("--mass", type=float, help="underdamped: mass M (default 1)")
    p.add_argument("--precondition", help="none | a decay beta in (0, 1) for every row (default 0.25; underdamped "
                                          "circuit rows need none)")
    p.add_argument("--preconditioner",
                   help="adam (Algorithm 1, default) | frozen (G held fixed after a warm-up: posterior-invariant)")
    p.add_argument("--learning", default="hardware-aware,deploy",
                   help="analog learning modes of the circuit rows: deploy | hardware-aware | in-memory | "
                        "in-memory-local, a comma list, or all (default: hardware-aware,deploy -- the in-memory modes add a "
                        "circuit training each); matters when the noise model has weight devices (circuits.modes)")
    p.add_argument("--local-lr", type=float, help=f"the in-memory-local row's learning rate (plain SGD on the arrays; "
                                                  f"default {LOCAL_LR:g})")
    p.add_argument("--skip", default="", help="comma-separated method rows not to run, e.g. vae-wall,pc (reported as not run)")
    p.add_argument("--threads", type=int, help="torch threads for training and sampling (default 1: on a shared 2-core CPU "
                                               "a second thread slows batch-64 steps several-fold; metrics use all cores)")
    p.add_argument("--train-workers", type=int, help="processes training rows side by side (default: as many one-thread "
                                                     "processes as fit 2 cores; 1 = one after the other)")
    p.add_argument("--n-samples", type=int)
    p.add_argument("--train-batches", type=int)
    p.add_argument("--langevin-steps", type=int)
    p.add_argument("--posterior-steps", type=int)
    p.add_argument("--onset-steps", type=int, help="steps of the onset experiment (chains from the prior; diagnostics' "
                   "variability quenching; default 100, 0: none)")
    p.add_argument("--tau-z", type=float, help="value-unit time constant in s (default 0.01)")
    p.add_argument("--tau-e", type=float, help="error-unit time constant in s (default 0: adiabatic; see docs/study.md)")
    p.add_argument("--cache-dir", help="cache for the feature network and real-set statistics (default: <out>/../.cache)")
    return p


def _precondition_arg(text: str):
    """--precondition: none/off/0 -> None, else a decay beta in (0, 1)."""
    t = text.strip().lower()
    if t in ("none", "off", "0", "0.0"):
        return None
    try:
        beta = float(t)
    except ValueError:
        beta = float("nan")
    if not 0 < beta < 1:
        raise StudyError(f"--precondition must be none or a decay beta in (0, 1), got {text!r}")
    return beta


def config_from_args(args) -> StudyConfig:
    cfg = StudyConfig(noise=args.noise, noise_config=args.noise_config, model=args.model, out=args.out, dataset=args.dataset,
                      data_root=args.data_root, quick=args.quick, budget=args.budget, seed=args.seed, device=args.device,
                      feature=args.feature,
                      full_protocol=args.full_protocol, cache_dir=args.cache_dir, learning=args.learning,
                      skip=[s.strip() for s in args.skip.split(",") if s.strip()])
    cfg.apply_quick()
    for name in ("tau_z", "tau_e", "n_samples", "train_batches", "langevin_steps", "posterior_steps", "onset_steps",
                 "preconditioner", "threads", "train_workers", "seeds", "architecture", "train_epochs", "curve_points",
                 "dynamics", "skew_scale", "friction", "mass", "local_lr"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    if args.skew is not None:
        cfg.skew = None if args.skew.strip().lower() == "none" else args.skew
    if args.precondition is not None:
        cfg.precondition = _precondition_arg(args.precondition)
    if args.train_batches is not None and args.train_epochs is None:
        cfg.train_epochs = None        # steps given: they win over the budget's epochs
    cfg.quick = False  # already applied; flags above override the quick sizes
    if cfg.out is None:
        cfg.out = default_out(cfg)
    if cfg.cache_dir is None:
        cfg.cache_dir = str(Path(cfg.out).resolve().parent / ".cache")
    return cfg


def print_summary(report: dict, out: Path) -> None:
    text = (out / "report.md").read_text().split("\n\n")
    print()
    print(text[0])
    print()
    print(text[1])
    print("\nstage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report["stages"].items()))
    print("training wall per row (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report["stages_training"].items()))
    print(f"\nreport: {out / 'report.md'} ({report['wall_s']:.0f} s)")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        resolve_device(cfg.device)
        report = run_study(cfg, log=lambda s: print(s, flush=True))
    except (StudyError, FileNotFoundError, PermissionError, CheckpointError, ValueError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    except DivergenceError as e:
        print(f"error: the run diverged: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    print_summary(report, Path(cfg.out))
    return 0
