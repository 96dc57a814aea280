"""One run of a circuit (circuits.run.CircuitRun, circuits.run_records): snapshot / restore and the
records deferred to the next step's forward."""
import pytest
import torch

from circuits import Circuit, CircuitConfig
from problems import F64, counted_model, linear_model


pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------ snapshots and records ----

@pytest.mark.parametrize("noise, tau_e", [("ideal", 2e-3), ("ideal", 0.0), ("analog", 2e-3)])
def test_snapshot_and_restore_replay_exactly(noise, tau_e):
    """What the divergence replay relies on: from a snapshot (state + generator) the run repeats bit for bit."""
    from circuits.run import CircuitRun
    model, x1 = linear_model(3, 7, 0.5, seed=21)
    c = Circuit(model, CircuitConfig(dt=2e-4, tau_e=tau_e, noise=noise))
    x = x1.expand(4, -1)
    run = CircuitRun(c, x, torch.zeros(4, 3, dtype=F64), torch.Generator().manual_seed(0))
    for _ in range(5):
        run.step()
    snap = run.snapshot()
    for _ in range(7):
        run.step()
    z1, e1 = run.z.clone(), run.eps.clone()
    run.restore(snap)
    assert run.k == 5
    for _ in range(7):
        run.step()
    assert torch.equal(run.z, z1) and torch.equal(run.eps, e1)


@pytest.mark.parametrize("tau_e", [2e-3, 0.0])
@pytest.mark.parametrize("record_eps", [False, True])
def test_records_take_the_log_joint_from_the_next_steps_forward(tmp_path, tau_e, record_eps):
    """No decoder forward per record: the log joint (and, adiabatic, the error) at a recorded state comes
    from the next step's forward, the last record from one forward at the end -- as LangevinSampler. A
    run is 1 forward (initial error units) + 1 per step + 1; the records are those of the true model."""
    model, dec = counted_model()
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    z0 = torch.randn(3, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    cfg = CircuitConfig(dt=1e-4, tau_e=tau_e, noise="thermal", record_buffer=3)
    traj = Circuit(model, cfg).simulate(x, z0, steps=20, record_every=2, record_eps=record_eps)
    assert dec.calls == 1 + 20 + 1
    with torch.no_grad():
        mu = model.decoder(traj.z.reshape(-1, 3))
        lj = model.log_joint(x.repeat(10, 1), traj.z.reshape(-1, 3)).reshape(10, 3)
        err = model.error(x.repeat(10, 1), mu).reshape(10, 3, 6)
    torch.testing.assert_close(traj.log_joint, lj, rtol=1e-12, atol=1e-10)
    if tau_e == 0:
        torch.testing.assert_close(traj.extras["error_norm"], torch.linalg.vector_norm(err, dim=2), rtol=1e-12,
                                   atol=1e-10)
        if record_eps:
            torch.testing.assert_close(traj.extras["eps"], err, rtol=1e-12, atol=1e-10)
    # streamed in blocks of 3 records (the last record of a block is measured before its write): the same
    disk = Circuit(model, cfg).simulate(x, z0, steps=20, record_every=2, record_eps=record_eps,
                                        record_path=tmp_path / "r.h5")
    for key in ("z", "log_joint"):
        torch.testing.assert_close(getattr(disk, key), getattr(traj, key), rtol=0, atol=0)
    for key, v in traj.extras.items():
        torch.testing.assert_close(disk.extras[key], v, rtol=0, atol=0)
    # steps not a multiple of record_every: the last record is taken from the last step's forward
    dec.calls = 0
    Circuit(model, cfg).simulate(x, z0, steps=21, record_every=2)
    assert dec.calls == 1 + 21 + (1 if tau_e == 0 else 0)  # adiabatic: the final error units
