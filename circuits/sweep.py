"""Parameter sweeps behind ``sims/sweep.py``: one CSV row per setting and one plot per sweep.

Sweeps (all on one trained model, from --model or trained once and cached in the output folder):
  * ``temperature`` — circuit temperature T (T = 0: classic PC, a gradient flow; T = 1: Langevin PC);
  * ``noise``       — amplitude of additive thermal noise on value and error units (on top of T = 1);
  * ``step``        — Langevin step size, with and without preconditioning (paper Fig. 4), discrete LPC;
                      ``--train`` also trains a short model per setting and reports its sample FD (Fig. 4 proper);
  * ``tau``         — error-unit time constant tau_e (0 = adiabatic) relative to the EM step;
  * ``sources``     — attribution of the ``analog`` preset for *inference*: the circuit with each of its
                      sources alone (on top of the intrinsic T = 1 noise), then all together;
  * ``learning-sources`` — the same attribution for *learning*: a short circuit training per source
                      (learning mode ``--learning``, default hardware-aware), scored by its final loss, how far
                      the decoder moved, the samples' pixel spread and FD, on the weights as they sit on the device;
  * ``deploy-time`` — deploy the discrete-LPC model on the array (programming / drift / read noise alone, the
                      three together, the whole ``analog`` preset) and score posterior and samples as the time
                      since programming grows (1 s ... 1 month, ``circuits.modes.TIME_POINTS``);
  * ``dynamics``    — sampler families (overdamped, non-reversible, underdamped): ESS per gradient evaluation against
                      entropy production on the linear case and the decoder, and (``--train``) learning with each
                      family; its own CSV / PNG / markdown report (``circuits.sweep_dynamics``, docs/dynamics.md).
  * ``devices``     — learning in memory with the arrays' local pulsed rule (``in-memory-local``) on device presets
                      (ideal pulsed, PCM-like, ReRAM-like asymmetric with and without Tiki-Taka) against its plain-SGD
                      digital twin at the main job's budget over ``--seeds``, and the PCM-like row's deploy-time
                      curve with the accumulated 1/f noise; its own CSV / PNG / samples / report
                      (``circuits.sweep_devices``, docs/learning_modes.md).
Each row holds the setting, the posterior diagnostics of ``circuits.study.posterior_summary``
(log p(x, z), reconstruction error, ESS per unit time, ...), ``diverged`` and wall time.
"""
from __future__ import annotations

import csv
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from neuro_lpc.errors import DivergenceError

from .study import StudyConfig, fit_cached, posterior_summary, train_config
from .study.config import LOCAL_LR

SWEEPS = ("temperature", "noise", "step", "tau", "sources", "learning-sources", "deploy-time", "dynamics", "devices")
DEFAULT_SWEEPS = SWEEPS[:-2]     # "dynamics" and "devices" (long: their own trainings) run only when named
OWN_MODEL_SWEEPS = ("devices",)  # train their own models: the sweeps' shared discrete-LPC model is not needed
DEPLOY_SUBSETS = ("weight_programming", "drift", "weight_read", "weights", "analog")


@dataclass
class SweepConfig:
    sweeps: tuple = DEFAULT_SWEEPS
    out: str = "runs/sweep"
    model: str | None = None
    quick: bool = False
    train: bool = False
    seed: int = 0
    device: str = "auto"
    chains: int = 16
    steps: int = 300
    record_every: int = 2
    step_size: float = 3e-4
    tau_z: float = 10e-3
    learning: str = "hardware-aware"
    train_batches: int = 60
    n_samples: int = 500
    seeds: int = 1                 # dynamics sweep (--train): training seeds per family
    dyn_steps: int = 20000         # dynamics sweep: steps (= gradient evaluations) of each decoder chain
    local_lr: float = LOCAL_LR     # devices sweep: the decoder's rate (local rule and the twin's plain SGD), the study's

    def validate(self) -> "SweepConfig":
        """Every field's type and range (one-line ValueError naming it), before any work; returns self."""
        from neuro_lpc.validation import LIMITS, check_bool, check_device, check_int, check_number, check_text

        from .modes import check_learning_mode

        if isinstance(self.sweeps, str) or not isinstance(self.sweeps, (tuple, list)) or not self.sweeps:
            raise ValueError(f"sweeps must be a non-empty list of {', '.join(SWEEPS)}, got {self.sweeps!r}")
        unknown = [s for s in self.sweeps if s not in SWEEPS]
        if unknown:
            raise ValueError(f"unknown sweep(s) {unknown}; choose from {', '.join(SWEEPS)}")
        check_text("out", self.out)
        check_text("model", self.model, allow_none=True)
        check_bool("quick", self.quick)
        check_bool("train", self.train)
        check_int("seed", self.seed, lo=0, hi=LIMITS["seed"])
        check_device("device", self.device)
        check_int("chains", self.chains, hi=LIMITS["chains"])
        check_int("steps", self.steps, hi=LIMITS["steps"])
        check_int("record_every", self.record_every, hi=self.steps)
        check_int("train_batches (--train-batches)", self.train_batches, hi=LIMITS["batches"])
        check_int("n_samples", self.n_samples, lo=2, hi=LIMITS["samples"])
        check_number("step_size", self.step_size, lo=0, lo_open=True)
        check_number("tau_z", self.tau_z, lo=0, lo_open=True, unit=" of seconds")
        check_learning_mode(self.learning)
        check_int("seeds", self.seeds, hi=10)
        check_int("dyn_steps (--dyn-steps)", self.dyn_steps, lo=100, hi=LIMITS["steps"])
        check_number("local_lr (--local-lr)", self.local_lr, lo=0, lo_open=True)
        return self

    def values(self, sweep: str) -> list:
        q = self.quick
        return {
            "temperature": [0.0, 0.5, 1.0, 2.0] if q else [0.0, 0.25, 0.5, 1.0, 1.5, 2.0],
            "noise": [0.0, 0.1, 0.5] if q else [0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0],
            "step": [1e-4, 1e-3, 1e-1] if q else [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
            "tau": [0.0, 1.0, 4.0] if q else [0.0, 1.0, 2.0, 4.0, 10.0, 30.0],
            "sources": list(range(len(_analog_sources()) + 1)),
            "learning-sources": list(range(-1, len(_analog_sources()) + 1)),
            "deploy-time": [(s, t) for s in DEPLOY_SUBSETS for t in _time_points(q)],
        }[sweep]


def _time_points(quick: bool) -> list:
    from .modes import TIME_POINTS

    items = list(TIME_POINTS.items())
    return [items[0], items[-1]] if quick else items


def _source_label(src: dict) -> str:
    return src["type"] + (f"/{src['site']}" if "site" in src else "")


def _analog_sources() -> list[dict]:
    from .noise import PRESETS

    return list(PRESETS["analog"]["sources"])


def _model(cfg: SweepConfig, out: Path, device):
    from neuro_lpc.data import load_dataset
    from neuro_lpc.train import LPCTrainer, build_model, load_trained

    if cfg.model:
        m, e, _, _ = load_trained(cfg.model, device)
        return m.eval(), e.eval()
    st = StudyConfig(quick=cfg.quick, seed=cfg.seed, device=cfg.device, step_size=cfg.step_size).apply_quick()
    train, _, info = load_dataset(st.dataset)
    tc = train_config(st, "lpc")
    m, e = build_model(tc, info.image_size, info.channels)
    fit_cached(LPCTrainer(m, e, tc), train, out / "models" / "discrete")
    return m.eval(), e.eval()


def _run_one(kind, value, model, x, z0, cfg: SweepConfig, device):
    from neuro_lpc.langevin import LangevinSampler

    from .circuit import Circuit, CircuitConfig

    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    t0 = time.perf_counter()
    if kind == "deploy":
        return _deploy_one(value, model, x, z0, cfg, device, gen, t0)
    if kind == "discrete":
        gamma, beta = value
        res = LangevinSampler(step_size=gamma, steps=cfg.steps, precondition=beta).sample(
            model, x, z0, record_every=cfg.record_every, generator=gen)
        t = res.t.double().cpu() * gamma * cfg.tau_z
        return posterior_summary(res.z_trace, res.log_joint_trace, t, x, model, time.perf_counter() - t0)
    ccfg = CircuitConfig(dt=cfg.step_size * cfg.tau_z, tau_z=cfg.tau_z, seed=cfg.seed, **value)
    traj = Circuit(model, ccfg).simulate(x, z0, steps=cfg.steps, record_every=cfg.record_every, generator=gen)
    return posterior_summary(traj.z, traj.log_joint, traj.t, x, model, time.perf_counter() - t0)


def settings(sweep: str, cfg: SweepConfig):
    """(row fields, sampler kind, sampler value) per setting of a sweep."""
    dt = cfg.step_size * cfg.tau_z
    for v in cfg.values(sweep):
        if sweep == "temperature":
            yield {"temperature": v}, "circuit", {"noise": "ideal", "temperature": v, "tau_e": 0.0}
        elif sweep == "noise":
            yield {"thermal_std": v}, "circuit", {"noise": {"temperature": 1.0, "sources": [
                {"type": "thermal", "value_std": v, "error_std": v}]} if v > 0 else "ideal", "tau_e": 0.0}
        elif sweep == "step":
            for beta in (None, 0.25, 0.99):
                yield {"step_size": v, "precondition": beta}, "discrete", (v, beta)
        elif sweep == "sources":
            srcs = _analog_sources()
            if v < len(srcs):
                label = srcs[v]["type"] + (f"/{srcs[v]['site']}" if "site" in srcs[v] else "")
                noise = {"temperature": 1.0, "sources": [srcs[v]]}
            else:
                label, noise = "all (analog preset)", "analog"
            yield {"index": v, "source": label}, "circuit", {"noise": noise, "tau_e": 0.0}
        elif sweep == "tau":
            yield {"tau_e_over_dt": v, "tau_e": v * dt}, "circuit", {"noise": "ideal", "tau_e": v * dt}
        elif sweep == "learning-sources":
            srcs = _analog_sources()
            if v < 0:
                label, noise = "none (ideal)", "ideal"
            elif v < len(srcs):
                label, noise = _source_label(srcs[v]), {"temperature": 1.0, "sources": [srcs[v]]}
            else:
                label, noise = "all (analog preset)", "analog"
            yield {"index": v, "source": label, "learning": cfg.learning}, "learn", noise
        elif sweep == "deploy-time":
            subset, (tlabel, t) = v
            yield {"devices": subset, "time": tlabel, "t_seconds": t}, "deploy", (subset, t)


def run_sweeps(cfg: SweepConfig, log=print) -> dict[str, Path]:
    from neuro_lpc.config import resolve_device, write_run_metadata
    from neuro_lpc.data import dataset_tensor, load_dataset

    from . import plots

    unknown = set(cfg.sweeps) - set(SWEEPS)
    if unknown:
        raise ValueError(f"unknown sweep(s) {sorted(unknown)}; choose from {SWEEPS}")
    if cfg.quick:
        cfg.chains, cfg.steps, cfg.dyn_steps = min(cfg.chains, 6), min(cfg.steps, 60), min(cfg.dyn_steps, 2000)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    write_run_metadata(out, asdict(cfg), name="sweep_config.json")
    files = {}
    if "devices" in cfg.sweeps:
        from .sweep_devices import run_devices_sweep

        files["devices"] = run_devices_sweep(cfg, out, device, log)
    if all(s in OWN_MODEL_SWEEPS for s in cfg.sweeps):
        return files
    model, encoder = _model(cfg, out, device)
    _, test, _ = load_dataset("animal-mnist")
    x, _ = dataset_tensor(test, cfg.chains)
    x = x.to(device)
    with torch.no_grad():
        z0 = encoder(x)[0]
    for sweep in cfg.sweeps:
        if sweep in OWN_MODEL_SWEEPS:
            continue
        if sweep == "dynamics":      # its own rows, CSV, plot and report
            from .sweep_dynamics import run_dynamics_sweep

            files[sweep] = run_dynamics_sweep(cfg, model, x, z0, out, device, log)
            continue
        rows = []
        for fields_, kind, value in settings(sweep, cfg):
            log(f"[{sweep}] {fields_}")
            row = dict(sweep=sweep, **fields_)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    if kind == "learn":
                        row.update(_learn_one(value, cfg, out, device), diverged=False)
                    else:
                        row.update(_run_one(kind, value, model, x, z0, cfg, device), diverged=False)
                    if kind in ("learn", "deploy"):
                        row.update(_score_samples(row.pop("_sampler"), cfg, out, device))
            except DivergenceError as e:
                row.update(diverged=True, error=str(e).splitlines()[0])
            if sweep == "step" and cfg.train:
                row.update(_train_and_score(cfg, value, out, device))
            rows.append(row)
        path = out / f"sweep_{sweep}.csv"
        keys = list(dict.fromkeys(k for r in rows for k in r))  # setting columns first, in row order
        with open(path.with_suffix(".csv.tmp"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
        path.with_suffix(".csv.tmp").replace(path)
        ok = [r for r in rows if not r.get("diverged")]
        x_key = {"temperature": "temperature", "noise": "thermal_std", "step": "step_size", "tau": "tau_e_over_dt",
                 "sources": "index", "learning-sources": "index", "deploy-time": "t_seconds"}[sweep]
        y_keys = ["log_joint_mean", "recon_mse", "ess_per_unit_time"] + (["fd"] if sweep == "step" and cfg.train else [])
        if sweep == "learning-sources":
            y_keys = ["final_loss_per_dim", "decoder_change", "pixel_std", "fd"]
        elif sweep == "deploy-time":
            y_keys = ["log_joint_mean", "recon_mse", "pixel_std", "fd"]
        if ok and sweep == "deploy-time":
            plots.plot_sweep(ok, x_key, y_keys, out / f"sweep_{sweep}.png", group_key="devices", logx=True)
        elif ok and sweep == "learning-sources":
            plots.plot_sweep(ok, x_key, y_keys, out / f"sweep_{sweep}.png", xticklabels=[r["source"] for r in ok])
        elif ok:
            plots.plot_sweep(ok, x_key, y_keys, out / f"sweep_{sweep}.png",
                             group_key="precondition" if sweep == "step" else None, logx=sweep == "step",
                             xticklabels=[r["source"] for r in ok] if sweep == "sources" else None)
        files[sweep] = path
    return files


def _deploy_one(value, model, x, z0, cfg: SweepConfig, device, gen, t0) -> dict:
    """The discrete-LPC model programmed once onto the array (a subset of the analog preset's weight devices, or
    the whole preset), ``t`` seconds after programming: the circuit's posterior on the device, and a sampler
    of the deployed model (scored by ``_score_samples``)."""
    from .circuit import Circuit, CircuitConfig
    from .modes import deployed_model, program_array, split_weight_sources
    from .noise import NoiseModel

    subset, t = value
    analog = NoiseModel.preset("analog")
    dev, _ = split_weight_sources(analog)
    if subset == "analog":
        noise = analog
    else:
        keep = [s.to_dict() for s in dev if subset == "weights" or s.type == subset]
        noise = NoiseModel(keep, temperature=1.0)
    array = program_array(model, noise, cfg.seed, t_since_programming=t)
    ccfg = CircuitConfig(dt=cfg.step_size * cfg.tau_z, tau_z=cfg.tau_z, seed=cfg.seed, noise=noise, tau_e=0.0)
    traj = Circuit(model, ccfg, array=array).simulate(x, z0, steps=cfg.steps, record_every=cfg.record_every,
                                                      generator=gen)
    row = posterior_summary(traj.z, traj.log_joint, traj.t, x, model, time.perf_counter() - t0)
    dep = deployed_model(model, array, torch.Generator(device=device).manual_seed(cfg.seed + 5))
    row["_sampler"] = dep
    return row


def _learn_one(noise, cfg: SweepConfig, out: Path, device) -> dict:
    """A short circuit training under ``noise`` (learning mode ``cfg.learning``) from the same initial weights."""
    from neuro_lpc.data import load_dataset
    from neuro_lpc.train import build_model

    from .learn import CircuitTrainConfig, CircuitTrainer

    st = StudyConfig(quick=cfg.quick, seed=cfg.seed, device=cfg.device).apply_quick()
    train, _, info = load_dataset(st.dataset)
    tc = train_config(st, "lpc")
    ctc = CircuitTrainConfig(**{**tc.to_dict(), "method": "circuit", "max_batches_per_epoch": cfg.train_batches,
                                "epochs": 1}, dt=st.step_size * st.tau_z, tau_z=st.tau_z, tau_e=0.0,
                             noise=noise, presentation_steps=st.langevin_steps, learning=cfg.learning)
    torch.manual_seed(cfg.seed)
    m, e = build_model(tc, info.image_size, info.channels)
    before = {n: p.detach().clone() for n, p in m.decoder.named_parameters()}
    trainer = CircuitTrainer(m, e, ctc)
    t0 = time.perf_counter()
    hist = trainer.fit(train, progress=False)
    change = max(float((p.detach() - before[n]).norm() / before[n].norm().clamp(min=1e-12))
                 for n, p in m.decoder.named_parameters() if p.dim() >= 2)
    last = hist[-5:]
    dep = trainer.deployed(generator=torch.Generator(device=device).manual_seed(cfg.seed + 5))
    return {"final_loss_per_dim": sum(r["loss_per_dim"] for r in last) / len(last), "decoder_change": change,
            "train_wall_s": time.perf_counter() - t0, "_sampler": dep}


def _score_samples(model, cfg: SweepConfig, out: Path, device) -> dict:
    """Pixel spread across samples and the small-classifier FD of ``cfg.n_samples`` samples of ``model``."""
    from neuro_lpc.metrics import evaluate_samples

    n = min(cfg.n_samples, 200) if cfg.quick else cfg.n_samples
    with torch.no_grad():
        imgs = model.sample(n, generator=torch.Generator(device=device).manual_seed(cfg.seed)).cpu()
    res = evaluate_samples(imgs, "animal-mnist", feature="classifier", cache_dir=out.resolve().parent / ".cache",
                           n_real=n, split="test")
    return {"pixel_std": float(imgs.reshape(n, -1).std(0).mean()), "fd": res["fd"], "coverage": res["coverage"]}


def _train_and_score(cfg: SweepConfig, value, out: Path, device) -> dict:
    """Fig. 4 proper: a short LPC run per (step size, beta), then the FD of its samples."""
    from neuro_lpc.data import load_dataset
    from neuro_lpc.metrics import evaluate_samples
    from neuro_lpc.train import LPCTrainer, build_model

    gamma, beta = value
    st = StudyConfig(quick=cfg.quick, seed=cfg.seed, device=cfg.device, step_size=gamma, precondition=beta).apply_quick()
    train, _, info = load_dataset(st.dataset)
    tc = train_config(st, "lpc")
    m, e = build_model(tc, info.image_size, info.channels)
    try:
        fit_cached(LPCTrainer(m, e, tc), train, out / "models" / f"step{gamma:g}-beta{beta}")
    except DivergenceError as err:
        return {"fd": math.nan, "train_error": str(err).splitlines()[0]}
    n = 200 if cfg.quick else 1000
    with torch.no_grad():
        imgs = m.sample(n, generator=torch.Generator(device=device).manual_seed(cfg.seed)).cpu()
    res = evaluate_samples(imgs, "animal-mnist", feature="classifier", cache_dir=out.resolve().parent / ".cache", n_real=n, split="test")
    return {"fd": res["fd"], "coverage": res["coverage"], "density": res["density"]}


def build_parser():
    from neuro_lpc.validation import OneLineParser

    p = OneLineParser(description="Sweeps of noise amplitude / temperature, Langevin step size with and "
                                  "without preconditioning (paper Fig. 4), and time constants.")
    p.add_argument("--sweep", nargs="+", default=list(DEFAULT_SWEEPS),
                   help=f"which sweeps: {' '.join(SWEEPS)} (default: all but dynamics and devices)")
    p.add_argument("--out", default="runs/sweep")
    p.add_argument("--model", help="a trained discrete-LPC checkpoint")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--train", action="store_true", help="step sweep: also train a short model per setting and report its FD; "
                                                        "dynamics sweep: train with each sampler family")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--learning", default="hardware-aware", help="learning-sources sweep: deploy | hardware-aware | in-memory")
    p.add_argument("--train-batches", type=int, default=60, help="learning-sources sweep: batches per training")
    p.add_argument("--seeds", type=int, default=1, help="dynamics sweep with --train: training seeds per family; "
                                                         "devices sweep: training seeds per row")
    p.add_argument("--local-lr", type=float, default=LOCAL_LR,
                   help=f"devices sweep: the decoder's learning rate of the local rule and of its plain-SGD twin "
                        f"(default {LOCAL_LR:g})")
    p.add_argument("--dyn-steps", type=int, default=20000, help="dynamics sweep: gradient evaluations per chain")
    return p


def prepare(argv=None) -> SweepConfig:
    """Parse and check every flag, the device, the model file and the output folder before any work."""
    from neuro_lpc.config import resolve_device
    from neuro_lpc.train import read_checkpoint
    from neuro_lpc.validation import check_out_dir

    a = build_parser().parse_args(argv)
    cfg = SweepConfig(sweeps=tuple(a.sweep), out=a.out, model=a.model, quick=a.quick, train=a.train, device=a.device,
                      seed=a.seed, learning=a.learning, train_batches=a.train_batches, seeds=a.seeds,
                      dyn_steps=a.dyn_steps, local_lr=a.local_lr).validate()
    resolve_device(cfg.device)
    if cfg.model is not None:
        if not Path(cfg.model).is_file():
            raise FileNotFoundError(f"model file not found: {cfg.model}")
        read_checkpoint(cfg.model)   # CheckpointError (one line) when it is not a checkpoint
    check_out_dir(cfg.out)
    return cfg


def _main(argv) -> int:
    cfg = prepare(argv)
    files = run_sweeps(cfg, log=lambda s: print(s, flush=True))
    for k, v in files.items():
        print(f"{k}: {v} and {v.with_suffix('.png')}")
    return 0


def main(argv=None) -> int:
    """``sims/sweep.py``: every error is one line on stderr (exit 2: bad input; 1: the run failed), no traceback."""
    from neuro_lpc.validation import cli_boundary

    return cli_boundary(_main, argv)
