"""The device sweeps of sims/sweep.py: deployment over time since programming, attribution for learning."""
import pytest
import torch

from circuits.sweep import SweepConfig, _deploy_one, main, settings
from test_learning_modes import D, tiny_model

pytestmark = pytest.mark.usefixtures("single_thread")


def _deploy(subset, t):
    model, enc = tiny_model()
    x = torch.zeros(4, 1, 28, 28)
    z0 = torch.zeros(4, D)
    cfg = SweepConfig(steps=20, record_every=2, step_size=0.05, tau_z=0.01)
    import time
    row = _deploy_one((subset, t), model, x, z0, cfg, torch.device("cpu"), torch.Generator().manual_seed(1),
                      time.perf_counter())
    return row


def test_programming_alone_does_not_age_and_drift_degrades_with_time():
    p1, p2 = _deploy("weight_programming", 1.0), _deploy("weight_programming", 2.6e6)
    assert p1["log_joint_mean"] == pytest.approx(p2["log_joint_mean"], rel=1e-6)      # one draw, no clock
    d1, d2 = _deploy("drift", 1.0), _deploy("drift", 2.6e6)
    assert d2["log_joint_mean"] != d1["log_joint_mean"]
    z = torch.randn(8, D, generator=torch.Generator().manual_seed(0))
    clean, _ = tiny_model()
    with torch.no_grad():
        ref = clean.decoder(z)
        e1, e2 = (d1["_sampler"].decoder(z) - ref).norm(), (d2["_sampler"].decoder(z) - ref).norm()
    assert float(e2) > 3 * float(e1)       # the analog preset's (compensated) drift: the error grows with time


def test_sweep_settings_cover_every_device_subset_and_time():
    rows = list(settings("deploy-time", SweepConfig(quick=True)))
    assert {r[0]["devices"] for r in rows} == {"weight_programming", "drift", "weight_read", "weights", "analog"}
    assert {r[0]["time"] for r in rows} == {"1 s", "1 month"}
    learn = list(settings("learning-sources", SweepConfig(learning="in-memory")))
    assert learn[0][0]["source"] == "none (ideal)" and learn[-1][0]["source"] == "all (analog preset)"
    assert all(r[0]["learning"] == "in-memory" for r in learn)


def test_sweep_cli_refuses_a_bad_learning_mode(capsys, tmp_path):
    assert main(["--sweep", "learning-sources", "--learning", "offchip", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "unknown learning mode" in err and len(err.splitlines()) == 1
