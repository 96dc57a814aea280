"""End-to-end checks of the main job (sims/run_circuit.py --quick) and its failure modes."""
import json
import math

import pytest
import torch

from circuits import study
from neuro_lpc.record import Trajectory


@pytest.fixture(scope="module")
def ideal_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    out = root / "ideal"
    rc = study.main(["--noise", "ideal", "--quick", "--out", str(out), "--cache-dir", str(root / "cache")])
    assert rc == 0
    return root, out, json.loads((out / "report.json").read_text())


def test_quick_run_writes_every_output(ideal_run):
    _, out, rep = ideal_run
    for name in ("discrete", "circuit", "vae"):
        m = rep["methods"][name]
        s = m["samples"]
        assert s["n"] == 200 and math.isfinite(s["fd"]) and s["fd"] >= 0
        assert s["density"] >= 0 and 0 <= s["coverage"] <= 1
        assert m["wall_s"] > 0
    for name in ("discrete", "circuit"):
        p = rep["methods"][name]["posterior"]
        for key in ("log_joint_mean", "recon_mse", "ess_per_unit_time", "chain_spread"):
            assert math.isfinite(p[key]), (name, key)
        assert p["recon_mse"] >= 0 and p["ess_per_unit_time"] > 0
    assert rep["config"]["noise"] == "ideal"
    md = (out / "report.md").read_text().splitlines()
    assert md[0].startswith("| method |") and any(ln.startswith("| circuit |") for ln in md[:5])
    for fig in rep["figures"]:
        assert (out / fig).stat().st_size > 1000
    traj = Trajectory.from_hdf5(out / "posterior_circuit.h5")
    assert traj.z.shape[1:] == (rep["config"]["posterior_chains"], 40) and torch.isfinite(traj.log_joint).all()
    assert Trajectory.from_hdf5(out / "posterior_discrete.h5").z.shape == traj.z.shape
    assert not (out / "FAILED.txt").exists()


def test_ideal_adiabatic_circuit_is_the_discrete_chain(ideal_run):
    """tau_e = 0, preset ideal, dt = gamma tau_z and the same seed: the circuit's chains equal discrete LPC's."""
    _, out, rep = ideal_run
    a = Trajectory.from_hdf5(out / "posterior_discrete.h5")
    b = Trajectory.from_hdf5(out / "posterior_circuit.h5")
    torch.testing.assert_close(a.z, b.z, rtol=1e-4, atol=1e-4)
    assert rep["methods"]["circuit"]["posterior"]["chain_spread"] > 0


def test_noise_free_circuit_has_no_spread_from_a_shared_start(ideal_run):
    root, out, _ = ideal_run
    model = next((out / "models").glob("discrete-*")) / "checkpoint.pt"
    rc = study.main(["--noise", "none", "--quick", "--model", str(model), "--out", str(root / "none"),
                     "--cache-dir", str(root / "cache")])
    assert rc == 0
    rep = json.loads((root / "none" / "report.json").read_text())
    assert rep["methods"]["circuit"]["posterior"]["chain_spread"] < 1e-6
    assert rep["methods"]["discrete"]["posterior"]["chain_spread"] > 1e-3


def test_trained_model_beats_an_untrained_decoder(ideal_run):
    from neuro_lpc.metrics import evaluate_samples
    from neuro_lpc.train import build_model, load_trained

    root, out, rep = ideal_run
    model, _, cfg, _ = load_trained(next((out / "models").glob("discrete-*")) / "checkpoint.pt")
    untrained, _ = build_model(cfg, 28, 1)
    g = torch.Generator().manual_seed(0)
    res = {name: evaluate_samples(m.sample(200, generator=g), "animal-mnist", feature="classifier", split="test", n_real=200,
                                  network=_classifier(root)) for name, m in (("trained", model), ("untrained", untrained))}
    assert res["trained"]["fd"] < 0.8 * res["untrained"]["fd"]
    # after 30 quick batches coverage is often 0 for both; it must at least not be worse
    assert res["trained"]["coverage"] >= res["untrained"]["coverage"]
    assert res["trained"]["density"] >= res["untrained"]["density"]


def _classifier(root):
    from neuro_lpc.metrics import SmallClassifierFeatures

    return SmallClassifierFeatures.for_dataset("animal-mnist", cache_dir=root / "cache", epochs=1, seed=0)


def test_bad_input_is_refused_before_work(tmp_path, capsys, ideal_run):
    assert study.main(["--noise", "loud", "--quick", "--out", str(tmp_path / "a")]) == 2
    assert "unknown noise preset 'loud'" in capsys.readouterr().err
    assert study.main(["--noise", "ideal", "--model", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "b")]) == 2
    assert "model file not found" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert study.main(["--noise", "ideal", "--quick", "--out", str(blocker / "sub")]) == 2
    assert "not writable" in capsys.readouterr().err
    # a model for other images
    from neuro_lpc import TrainConfig
    from neuro_lpc.train import LPCTrainer, build_model

    cfg = TrainConfig(sample_grid=0)
    m, e = build_model(cfg, 32, 3)
    LPCTrainer(m, e, cfg).save_checkpoint(tmp_path / "cifar.pt")
    assert study.main(["--noise", "ideal", "--model", str(tmp_path / "cifar.pt"), "--out", str(tmp_path / "c")]) == 2
    assert "3x32x32" in capsys.readouterr().err
    for d in ("a", "b", "c"):
        assert not (tmp_path / d / "report.json").exists()


def test_a_crash_leaves_no_report(tmp_path, monkeypatch, ideal_run):
    root, out, _ = ideal_run

    def boom(*a, **k):
        raise RuntimeError("feature network exploded")

    monkeypatch.setattr(study, "sample_quality", boom)
    cfg = study.StudyConfig(noise="ideal", quick=True, out=str(tmp_path / "crash"), cache_dir=str(root / "cache"))
    with pytest.raises(RuntimeError, match="exploded"):
        study.run_study(cfg, log=lambda s: None)
    assert not (tmp_path / "crash" / "report.json").exists()
    assert "feature network exploded" in (tmp_path / "crash" / "FAILED.txt").read_text()
