"""End-to-end checks of the main job (sims/run_circuit.py --quick) and its failure modes.

The fast runs use ``--feature classifier`` (Inception features on CPU are the slow part); the default
(Inception FID + KID) is checked once behind the ``slow`` marker.
"""
import json
import math

import numpy as np
import pytest
import torch

from circuits import study
from circuits.study import quality
from neuro_lpc.errors import DivergenceError
from neuro_lpc.record import Trajectory

ROWS = ("discrete", "circuit", "pc", "vae", "vae-wall")
WALL_TOLERANCE = 0.10     # the same-wall-time VAE: within 10% of discrete LPC's wall time (+ 2 of its own steps)


@pytest.fixture(scope="module")
def ideal_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    out = root / "ideal"
    rc = study.main(["--noise", "ideal", "--quick", "--feature", "classifier", "--out", str(out),
                     "--cache-dir", str(root / "cache")])
    assert rc == 0
    return root, out, json.loads((out / "report.json").read_text())


def test_quick_run_writes_every_output(ideal_run):
    _, out, rep = ideal_run
    assert tuple(rep["methods"]) == ROWS + ("data", "untrained")        # the two reference rows last
    for name in ROWS:
        m = rep["methods"][name]
        s = m["samples"]
        assert m["status"] in study.STATUSES and m["label"]
        assert s["n"] == 200 and math.isfinite(s["fd"]) and s["fd"] >= 0
        assert s["density"] >= 0 and 0 <= s["coverage"] <= 1
        assert m["training"]["wall_s"] > 0
    for name in ("discrete", "circuit"):
        p = rep["methods"][name]["posterior"]
        for key in ("log_joint_mean", "recon_mse", "chain_spread"):
            assert math.isfinite(p[key]), (name, key)
        assert p["recon_mse"] >= 0 and p["preconditioner"] == "adam"
    assert rep["config"]["noise"] == "ideal" and rep["real_set"]["n"] == 200
    md = (out / "report.md").read_text().splitlines()
    assert md[0].startswith("| method | status |") and any(ln.startswith("| circuit · ideal |") for ln in md[:7])
    for fig in rep["figures"]:
        assert (out / fig).stat().st_size > 1000
    traj = Trajectory.from_hdf5(out / "posterior_circuit.h5")
    assert traj.z.shape[1:] == (rep["config"]["posterior_chains"], 40) and torch.isfinite(traj.log_joint).all()
    assert Trajectory.from_hdf5(out / "posterior_discrete.h5").z.shape == traj.z.shape
    assert not (out / "FAILED.txt").exists()


def test_stage_times_are_stored(ideal_run):
    _, out, rep = ideal_run
    st, cpu = rep["stages"], rep["stages_cpu"]
    assert set(st) == set(cpu)
    assert rep["train_workers"] == 2 and "training: 2 workers in parallel" in st     # 2 cores: rows train side by side
    for key in ("posterior", "metrics: real set", "figures", "total"):
        assert st[key] >= 0, key
    assert st["total"] >= sum(v for k, v in st.items() if k != "total") - 1e-6     # the stages are sequential
    for name in ROWS:                                                               # every row's own training wall
        assert rep["stages_training"][name] > 0, name
    # the worker's time: the row's training plus building its networks and loading what it needs
    assert rep["stages_training"]["discrete"] >= rep["methods"]["discrete"]["training"]["wall_s"]
    md = (out / "report.md").read_text()
    assert "## Run time by stage" in md and "| stage | wall s | CPU s |" in md


def test_every_metric_has_n_and_an_uncertainty(ideal_run):
    _, _, rep = ideal_run
    key = rep["metric_key"]
    assert key == "fd" and "not comparable to published FID" in rep["feature_label"]
    for name, m in rep["methods"].items():
        s = m["samples"]
        assert s["n"] >= 1 and s["n_real"] >= 1, name
        for k in (key, "kid", "density", "coverage"):
            assert math.isfinite(s[k]) and math.isfinite(s[f"{k}_se"]) and s[f"{k}_se"] >= 0, (name, k)
        assert isinstance(s["collapsed"], bool) and "diversity" in s
        p = m.get("posterior")
        if p:
            assert p["n"] >= 1
            for k in ("log_joint_mean", "recon_mse", "chain_spread"):
                assert math.isfinite(p[f"{k}_se"]), (name, k)
            ess = p["ess"]
            if p["ess_reliable"]:
                assert math.isfinite(p["ess_per_unit_time"]) and math.isfinite(p["ess_per_unit_time_se"])
            else:           # shown as "unreliable (n records per tau)", with no number that could be quoted
                assert math.isnan(p["ess_per_unit_time"]) and math.isnan(p["autocorr_time_s"])
                assert ess["records_per_tau"] < 50 or not math.isfinite(ess["records_per_tau"]) or ess["reason"]


def test_training_rows_carry_steps_grad_evals_and_wall_time(ideal_run):
    _, _, rep = ideal_run
    c = rep["config"]
    m = rep["methods"]
    for name in ("discrete", "circuit", "pc"):
        tr = m[name]["training"]
        assert tr["optimiser_steps"] == c["train_batches"], name
        assert tr["grad_evals"] == c["train_batches"] * c["langevin_steps"], name
    assert m["vae"]["training"]["optimiser_steps"] == c["train_batches"] == m["vae"]["training"]["grad_evals"]
    vw = m["vae-wall"]["training"]
    assert vw["grad_evals"] == vw["optimiser_steps"] >= 1 and vw["stopped_by_wall"]
    assert "same wall time as discrete LPC" in vw["budget"]
    for name in ("discrete", "pc", "vae", "vae-wall"):          # trained in this run (by a worker), not from a cache
        assert m[name]["training"]["cached"] is False and m[name]["training"]["trained_by"] == "worker", name


def test_same_wall_time_vae_matches_discrete_lpc_wall_time(ideal_run):
    _, _, rep = ideal_run
    lpc = rep["methods"]["discrete"]["training"]["wall_s"]
    vw = rep["methods"]["vae-wall"]["training"]
    step = vw["wall_s"] / vw["optimiser_steps"]
    assert vw["wall_budget_s"] == pytest.approx(lpc)
    assert abs(vw["wall_s"] - lpc) <= WALL_TOLERANCE * lpc + 2 * step, (vw["wall_s"], lpc, step)


def test_ideal_adiabatic_circuit_is_the_discrete_chain(ideal_run):
    """tau_e = 0, preset ideal, dt = gamma tau_z and the same seed: the circuit's chains equal discrete LPC's."""
    _, out, rep = ideal_run
    a = Trajectory.from_hdf5(out / "posterior_discrete.h5")
    b = Trajectory.from_hdf5(out / "posterior_circuit.h5")
    torch.testing.assert_close(a.z, b.z, rtol=1e-4, atol=1e-4)
    assert rep["methods"]["circuit"]["posterior"]["chain_spread"] > 0


def test_noise_free_circuit_and_rows_not_run(ideal_run):
    """--model: the same-wall-time VAE has no wall time to match (not run); --skip rows are not run either."""
    root, out, rep0 = ideal_run
    model = next((out / "models").glob("discrete-*")) / "checkpoint.pt"
    rc = study.main(["--noise", "none", "--quick", "--feature", "classifier", "--model", str(model), "--skip", "pc,vae",
                     "--out", str(root / "none"), "--cache-dir", str(root / "cache")])
    assert rc == 0
    rep = json.loads((root / "none" / "report.json").read_text())
    m = rep["methods"]
    # no noise: identical chains up to float rounding (rows of a batch round differently with 2 threads, and the
    # stiff, preconditioned dynamics amplify that to ~1e-5), against ~0.3 for the noisy discrete chains
    assert m["discrete"]["posterior"]["chain_spread"] > 1e-3
    assert m["circuit"]["posterior"]["chain_spread"] < 1e-3 * m["discrete"]["posterior"]["chain_spread"]
    assert m["pc"]["status"] == m["vae"]["status"] == "not run" and "--skip" in m["pc"]["status_reason"]
    assert m["vae-wall"]["status"] == "not run" and "wall time" in m["vae-wall"]["status_reason"]
    assert math.isnan(m["discrete"]["training"]["wall_s"]) and m["discrete"]["training"]["optimiser_steps"] == \
        rep0["config"]["train_batches"]
    assert "not run" in " ".join(rep["verdict"])


def test_trained_model_beats_an_untrained_decoder(ideal_run):
    from neuro_lpc.metrics import evaluate_samples
    from neuro_lpc.train import build_model, load_trained

    root, out, rep = ideal_run
    model, _, cfg, _ = load_trained(next((out / "models").glob("discrete-*")) / "checkpoint.pt")
    untrained, _ = build_model(cfg, 28, 1)
    g = torch.Generator().manual_seed(0)
    res = {name: evaluate_samples(m.sample(200, generator=g), "animal-mnist", feature="classifier", split="test", n_real=200,
                                  network=_classifier(root)) for name, m in (("trained", model), ("untrained", untrained))}
    # the untrained decoder is the trained one's own initialisation (build_model seeds it from the config), so the
    # gap is what 30 quick batches learned: beyond three bootstrap standard errors of both FDs
    t, u = res["trained"], res["untrained"]
    print({k: (r["fd"], r["fd_se"], r["density"], r["coverage"]) for k, r in res.items()})
    assert t["fd"] + 3 * (t["fd_se"] + u["fd_se"]) < u["fd"]
    # after 30 quick batches coverage is often 0 for both; it must at least not be worse
    assert res["trained"]["coverage"] >= res["untrained"]["coverage"]
    assert res["trained"]["density"] >= res["untrained"]["density"]


def _classifier(root):
    from neuro_lpc.metrics import SmallClassifierFeatures

    return SmallClassifierFeatures.for_dataset("animal-mnist", cache_dir=root / "cache", epochs=1, seed=0)


class _ConstantModel(torch.nn.Module):
    """A 'model' whose samples are one grey image (the failure the status column exists for)."""

    def sample(self, n, generator=None):
        return torch.full((n, 1, 28, 28), -0.2)


class _NaNModel(torch.nn.Module):
    def sample(self, n, generator=None):
        return torch.full((n, 1, 28, 28), float("nan"))


def test_collapsed_and_diverged_rows_are_flagged_and_not_ranked(tmp_path, ideal_run):
    root, out, _ = ideal_run

    def constant(ctx):
        return study.Trained(_ConstantModel(), torch.nn.Identity(), [], {"optimiser_steps": 1, "grad_evals": 1, "wall_s": 0.1})

    def nan(ctx):
        return study.Trained(_NaNModel(), torch.nn.Identity(), [], {"optimiser_steps": 1, "grad_evals": 1, "wall_s": 0.1})

    def diverging(ctx):
        raise DivergenceError("Langevin chain diverged at step 3: non-finite z in chain 0, latent unit 5", step=3)

    methods = study.default_methods(study.StudyConfig(noise="ideal"))[:1] + [
        study.Method("constant", "constant grey", "circuit", constant, pretrain=True),
        study.Method("nan", "NaN samples", "vae", nan),
        study.Method("boom", "diverging circuit", "circuit", diverging, pretrain=True),   # diverges in a worker
    ]
    cfg = study.StudyConfig(noise="ideal", quick=True, feature="classifier", out=str(tmp_path / "bad"),
                            cache_dir=str(root / "cache"),
                            model=str(next((out / "models").glob("discrete-*")) / "checkpoint.pt"))
    rep = study.run_study(cfg, log=lambda s: None, methods=methods)
    assert rep["train_workers"] == 2
    m = rep["methods"]
    assert m["discrete"]["status"] == "learned" and m["discrete"]["ranked"]
    assert m["constant"]["status"] == "collapsed" and not m["constant"]["ranked"]
    assert m["nan"]["status"] == "diverged" and "NaN" in m["nan"]["status_reason"]
    assert m["boom"]["status"] == "diverged" and "step 3" in m["boom"]["status_reason"]
    ranking = next(v for v in rep["verdict"] if v.startswith("Ranked by"))
    assert ranking.startswith("Ranked by KID") and "constant grey" not in ranking and "diverging" not in ranking
    text = " ".join(rep["verdict"])
    assert "The samples of constant grey collapsed" in text and "not ranked" in text
    md = (tmp_path / "bad" / "report.md").read_text()
    assert "| constant grey | collapsed (not ranked) |" in md and "| diverging circuit | diverged (not ranked) |" in md


def test_bad_input_is_refused_before_work(tmp_path, capsys, ideal_run):
    def refused(args, text):
        assert study.main(args) == 2
        err = capsys.readouterr().err
        assert text in err and len(err.strip().splitlines()) == 1, err

    refused(["--noise", "loud", "--quick", "--out", str(tmp_path / "a")], "unknown noise preset 'loud'")
    refused(["--noise", "ideal", "--model", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "b")], "model file not found")
    refused(["--quick", "--feature", "vgg", "--out", str(tmp_path / "d")], "unknown feature network 'vgg'")
    refused(["--quick", "--preconditioner", "rms", "--out", str(tmp_path / "e")], "unknown preconditioner 'rms'")
    refused(["--quick", "--skip", "vae,gan", "--out", str(tmp_path / "f")], "--skip names unknown method(s) 'gan'")
    refused(["--quick", "--skip", "discrete", "--out", str(tmp_path / "g")], "cannot be skipped")
    refused(["--quick", "--n-samples", "0", "--out", str(tmp_path / "h")], "n-samples must be a positive integer")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    refused(["--noise", "ideal", "--quick", "--out", str(blocker / "sub")], "not writable")
    # a model for other images
    from neuro_lpc import TrainConfig
    from neuro_lpc.train import LPCTrainer, build_model

    cfg = TrainConfig(sample_grid=0)
    m, e = build_model(cfg, 32, 3)
    LPCTrainer(m, e, cfg).save_checkpoint(tmp_path / "cifar.pt")
    refused(["--noise", "ideal", "--model", str(tmp_path / "cifar.pt"), "--out", str(tmp_path / "c")], "3x32x32")
    for d in "abcdefgh":
        assert not (tmp_path / d / "report.json").exists() and not (tmp_path / d / "models").exists()


def test_a_crash_leaves_no_report(tmp_path, monkeypatch, ideal_run):
    root, out, _ = ideal_run

    def boom(*a, **k):
        raise RuntimeError("feature network exploded")

    monkeypatch.setattr(quality, "feature_network", boom)
    cfg = study.StudyConfig(noise="ideal", quick=True, feature="classifier", out=str(tmp_path / "crash"),
                            cache_dir=str(root / "cache"),
                            model=str(next((out / "models").glob("discrete-*")) / "checkpoint.pt"), skip=["circuit", "pc", "vae"])
    with pytest.raises(RuntimeError, match="exploded"):
        study.run_study(cfg, log=lambda s: None)
    assert not (tmp_path / "crash" / "report.json").exists()
    assert "feature network exploded" in (tmp_path / "crash" / "FAILED.txt").read_text()


@pytest.mark.slow  # Inception features of ~1,200 images on CPU
def test_default_features_are_inception_fid_and_kid(tmp_path_factory):
    from neuro_lpc.metrics import default_feature

    root = tmp_path_factory.mktemp("inception")
    rc = study.main(["--noise", "ideal", "--quick", "--skip", "circuit,pc,vae-wall", "--out", str(root / "run"),
                     "--cache-dir", str(root / "cache")])
    assert rc == 0
    rep = json.loads((root / "run" / "report.json").read_text())
    assert rep["feature"] == default_feature(torch.device("cpu")) == "inception" and rep["metric_key"] == "fid"
    for name in ("discrete", "vae"):
        s = rep["methods"][name]["samples"]
        for k in ("fid", "kid", "density", "coverage"):
            assert math.isfinite(s[k]) and math.isfinite(s[f"{k}_se"]), (name, k)
    md = (root / "run" / "report.md").read_text().splitlines()
    # the table ranks by KID across seeds, FID pooled (issue 14's report): KID first, then FID
    assert md[0].startswith("| method | status | seeds | KID×10³ ↓ (ranking) | FID ↓ (pooled")


def test_worker_features_equal_a_fresh_evaluation(ideal_run):
    """Rows featurised in their training workers (overlapping other rows' training) and rows featurised in the
    parent give the metrics a fresh evaluation in this process gives: the worker path changes no number."""
    import circuits.study.train as train_mod
    from circuits.study.run import config_from_args
    from neuro_lpc.data import load_dataset

    root, out, rep = ideal_run
    assert set(rep["stages_worker_metrics"]) >= {"discrete", "pc", "vae", "vae-wall"}
    assert rep["stages_worker_jobs"].get("real set features", 0) > 0
    cfg = config_from_args(study.build_parser().parse_args(
        ["--noise", "ideal", "--quick", "--feature", "classifier", "--out", str(out), "--cache-dir", str(root / "cache")]))
    net = quality.feature_network(cfg, torch.device("cpu"), "classifier")
    real = quality.real_set(cfg, net)
    # discrete LPC's cached model, loaded as the run's sequential pass loads it
    train_set, test_set, info = load_dataset(cfg.dataset, cfg.data_root)
    ctx = study.StudyContext(cfg, torch.device("cpu"), "ideal", out, out / "models", train_set, test_set, info,
                             log=lambda *a: None)
    tr = train_mod.train_discrete(ctx)
    assert tr.training["cached"]
    imgs = quality.draw_samples(tr.model.eval(), cfg.n_samples, cfg.seed + 77, torch.device("cpu"))
    fresh = quality.evaluate(imgs, real, net, "classifier", cfg)
    got = rep["methods"]["discrete"]["samples"]
    for key in ("fd", "fd_se", "kid", "kid_se", "density", "coverage"):
        assert got[key] == pytest.approx(fresh[key], rel=1e-6, abs=1e-9), key
    # the parent's two-process feature pass equals the one-process pass
    par = quality.features_in_parallel(net, imgs, 2, root)
    assert torch.allclose(par, net(imgs), rtol=1e-5, atol=1e-6)


def test_diagnostics_section_with_the_onset_experiment(ideal_run):
    """Issue 9's diagnostics in the main job: every sampler row has them, and the onset experiment (chains of one
    image started from the prior) shows the variability quenching a posterior narrower than the prior must give."""
    _, out, rep = ideal_run
    rows = rep["diagnostics"]["rows"]
    assert set(rows) == {"discrete LPC", "circuit · ideal"}
    for label, r in rows.items():
        assert "flux" in r and "onset" in r, label
        # the image pins the latent below the prior's spread: the variance falls (the quick budget's MLP model, 35
        # optimiser steps, still has a wide posterior: ~0.75 of the prior's variance; the conv model of the old
        # quick run ~0.3)
        assert r["onset"]["final_var_ratio"] < 0.9, (label, r["onset"])
    assert "diagnostics_quenching.png" in rep["figures"] and (out / "diagnostics_quenching.png").stat().st_size > 1000
    md = (out / "report.md").read_text()
    assert "## Diagnostics" in md and "onset: final variance ratio" in md
    assert rep["stages"]["diagnostics"] < 0.1 * rep["stages"]["total"]


@pytest.mark.slow  # two quick analog studies, ~1 min each on 2 cores
def test_worker_scheduling_changes_no_metric_analog(tmp_path):
    """Under `analog` (rows hardware-aware and deploy): the study with two workers (rows featurised in their
    training workers, the deploy row's samples drawn by a worker job) gives every row's metrics equal to the study
    with one process doing everything -- except the same-wall-time VAE, whose step count follows the wall clock."""
    reps = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        assert study.main(["--noise", "analog", "--quick", "--feature", "classifier", "--out", str(out),
                           "--cache-dir", str(tmp_path / "cache"), "--train-workers", str(workers)]) == 0
        reps[workers] = json.loads((out / "report.json").read_text())
    assert "samples of circuit-deploy" in reps[2]["stages_worker_jobs"]
    for name, row in reps[1]["methods"].items():
        if name == "vae-wall":
            continue
        a, b = row["samples"], reps[2]["methods"][name]["samples"]
        for key in ("fd", "fd_se", "kid", "density", "coverage"):
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), (name, key)


@pytest.mark.parametrize("onset_steps", [0, 7])
def test_onset_steps_sets_the_onset_experiment(tmp_path, onset_steps):
    """--onset-steps: 0 runs no onset experiment; n runs the spread chains of one image from prior draws for n steps,
    every step recorded, in the discrete sampler and the circuit alike."""
    from circuits.study import posterior as post_mod
    from circuits.study.config import StudyConfig
    from neuro_lpc.config import TrainConfig
    from neuro_lpc.train import build_model

    cfg = StudyConfig(posterior_chains=3, posterior_steps=24, record_every=2, spread_chains=4, onset_steps=onset_steps)
    model, encoder = build_model(TrainConfig(), 28, 1)
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    inp = post_mod.make_inputs(cfg, model, encoder, x, torch.device("cpu"), 5)
    assert inp.zp0.shape == (4, 40) and not torch.equal(inp.zp0[0], inp.zp0[1])      # prior draws, one per chain
    ctx = study.StudyContext(cfg, torch.device("cpu"), "ideal", tmp_path, tmp_path / "models", None, None, None,
                             log=lambda *a: None)
    ctx.preconditioner = {"name": "adam"}
    for run in (post_mod.discrete_posterior(ctx, inp), post_mod.circuit_posterior(ctx, inp, noise="ideal")):
        if onset_steps == 0:
            assert run.onset is None
        else:
            t, z = run.onset
            assert z.shape == (onset_steps + 1, 4, 40) and len(t) == onset_steps + 1
            assert np.allclose(z[0], inp.zp0.numpy()) and t[0] == 0                    # starts at the prior draws
            assert np.allclose(np.diff(t), cfg.step_size * cfg.tau_z)                  # one record per step


def test_reference_rows_frame_the_trained_rows(ideal_run):
    """Issue 14: data (held-out real images) < trained (discrete LPC) < untrained (its seeded initial model) on the
    run's distance at the same n, each gap beyond 3 combined standard errors; the references are not ranked."""
    _, _, rep = ideal_run
    m, key = rep["methods"], rep["metric_key"]
    data, lpc, init = (m[n]["samples"] for n in ("data", "discrete", "untrained"))
    assert data["n"] == lpc["n"] == init["n"]
    for lo, hi in ((data, lpc), (lpc, init)):
        assert hi[key] - lo[key] > 3 * math.hypot(lo[f"{key}_se"], hi[f"{key}_se"]), (lo[key], hi[key])
    assert m["data"]["status"] == m["untrained"]["status"] == "reference"
    assert not m["data"]["ranked"] and not m["untrained"]["ranked"] and m["data"]["kind"] == "reference"


def test_learning_curves_and_the_quick_budget_warning(ideal_run):
    """Every training row carries its learning curve (points at the log-spaced steps, the last at the end of the
    budget) and a convergence flag; learning_curves.png is written; the quick budget's report says first that its
    models are not trained enough to rank."""
    from circuits.study.curves import curve_steps

    _, out, rep = ideal_run
    c = rep["config"]
    for name in ("discrete", "circuit", "pc", "vae"):
        tr = rep["methods"][name]["training"]
        assert [p["step"] for p in tr["curve"]] == curve_steps(c["train_batches"], c["curve_points"]), name
        assert all(math.isfinite(p["kid"]) and p["kid_se"] > 0 and p["n"] == c["curve_samples"] for p in tr["curve"])
        assert tr["convergence"]["status"] in ("converged", "still improving", "got worse")
    vw = rep["methods"]["vae-wall"]["training"]["curve"]
    assert len(vw) >= 1 and vw[-1]["train_wall_s"] >= rep["methods"]["vae-wall"]["training"]["wall_budget_s"]
    assert (out / "learning_curves.png").stat().st_size > 1000 and "learning_curves.png" in rep["figures"]
    assert rep["verdict"][0].startswith("Budget quick: these models are not trained enough to rank")
    assert rep["budget"] == "quick" and rep["methods"]["discrete"]["samples"]["seeds"] == [0]
