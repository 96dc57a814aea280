"""Every CLI flag that changes a result reaches the object that uses it, with its value (issue 18, part 3).

The four CLIs -- ``sims/train_lpc.py`` (``neuro_lpc.cli``), ``sims/train_circuit.py`` (``circuits.cli``),
``sims/run_circuit.py`` (``circuits.study.run``) and ``sims/sweep.py`` (``circuits.sweep``) -- are run on their
own parsers and config builders, without training: the training CLIs end to end (``train_main``) with the data set
replaced by a small in-memory one and ``Trainer.fit`` by a recorder, so each case reads the trainer the CLI built; the
study and the sweep through ``config_from_args`` / ``prepare`` and the functions that build their trainers, samplers
and circuits.  Each case gives one flag a value away from its default and reads what it sets on the built object (the
sampler's step, the circuit's dt, the optimiser's rate, ...); where the value enters a formula (dt = step_size * tau_z,
online_lr = dt / tau_theta, the cosine schedule, the budget's optimiser steps) the case checks the formula's value.
The control: the same probe on a run without the flag must read something else, so a case fails when its flag is
dropped.  Every flag of every parser is classified -- a case here, a case elsewhere, or a written reason why it does
not change a result -- and a new flag fails ``test_every_flag_is_classified`` until it is.
"""
from __future__ import annotations

import json

import pytest
import torch

import circuits.study.run as study_run
import circuits.sweep as sweep
import circuits.sweep_devices as sdev
import neuro_lpc.data
import neuro_lpc.train
from circuits import cli as circuit_cli
from circuits.study.config import resolve_noise
from circuits.study.methods import default_methods, with_seed_replicas
from circuits.study.posterior import circuit_config_for, sampler_for
from circuits.study.quality import choose_feature, samples_per_row
from circuits.study.train import train_config
from neuro_lpc import cli as lpc_cli
from neuro_lpc.data import DatasetInfo

pytestmark = pytest.mark.usefixtures("single_thread")

N_IMAGES = 256   # the stand-in data set: 4 batches of the default 64


# ------------------------------------------------------------------------------ the training CLIs, end to end ----

@pytest.fixture
def train_cli(monkeypatch, tmp_path):
    """run(main, argv) -> (trainer, seen): the CLI's ``_train`` with ``load_dataset`` answering a 256-image stand-in
    (recording its arguments) and ``Trainer.fit`` recording the trainer it was called on instead of training."""
    data = torch.utils.data.TensorDataset(torch.zeros(N_IMAGES, 1, 28, 28), torch.zeros(N_IMAGES, dtype=torch.long))
    seen = {"data": data}

    def load(name, root=None, download=False):
        seen["load"] = (name, root, download)
        return data, data, DatasetInfo(name, 1, 28, 10, N_IMAGES, N_IMAGES)

    def fit(self, train_dataset, epochs=None, resume=False, progress=True):
        seen.update(trainer=self, fit=dict(epochs=epochs, resume=resume, progress=progress))
        return []

    monkeypatch.setattr(neuro_lpc.data, "load_dataset", load)
    monkeypatch.setattr(neuro_lpc.train.Trainer, "fit", fit)
    runs = iter(range(10**6))

    def run(main, argv):
        seen.pop("trainer", None)
        rc = main(["--out", str(tmp_path / f"run{next(runs)}"), *argv])
        assert rc == 0 and "trainer" in seen, argv
        return seen["trainer"], seen
    return run


def _config_file(tmp_path, **fields):
    p = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.json"
    p.write_text(json.dumps({"config": fields}))
    return str(p)


def _noise_file(tmp_path):
    p = tmp_path / "noise.json"
    p.write_text(json.dumps({"temperature": 1.0, "sources": [{"type": "thermal", "value_std": 0.3, "error_std": 0.0}]}))
    return str(p)


def _start(t, step=100):
    """Where the trainer starts a chain at optimiser step ``step``: "encoder" (q(z|x), here mean 50) or "prior"."""
    t.global_step = step
    d = t.model.latent_dim
    z0 = t.initial_state(torch.zeros(4, 1, 28, 28), torch.full((4, d), 50.0), torch.full((4, d), 1e-4))
    return "encoder" if float(z0.mean()) > 25 else "prior"


def _cosine_at_half(t):
    """lr_factor half-way through a 4-step run: (1 + cos(pi / 2)) / 2 = 0.5 for "cosine", 1 for "constant"."""
    t._total_steps, t.global_step = 4, 2
    return t.lr_factor()


def _latent(t):
    return t.model.latent_dim, t.encoder(torch.zeros(2, 1, 28, 28))[0].shape[1]


def _loader_batches(t, s):
    loader = t.make_epoch_loader(s["data"])
    return loader.batch_size, t._batches_in(loader)


# (flag dest, the flag's argv, the control's argv, probe(trainer, seen), the value the flag must give)
SHARED_CASES = [
    ("dataset", ["--dataset", "mnist", "--data-root", "/d"], ["--data-root", "/d"], lambda t, s: s["load"][0], "mnist"),
    ("data_root", ["--data-root", "/data/here"], [], lambda t, s: s["load"][1], "/data/here"),
    ("download", ["--download"], [], lambda t, s: (s["load"][2], t.config.download), (True, True)),
    ("epochs", ["--epochs", "3"], [], lambda t, s: (s["fit"]["epochs"], t.config.epochs), (None, 3)),  # fit: config's
    ("batch_size", ["--batch-size", "8"], [], _loader_batches, (8, N_IMAGES // 8)),
    ("lr", ["--lr", "0.005"], [], lambda t, s: [g["lr"] for g in t.optimizer.param_groups], [0.005, 0.005]),
    ("lr_schedule", ["--lr-schedule", "cosine"], [], lambda t, s: _cosine_at_half(t), pytest.approx(0.5, abs=1e-15)),
    ("optimizer", ["--optimizer", "sgd"], [], lambda t, s: type(t.optimizer).__name__, "SGDThenAdam"),
    ("decoder_lr", ["--decoder-lr", "0.0002"], [], lambda t, s: (t.decoder_rate(), t.config.lr), (2e-4, 1e-3)),
    ("latent_dim", ["--latent-dim", "6"], [], lambda t, s: _latent(t), (6, 6)),
    ("architecture", ["--architecture", "mlp"], [], lambda t, s: type(t.model.decoder).__name__, "MLPDecoder"),
    ("warm_start", ["--warm-start", "none"], [], lambda t, s: (_start(t), t.config.warm_start), ("prior", "none")),
    ("prior_init_batches", ["--prior-init-batches", "3"], [], lambda t, s: (_start(t, 2), _start(t, 3)),
     ("prior", "encoder")),
    ("max_batches_per_epoch", ["--max-batches-per-epoch", "2"], [], _loader_batches, (64, 2)),
    ("seed", ["--seed", "3"], [], lambda t, s: (t.generator.initial_seed(), t.config.seed), (3, 3)),
    ("device", ["--device", "cpu"], [], lambda t, s: t.config.device, "cpu"),
    ("sample_grid", ["--sample-grid", "0"], [], lambda t, s: t.config.sample_grid, 0),
    ("checkpoint_every_steps", ["--checkpoint-every-steps", "5"], [], lambda t, s: t.config.checkpoint_every_steps, 5),
    ("checkpoint_every_s", ["--checkpoint-every-s", "30"], [], lambda t, s: t.config.checkpoint_every_s, 30.0),
    ("quiet", ["--quiet"], [], lambda t, s: s["fit"]["progress"], False),
    ("resume", ["--resume"], [], lambda t, s: s["fit"]["resume"], True),
]

LPC_CASES = SHARED_CASES + [
    ("method", ["--method", "vae"], [], lambda t, s: type(t).__name__, "VAETrainer"),
    ("langevin_steps", ["--langevin-steps", "7"], [], lambda t, s: t.sampler.steps, 7),
    ("step_size", ["--step-size", "0.03"], [], lambda t, s: t.sampler.step_size, 0.03),
    ("precondition", ["--precondition", "0.6"], [], lambda t, s: t.sampler.precondition, 0.6),
    ("noise_form", ["--noise-form", "literal"], [], lambda t, s: t.sampler.noise, "literal"),
    ("fast", ["--fast", "fused"], [], lambda t, s: t.sampler.fast, "fused"),
    ("config", ["CONFIG(lr=0.004, langevin_steps=9)"], [],
     lambda t, s: (t.optimizer.param_groups[0]["lr"], t.sampler.steps), (0.004, 9)),
]

SMALL = ["--architecture", "mlp", "--latent-dim", "4"]      # an analog array of the conv pair costs more, to no purpose
DT = 0.1 * 0.01                                              # the default dt: step_size 0.1 x tau_z 10 ms

CIRCUIT_CASES = SHARED_CASES + [
    ("likelihood", ["--likelihood", "gaussian"], [], lambda t, s: type(t.model.likelihood).__name__,
     "GaussianLikelihood"),
    ("langevin_steps", ["--langevin-steps", "7"], [], lambda t, s: t.config.resolved_steps, 7),
    ("presentation_steps", ["--presentation-steps", "9"], [], lambda t, s: t.config.resolved_steps, 9),
    ("step_size", ["--step-size", "0.05"], [], lambda t, s: t.circuit.config.dt, pytest.approx(0.05 * 0.01, rel=1e-15)),
    ("dt", ["--dt", "5e-4"], [], lambda t, s: t.circuit.config.dt, 5e-4),
    ("tau_z", ["--tau-z", "0.02"], [], lambda t, s: (t.circuit.config.tau_z, t.circuit.config.dt),
     (0.02, pytest.approx(0.1 * 0.02, rel=1e-15))),
    ("tau_e", ["--tau-e", "0.002"], [], lambda t, s: (t.circuit.config.tau_e, t.circuit.adiabatic), (0.002, False)),
    ("temperature", ["--temperature", "0.5"], [], lambda t, s: t.circuit.temperature, 0.5),
    ("record_every", ["--record-every", "3"], [], lambda t, s: t.config.record_every, 3),
    ("precondition", ["--precondition", "0.5"], [],
     lambda t, s: (t.circuit.config.precondition, t.circuit.preconditioned),
     (0.5, True)),
    ("precondition_tau", ["--precondition", "rms", "--precondition-tau", "0.05"], ["--precondition", "rms"],
     lambda t, s: (t.circuit.preconditioned, t.circuit.config.gain_tau()), (True, 0.05)),
    ("error_form", ["--likelihood", "gaussian", "--error-form", "bogacz"], ["--likelihood", "gaussian"],
     lambda t, s: t.circuit.error_form.name, "bogacz"),
    ("learning_rule", ["--learning-rule", "exact"], [], lambda t, s: t.circuit.config.learning_rule, "exact"),
    ("timescales", ["--timescales", "heterogeneous"], [], lambda t, s: type(t.circuit.timescale_model).__name__,
     "Heterogeneous"),
    ("online", ["--online", "--tau-theta", "2"], [], lambda t, s: t.config.online_lr, pytest.approx(DT / 2, rel=1e-15)),
    ("tau_theta", ["--online", "--tau-theta", "4"], ["--online", "--tau-theta", "2"], lambda t, s: t.config.online_lr,
     pytest.approx(DT / 4, rel=1e-15)),
    ("online_adam", ["--online", "--tau-theta", "2", "--no-online-adam"], ["--online", "--tau-theta", "2"],
     lambda t, s: t.config.online_adam, False),
    ("check_every", ["--check-every", "7"], [], lambda t, s: t.circuit.config.check_every, 7),
    ("config", ["CONFIG(tau_z=0.02, presentation_steps=9)"], [],
     lambda t, s: (t.circuit.config.tau_z, t.config.resolved_steps), (0.02, 9)),
    ("noise", ["--noise", "thermal"], [], lambda t, s: [src.type for src in t.noise.sources], ["thermal"]),
    ("noise_config", ["--noise-config", "NOISE"], [], lambda t, s: [(b.source.type, b.source.params["value_std"])
                                                                    for b in t.circuit.sources], [("thermal", 0.3)]),
    ("learning", ["--noise", "analog", "--learning", "deploy", *SMALL], ["--noise", "analog", *SMALL],
     lambda t, s: (t.mode, t.batch_array(), [b.source.type for b in t.circuit.sources if b.weight_device]),
     ("deploy", None, [])),
    ("deploy_time", ["--noise", "analog", "--deploy-time", "10", *SMALL], ["--noise", "analog", *SMALL],
     lambda t, s: (t.batch_array().clock, t.device_array().clock), (10.0, 10.0)),
    ("seconds_per_batch", ["--noise", "analog", "--learning", "in-memory", "--seconds-per-batch", "5", *SMALL],
     ["--noise", "analog", "--learning", "in-memory", *SMALL], lambda t, s: _clock_after_one_step(t), 5.0),
]


def _clock_after_one_step(t):
    """in-memory learning: the array's clock after one optimiser step (no gradient: the clock alone moves) --
    seconds_per_batch, else the presentation's duration (300 steps x dt = 0.3 s)."""
    t.optimizer.zero_grad(set_to_none=True)
    assert t.array.clock == 0.0
    t._clip_and_step()
    return t.array.clock


def _argv(argv, tmp_path):
    out = []
    for a in argv:
        if a.startswith("CONFIG("):
            fields = dict(kv.split("=") for kv in a[len("CONFIG("):-1].split(", "))
            out += ["--config", _config_file(tmp_path, **{k: json.loads(v) for k, v in fields.items()})]
        elif a == "NOISE":
            out.append(_noise_file(tmp_path))
        else:
            out.append(a)
    return out


def _check_case(run, main, case, tmp_path):
    dest, argv, control, probe, want = case
    t, s = run(main, _argv(argv, tmp_path))
    got = probe(t, s)
    assert got == want, (dest, got, want)
    t0, s0 = run(main, _argv(control, tmp_path))
    assert probe(t0, s0) != want, (dest, "the control gives the flag's value: the case cannot see the flag dropped")


@pytest.mark.parametrize("case", LPC_CASES, ids=[c[0] for c in LPC_CASES])
def test_train_lpc_flag_reaches_the_trainer(case, train_cli, tmp_path):
    """sims/train_lpc.py: each flag's value reaches the trainer the CLI builds (its sampler, optimiser, loader,
    start of the chain, data set) -- and a run without the flag reads something else."""
    _check_case(train_cli, lpc_cli.train_main, case, tmp_path)


@pytest.mark.parametrize("case", CIRCUIT_CASES, ids=[c[0] for c in CIRCUIT_CASES])
def test_train_circuit_flag_reaches_the_trainer(case, train_cli, tmp_path):
    """sims/train_circuit.py: each flag's value reaches the circuit trainer (its circuit: dt, time constants,
    temperature, gain units, error form, noise sources; its presentation, online rate, analog array and clock)."""
    _check_case(train_cli, circuit_cli.train_main, case, tmp_path)


def test_train_circuit_offline_flag_overrides_a_config_file(train_cli, tmp_path):
    """--offline (online = False, the default) matters against a --config file that says online: the online rate
    dt / tau_theta of the file's run becomes None (no weight movement during the presentation)."""
    cfg = _config_file(tmp_path, method="circuit", online=True, tau_theta=2.0)
    t, _ = train_cli(circuit_cli.train_main, ["--config", cfg])
    assert t.config.online_lr == pytest.approx(DT / 2, rel=1e-15)
    t, _ = train_cli(circuit_cli.train_main, ["--config", cfg, "--offline"])
    assert t.config.online is False and t.config.online_lr is None


def test_train_lpc_seed_sets_the_initial_weights(train_cli):
    """--seed: the initial weights are drawn under the seed (build_model), so two runs with the same --seed build
    the same decoder and a third with another seed a different one."""
    a, _ = train_cli(lpc_cli.train_main, ["--seed", "3", *SMALL])
    w = a.model.decoder.net[0].weight.detach().clone()
    b, _ = train_cli(lpc_cli.train_main, ["--seed", "3", *SMALL])
    c, _ = train_cli(lpc_cli.train_main, SMALL)
    assert torch.equal(b.model.decoder.net[0].weight, w) and not torch.equal(c.model.decoder.net[0].weight, w)


# -------------------------------------------------------------------------------------- sims/run_circuit.py ----

def _study(argv, tmp_path):
    args = study_run.build_parser().parse_args(["--out", str(tmp_path / "study"), "--cache-dir", str(tmp_path / "c"),
                                                *_argv(argv, tmp_path)])
    return study_run.config_from_args(args)


def _circuit(cfg):
    return circuit_config_for(cfg, "ideal", "cpu")


def _local_row(cfg):
    """The in-memory-local row's training config: (decoder rate, lr, learning mode, whether a feedback_mismatch source
    is left)."""
    from types import SimpleNamespace

    from circuits.study.methods import local_overrides
    o = local_overrides(SimpleNamespace(cfg=cfg, noise=resolve_noise(cfg)))
    tc = train_config(cfg, "lpc", **{k: v for k, v in o.items() if k == "decoder_lr"})
    return tc.decoder_lr, tc.lr, o["learning"], any(s["type"] == "feedback_mismatch" for s in o["noise"]["sources"])


def _replicas(cfg):
    return [m.name for m in with_seed_replicas(default_methods(cfg), cfg.seeds) if m.replica_of]


N_TRAIN = 9000   # animal-mnist's training split: 140 batches of 64 per epoch

# (flag dest, argv, control argv, probe(StudyConfig), the value the flag must give)
STUDY_CASES = [
    ("noise", ["--noise", "ideal"], [], lambda c: (resolve_noise(c), [m.name for m in default_methods(c)]),
     ("ideal", ["discrete", "circuit", "pc", "vae", "vae-wall"])),
    ("noise_config", ["--noise-config", "NOISE"], [],
     lambda c: [(s.type, s.params["value_std"]) for s in getattr(resolve_noise(c), "sources", [])], [("thermal", 0.3)]),
    ("model", ["--model", "m.pt"], [], lambda c: (c.model, default_methods(c)[0].pretrain), ("m.pt", False)),
    ("dataset", ["--dataset", "mnist"], [], lambda c: train_config(c, "lpc").dataset, "mnist"),
    ("data_root", ["--data-root", "/data/here"], [], lambda c: train_config(c, "lpc").data_root, "/data/here"),
    ("quick", ["--quick"], [], lambda c: (c.budget, train_config(c, "lpc").langevin_steps), ("quick", 5)),
    ("budget", ["--budget", "long"], [], lambda c: c.resolve_train_batches(N_TRAIN), 16 * 140),
    ("train_epochs", ["--train-epochs", "2"], [], lambda c: c.resolve_train_batches(N_TRAIN), 2 * 140),
    ("train_batches", ["--train-batches", "50"], [], lambda c: c.resolve_train_batches(N_TRAIN), 50),
    ("seeds", ["--seeds", "2"], [], lambda c: (c.seeds_of(True), len(_replicas(c))), ([0, 1], 4)),
    ("seed", ["--seed", "3"], [], lambda c: (train_config(c, "lpc").seed, _circuit(c).seed, c.seeds_of(True)[0]),
     (3, 3, 3)),
    ("architecture", ["--architecture", "conv"], [], lambda c: train_config(c, "lpc").architecture, "conv"),
    ("device", ["--device", "cpu"], [], lambda c: train_config(c, "lpc").device, "cpu"),
    ("feature", ["--feature", "classifier"], [], lambda c: (c.feature, choose_feature(c, "cpu")), ("classifier",) * 2),
    ("full_protocol", ["--full-protocol"], [], lambda c: (c.n_samples, c.feature), (50_000, "inception")),
    ("preconditioner", ["--preconditioner", "frozen"], [],
     lambda c: (sampler_for(c).preconditioner, _circuit(c).preconditioner), ("frozen", "frozen")),
    ("learning", ["--learning", "all"], [], lambda c: [m.name for m in default_methods(c) if m.kind == "circuit"],
     ["circuit-ideal", "circuit", "circuit-deploy", "circuit-in-memory", "circuit-in-memory-local"]),
    ("local_lr", ["--local-lr", "3e-5"], [], _local_row, (3e-5, 2e-3, "in-memory-local", False)),
    ("skip", ["--skip", "pc,vae"], [], lambda c: c.skip, ["pc", "vae"]),
    ("n_samples", ["--n-samples", "300"], [], lambda c: samples_per_row(c, {})("pc"), 300),
    ("langevin_steps", ["--langevin-steps", "7"], [], lambda c: train_config(c, "lpc").langevin_steps, 7),
    ("posterior_steps", ["--posterior-steps", "50"], [], lambda c: sampler_for(c).steps, 50),
    ("onset_steps", ["--onset-steps", "20"], [], lambda c: sampler_for(c, c.onset_steps).steps, 20),
    ("curve_points", ["--curve-points", "0"], [], lambda c: c.curve_points, 0),
    ("tau_z", ["--tau-z", "0.02"], [], lambda c: (_circuit(c).tau_z, _circuit(c).dt),
     (0.02, pytest.approx(0.1 * 0.02, rel=1e-15))),
    ("tau_e", ["--tau-e", "0.0001"], [], lambda c: _circuit(c).tau_e, 1e-4),
    ("threads", ["--threads", "2"], [], lambda c: c.threads, 2),
    ("train_workers", ["--train-workers", "1"], [], lambda c: c.train_workers, 1),
]


@pytest.mark.parametrize("case", STUDY_CASES, ids=[c[0] for c in STUDY_CASES])
def test_run_circuit_flag_reaches_the_study(case, tmp_path):
    """sims/run_circuit.py: each flag's value reaches the StudyConfig and what the study builds from it (the rows'
    TrainConfig, the posterior sampler and circuit, the table's rows and seed replicas, the feature network, the
    budget's optimiser steps) -- and a run without the flag reads something else."""
    dest, argv, control, probe, want = case
    got = probe(_study(argv, tmp_path))
    assert got == want, (dest, got, want)
    assert probe(_study(control, tmp_path)) != want, dest


# ------------------------------------------------------------------------------------------ sims/sweep.py ----

@pytest.fixture
def checkpoint(tmp_path):
    """A small discrete-LPC checkpoint (MLP, latent 4) and its decoder's first weight."""
    from neuro_lpc.config import TrainConfig
    from neuro_lpc.train import LPCTrainer, build_model

    cfg = TrainConfig(architecture="mlp", latent_dim=4, seed=5, device="cpu", sample_grid=0)
    model, enc = build_model(cfg, 28, 1)
    path = tmp_path / "model" / "checkpoint.pt"
    path.parent.mkdir()
    LPCTrainer(model, enc, cfg).save_checkpoint(path)
    return str(path), model.decoder.net[0].weight.detach().clone()


def _loaded_weight(cfg, tmp_path):
    return sweep._model(cfg, tmp_path, torch.device("cpu"))[0].decoder.net[0].weight.detach()


SWEEP_CASES = [
    ("sweep", ["--sweep", "tau", "noise"], [], lambda c, p: c.sweeps, ("tau", "noise")),
    ("quick", ["--quick"], [], lambda c, p: (c.values("noise"), c.values("step")),
     ([0.0, 0.1, 0.5], [1e-4, 1e-3, 1e-1])),
    ("train", ["--train"], [], lambda c, p: c.train, True),
    ("device", ["--device", "cpu"], [], lambda c, p: c.device, "cpu"),
    ("seed", ["--seed", "3"], [], lambda c, p: c.seed, 3),
    ("learning", ["--learning", "in-memory"], [],
     lambda c, p: {f["learning"] for f, _, _ in sweep.settings("learning-sources", c)}, {"in-memory"}),
    ("train_batches", ["--train-batches", "5"], [], lambda c, p: c.train_batches, 5),
    ("seeds", ["--seeds", "2"], [], lambda c, p: c.seeds, 2),
    ("dyn_steps", ["--dyn-steps", "500"], [], lambda c, p: c.dyn_steps, 500),
    ("local_lr", ["--local-lr", "3e-5"], [],
     lambda c, p: [(sdev.row_config(k, 0, c).decoder_lr, sdev.row_config(k, 0, c).lr) for k in ("twin", "ideal")],
     [(3e-5, 2e-3)] * 2),
]


@pytest.mark.parametrize("case", SWEEP_CASES, ids=[c[0] for c in SWEEP_CASES])
def test_sweep_flag_reaches_the_sweep_config(case, tmp_path):
    """sims/sweep.py: each flag's value reaches SweepConfig (and, for --learning and --quick, the settings the
    sweeps run) -- and a run without the flag reads something else."""
    dest, argv, control, probe, want = case
    got = probe(sweep.prepare(["--out", str(tmp_path / "a"), *argv]), tmp_path)
    assert got == want, (dest, got, want)
    assert probe(sweep.prepare(["--out", str(tmp_path / "b"), *control]), tmp_path) != want, dest


def test_sweep_model_flag_loads_that_checkpoint(checkpoint, tmp_path):
    """sims/sweep.py --model FILE: the sweeps run on that checkpoint's networks (``_model`` loads it: its decoder's
    weights), not on a model trained for the sweep."""
    path, w = checkpoint
    cfg = sweep.prepare(["--out", str(tmp_path / "s"), "--model", path])
    assert cfg.model == path
    assert torch.equal(_loaded_weight(cfg, tmp_path), w)
    assert sweep.prepare(["--out", str(tmp_path / "t")]).model is None


# ------------------------------------------------------------------------------------------ completeness ----

NOT_RESULTS = {   # flags that do not change a result (what a run computes), with the reason
    "out": "the output folder: where the run writes, not what it computes",
    "cache_dir": "where the feature network and real-set statistics are cached (the same values, computed once)",
}
ELSEWHERE = {     # flags whose effect a test elsewhere checks against a closed form
    ("train_lpc", "likelihood"): "tests/test_options_learning.py::test_config_likelihood_reaches_build_model",
    ("train_circuit", "offline"): "test_train_circuit_offline_flag_overrides_a_config_file (here)",
    ("sweep", "model"): "test_sweep_model_flag_loads_that_checkpoint (here)",
    **{("train_lpc", f): "tests/test_dynamics_discrete.py::test_cli_flags_reach_the_config (the sampler's response "
                         "to each: the closed-form tests of that file)"
       for f in ("dynamics", "skew", "skew_scale", "friction", "mass")},
    **{("train_circuit", f): "tests/test_dynamics_circuit.py::test_cli_dynamics_reaches_the_circuit"
       for f in ("dynamics", "skew", "skew_scale", "friction", "mass", "integrator")},
    **{("run_circuit", f): "tests/test_dynamics_circuit.py::test_study_passes_dynamics_to_the_circuit_rows"
       for f in ("dynamics", "skew", "skew_scale", "friction", "mass", "precondition")},
}
CASES = {"train_lpc": LPC_CASES, "train_circuit": CIRCUIT_CASES, "run_circuit": STUDY_CASES, "sweep": SWEEP_CASES}
PARSERS = {"train_lpc": lpc_cli.build_parser, "train_circuit": circuit_cli.build_parser,
           "run_circuit": study_run.build_parser, "sweep": sweep.build_parser}


@pytest.mark.parametrize("cli", list(PARSERS))
def test_every_flag_is_classified(cli):
    """Every flag of every CLI has a case above, a test elsewhere, or a reason it changes no result: a new flag fails
    here until it is classified (the parsers are read from their argparse actions)."""
    p = PARSERS[cli]()
    dests = {a.dest for a in p._actions if a.option_strings and a.dest != "help"}
    dests |= {a.option_strings[0].lstrip("-").replace("-", "_") for a in p._actions
              if a.option_strings and a.dest == "online" and a.const is False}     # --offline shares dest "online"
    covered = {c[0] for c in CASES[cli]} | set(NOT_RESULTS) | {d for (c, d) in ELSEWHERE if c == cli}
    assert dests - covered == set(), f"unclassified flags of {cli}: {sorted(dests - covered)}"
    assert {c[0] for c in CASES[cli]} <= dests, "a case names a flag the parser does not have"
