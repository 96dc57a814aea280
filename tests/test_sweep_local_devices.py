"""``sims/sweep.py --sweep devices`` (circuits.sweep_devices; issue 17 section 3): local in-memory learning on
device presets.

What is checked: each row trains what its name says (the twin: plain SGD on the decoder at ``--local-lr``; the local
rows: in-memory-local on their devices -- aihwkit's figures, the PCM row's 1/f and noisy transposed read, the
Tiki-Taka row's transfer); one local optimiser step on the ideal device, from the same start, moves the decoder as
the twin's SGD step does (to the pulse trains' noise), on the main job's own config; the verdict's arithmetic; and
the orchestration (every row per seed, the PCM row's deploy-time curve only, the files written, the device sweep
not in the default set and not needing the sweeps' shared model).
"""
import csv
import math
from types import SimpleNamespace

import pytest
import torch

import circuits.sweep as sweep
import circuits.sweep_devices as sd
from circuits.learn import CircuitTrainer
from circuits.local_update import Transfer
from neuro_lpc.train import LPCTrainer, SGDThenAdam, build_model

CFG = SimpleNamespace(quick=True, device="cpu", local_lr=3e-5, seed=0, seeds=1, n_samples=50)


def _trainer(key):
    tc = sd.row_config(key, 0, CFG)
    torch.manual_seed(0)
    m, e = build_model(tc, 28, 1)
    return (LPCTrainer if key in ("adam", "twin") else CircuitTrainer)(m, e, tc)


def test_rows_train_with_their_devices_and_rates():
    adam = _trainer("adam")
    assert isinstance(adam.optimizer, torch.optim.Adam) and adam.decoder_rate() == adam.config.lr == 2e-3
    twin = _trainer("twin")
    assert isinstance(twin.optimizer, SGDThenAdam) and twin.decoder_rate() == 3e-5
    assert twin.optimizer.adam.param_groups[0]["lr"] == twin.config.lr != 3e-5       # the encoder keeps Adam's rate
    for key in ("ideal", "pcm", "reram", "reram-tt"):
        tr = _trainer(key)
        assert tr.mode == "in-memory-local" and tr.decoder_rate() == 3e-5, key
        dev = tr.array.pulsed
        if key == "ideal":
            assert (dev.dw_min, dev.dw_min_dtod, dev.dw_min_std, dev.up_down) == (0.001, 0.0, 0.0, 0.0)
        if key.startswith("reram"):
            assert dev.kind == "soft_bounds" and dev.up_down == pytest.approx(0.259359)
        assert (tr.local[3] is not None) == (key == "reram-tt"), key
        assert isinstance(tr.local[3], Transfer) or key != "reram-tt"
        types = {s.type: s.params for s in tr.noise.sources}
        if key == "pcm":
            assert types["drift"]["one_over_f"] is True and types["weight_read"]["reads"] == "both"
            assert "feedback_mismatch" not in types and "weight_programming" in types
        else:
            assert set(types) == {"pulsed"}, key


def test_one_ideal_local_step_is_an_unbiased_sgd_step_on_the_main_jobs_config():
    """The ideal row's config (the main job's model and chain, drawn pulse trains of BL 31, dw_min 0.001), one
    optimiser step from the same weights, batch and chain (the circuit's SGD twin: same trainer, learning
    "hardware-aware" on the ideal circuit, optimizer "sgd"): the pulse trains give b = a + n with a = -lr g the SGD
    step and n zero-mean pulse noise, so the projection (a . b) / |a|^2 is 1 (to the noise's projection, ~1e-2 over
    ~1e6 weights) while b differs from a (cos < 1: at lr 2e-4 most weights get 0 or 1 pulses)."""
    import dataclasses

    from neuro_lpc.data import load_dataset

    cfg = SimpleNamespace(**{**vars(CFG), "local_lr": 2e-4})
    train, _, _ = load_dataset("animal-mnist")
    x = train.images[:64].float()
    changes = {}
    for key in ("twin", "ideal"):
        tc = dataclasses.replace(sd.row_config("ideal", 0, cfg), prior_init_batches=0)
        if key == "twin":
            tc = dataclasses.replace(tc, learning="hardware-aware", noise="ideal", optimizer="sgd", pulse_update=None)
        torch.manual_seed(0)
        m, e = build_model(tc, 28, 1)
        tr = CircuitTrainer(m, e, tc)
        w0 = {n: p.detach().clone() for n, p in m.decoder.named_parameters() if p.dim() >= 2}
        tr.train_step(x)
        changes[key] = torch.cat([(p.detach() - w0[n]).flatten() for n, p in m.decoder.named_parameters()
                                  if p.dim() >= 2]).double()
    a, b = changes["twin"], changes["ideal"]
    assert float(a @ b / (a @ a)) == pytest.approx(1.0, abs=0.03)
    assert 0.6 < float(a @ b / (a.norm() * b.norm())) < 0.98


def test_verdict_is_the_fd_ratio_per_seed():
    rows = [dict(row="twin", seed=0, fd=100.0), dict(row="ideal", seed=0, fd=115.0),
            dict(row="twin", seed=1, fd=50.0), dict(row="ideal", seed=1, fd=65.0),
            dict(row="pcm", seed=1, fd=75.0), dict(row="pcm", seed=1, fd=200.0, t_label="1 s")]
    v = sd.add_verdict(rows)
    assert v["ideal_over_twin"] == pytest.approx([1.15, 1.3]) and v["within_20pct"] is False
    assert rows[4]["fd_over_twin"] == pytest.approx(1.5) and rows[5]["fd_over_twin"] == pytest.approx(4.0)
    rows[3]["fd"] = 59.0
    assert sd.add_verdict(rows)["within_20pct"] is True


def test_the_sweep_runs_every_row_per_seed_and_the_pcm_deploy_curve(tmp_path, monkeypatch):
    calls, scored = [], []

    class FakeTrainer:
        def __init__(self, key):
            self.key = key

    monkeypatch.setattr(sd, "train_row", lambda key, seed, cfg, out, device: (
        calls.append((key, seed)) or dict(row=key, label=key, seed=seed, diverged=False), FakeTrainer(key)))
    monkeypatch.setattr(sd, "sampler_at", lambda tr, t, seed, device: (tr.key, t))
    monkeypatch.setattr(sd, "score", lambda model, cfg, out, device, seed: (
        scored.append(model) or {"fd": 10.0 + (model[1] or 0) * 1e-6, "pixel_std": 0.1,
                                 "_samples": torch.zeros(2, 1, 4, 4)}))
    cfg = sweep.prepare(["--out", str(tmp_path / "o"), "--sweep", "devices", "--seeds", "2", "--quick"])
    monkeypatch.setattr(sweep, "_model", lambda *a: pytest.fail("the device sweep needs no shared model"))
    files = sweep.run_sweeps(cfg, log=lambda s: None)
    assert calls == [(k, s) for s in (0, 1) for k in sd.DEVICE_ROWS]
    curve = [m for m in scored if m[1] is not None]
    assert curve == [("pcm", 1.0), ("pcm", 2592000.0)] * 2            # --quick: the first and last time points
    rows = list(csv.DictReader(open(files["devices"])))
    assert len(rows) == 2 * len(sd.DEVICE_ROWS) + 4
    assert all(math.isclose(float(r["fd_over_twin"]), float(r["fd"]) / 10.0) for r in rows)
    for name in ("sweep_devices.png", "sweep_devices.md", "sweep_devices_samples.png"):
        assert (tmp_path / "o" / name).stat().st_size > 0
    assert "within 20 % of the twin's FD on every seed: yes" in (tmp_path / "o" / "sweep_devices.md").read_text()
    assert "devices" not in sweep.SweepConfig().sweeps
