"""``export_brian2`` and ``sims/compare_brian2.py``: the standalone script runs, reproduces its own statistics,
and bad input is refused in one line.

The exported script (numpy target, same seed) builds the same objects in the same order as ``simulate_brian2``
and draws the same random numbers, so its recorded mean / covariance of z equal the in-process run to float
rounding -- and both equal the Lyapunov solution within Monte Carlo error (5 s.e., as in
tests/test_brian2_simulator.py).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("brian2")

from circuits import CircuitConfig  # noqa: E402
from circuits.brian import BrianUnsupported, export_brian2, simulate_brian2  # noqa: E402
from circuits.brian.compare import demo_model, linear_reference, main  # noqa: E402
from circuits.brian.network import summary_statistics  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")


def _problem(batch=32, decoder="linear"):
    model = demo_model(d=2, n=4, decoder=decoder, hidden=6, seed=1)
    x = model.sample(1, generator=torch.Generator().manual_seed(2), mean=False).repeat(batch, 1)
    return model, x, CircuitConfig(dt=1e-4, tau_z=1e-2, tau_e=2e-3, noise="ideal", seed=3)


def _run_script(path, *args, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, str(path), *args], cwd=path.parent, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_exported_script_runs_and_reproduces_its_statistics(tmp_path):
    model, x, cfg = _problem()
    steps, every = 3000, 10
    path = export_brian2(model, x, cfg, tmp_path / "lpc.py", steps=steps, record_every=every)
    source = path.read_text()
    assert "import circuits" not in source and "from circuits" not in source and "neuro_lpc" not in source
    assert path.with_suffix(".npz").exists()
    proc = _run_script(path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = json.loads((tmp_path / "lpc_stats.json").read_text())
    assert stats["steps"] == steps and stats["target"] == "numpy" and stats["seed"] == cfg.seed
    traj = np.load(tmp_path / "lpc_trajectory.npz")
    # the same network and random stream in-process
    br = simulate_brian2(model, x, cfg, steps=steps, record_every=every)
    np.testing.assert_allclose(traj["z"], br.z.numpy(), rtol=0, atol=1e-12)
    ours = summary_statistics(br.z.numpy(), 0.5)
    np.testing.assert_allclose(stats["mean"], ours["mean"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(stats["cov"], ours["cov"], rtol=0, atol=1e-12)
    # and the law it samples is the circuit's (Lyapunov; N_eff from the exact autocorrelation time)
    ref = linear_reference(model, x, cfg)
    n_eff = stats["n_samples"] / (ref["tau_int"].max() / (every * cfg.dt))
    sd = np.sqrt(np.diag(ref["cov"]))
    assert np.all(np.abs(np.array(stats["mean"]) - ref["mean"]) < 5 * sd / np.sqrt(n_eff))
    se_cov = np.sqrt((np.outer(sd**2, sd**2) + ref["cov"] ** 2) / n_eff)
    assert np.all(np.abs(np.array(stats["cov"]) - ref["cov"]) < 5 * se_cov)


def test_exported_script_refuses_bad_flags_in_one_line(tmp_path):
    model, x, cfg = _problem(batch=2, decoder="mlp")
    path = export_brian2(model, x, cfg, tmp_path / "mlp.py", steps=100, record_every=10)
    proc = _run_script(path, "--steps", "0")
    assert proc.returncode == 2 and "record-every" in proc.stderr


@pytest.mark.slow
def test_exported_script_on_cpp_standalone(tmp_path):
    """Brian2 generates and compiles a C++ project (about a minute); its statistics equal the numpy run's and
    match the Lyapunov law."""
    model, x, cfg = _problem()
    path = export_brian2(model, x, cfg, tmp_path / "lpc.py", steps=3000, record_every=10)
    proc = _run_script(path, "--device", "cpp_standalone", timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = json.loads((tmp_path / "lpc_stats.json").read_text())
    assert stats["device"] == "cpp_standalone"
    # Brian2's C++ random numbers are numpy's (randomkit, same seeding): the numpy run is reproduced
    assert _run_script(path, "--out", str(tmp_path / "numpy.json")).returncode == 0
    numpy_stats = json.loads((tmp_path / "numpy.json").read_text())
    np.testing.assert_allclose(stats["cov"], numpy_stats["cov"], rtol=0, atol=1e-9)
    ref = linear_reference(model, x, cfg)
    n_eff = stats["n_samples"] / (ref["tau_int"].max() / 1e-3)
    sd = np.sqrt(np.diag(ref["cov"]))
    assert np.all(np.abs(np.array(stats["mean"]) - ref["mean"]) < 5 * sd / np.sqrt(n_eff))
    assert np.all(np.abs(np.diag(stats["cov"]) - sd**2) < 5 * sd**2 * np.sqrt(2 / n_eff))


def test_export_refuses_what_brian2_cannot_express_before_writing(tmp_path):
    model, x, _ = _problem(batch=2)
    with pytest.raises(BrianUnsupported, match="noise source 'shot'"):
        export_brian2(model, x, CircuitConfig(noise={"sources": [{"type": "shot"}]}), tmp_path / "a.py")
    with pytest.raises(ValueError, match="must end in .py"):
        export_brian2(model, x, CircuitConfig(), tmp_path / "a.txt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv,match", [
    (["--steps", "0"], "--steps must be >= 1"),
    (["--target", "gpu"], "invalid choice"),
    (["--batch", "two"], "invalid int value"),
    (["--steps", "100", "--record-every", "10"], "at least 20 records"),
    (["--noise", "analog", "--steps", "400"], "Brian2 cannot express noise source"),
    (["--dt", "1.0"], "unstable"),
])
def test_compare_cli_bad_input_is_one_line(argv, match, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and match in err and err.count("\n") == 1, err


def test_compare_cli_export(tmp_path, capsys):
    assert main(["--export", str(tmp_path / "out"), "--batch", "4", "--steps", "400"]) == 0
    assert (tmp_path / "out" / "circuit.py").exists() and (tmp_path / "out" / "circuit.npz").exists()
    assert "cpp_standalone" in capsys.readouterr().out
