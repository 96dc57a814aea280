"""The study's fair baselines: noise-free PC (temperature 0) and the wall-time budget of a training run."""
import json
import time

import pytest
import torch

from neuro_lpc import GaussianLikelihood, GenerativeModel, TrainConfig
from neuro_lpc.config import write_run_metadata
from neuro_lpc.train import LPCTrainer, VAETrainer, build_model


def _linear_model():
    torch.manual_seed(0)
    return GenerativeModel(decoder=torch.nn.Sequential(torch.nn.Linear(3, 7), torch.nn.Tanh()),
                           likelihood=GaussianLikelihood(sigma=0.5), prior_std=1.0)


def test_temperature_is_validated_and_saved(tmp_path):
    for bad in (-0.1, float("nan"), float("inf"), "1", True, None):
        with pytest.raises(ValueError, match="temperature"):
            TrainConfig(temperature=bad).validate()
    cfg = TrainConfig(temperature=0.0).validate()
    assert TrainConfig().temperature == 1.0
    meta = json.loads(write_run_metadata(tmp_path, cfg).read_text())
    assert meta["config"]["temperature"] == 0.0
    assert TrainConfig.from_dict(meta["config"]).temperature == 0.0
    # the circuit's config keeps its own default (None: the noise model's temperature)
    from circuits.learn import CircuitTrainConfig

    assert CircuitTrainConfig().validate().temperature is None


@pytest.mark.parametrize("precondition", [None, 0.25])
def test_pc_trainer_chain_is_deterministic_gradient_ascent(precondition):
    """T = 0: two noise seeds give the same chain, and it is z += gamma G grad log p (G = 1 without preconditioning)."""
    model = _linear_model()
    cfg = TrainConfig(temperature=0.0, langevin_steps=25, step_size=0.05, precondition=precondition, device="cpu")
    trainer = LPCTrainer(model, torch.nn.Identity(), cfg)
    assert trainer.sampler.temperature == 0.0
    x, z0 = torch.randn(4, 7), torch.randn(4, 3)
    a = trainer.sampler.sample(model, x, z0, record_every=1, generator=torch.Generator().manual_seed(1))
    b = trainer.sampler.sample(model, x, z0, record_every=1, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.z_trace, b.z_trace)
    z, m = z0.clone(), torch.zeros_like(z0)
    for t in range(1, cfg.langevin_steps + 1):
        _, s = model.log_joint_and_score(x, z)
        if precondition is None:
            z = z + cfg.step_size * s
        else:       # Algorithm 1's gain, still adapted, with no noise
            m = precondition * m + (1 - precondition) * s * s
            G = 1.0 / ((m / (1 - precondition ** t)).sqrt() + cfg.precondition_delta)
            if getattr(trainer.sampler, "max_gain", None) is not None:
                G = G.clamp(max=trainer.sampler.max_gain)
            z = z + cfg.step_size * G * s
        # float32 rounding differs between the sampler's fused likelihood pass and this recurrence; the
        # preconditioned gain (1 / sqrt(m), large where m is small) amplifies it to ~1e-5 over 25 steps -- far below
        # the O(sqrt(2 gamma)) ~ 0.3 that a noise draw would leave
        torch.testing.assert_close(a.z_trace[t - 1], z, rtol=1e-4, atol=1e-5)
    # and it climbs: noise-free PC is ascent on log p(x, z)
    assert (model.log_joint(x, a.z) > model.log_joint(x, z0)).all()
    # the LPC sampler (T = 1) is not deterministic
    lpc = LPCTrainer(model, torch.nn.Identity(), TrainConfig(langevin_steps=25, step_size=0.05, precondition=precondition))
    c = lpc.sampler.sample(model, x, z0, generator=torch.Generator().manual_seed(1))
    d = lpc.sampler.sample(model, x, z0, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(c.z, d.z)


def test_pc_training_step_runs_at_temperature_zero():
    from neuro_lpc.data import load_dataset

    train, _, info = load_dataset("animal-mnist")
    cfg = TrainConfig(temperature=0.0, langevin_steps=3, max_batches_per_epoch=2, prior_init_batches=1, sample_grid=0,
                      device="cpu")
    m, e = build_model(cfg, info.image_size, info.channels)
    hist = LPCTrainer(m, e, cfg).fit(train, progress=False)
    assert len(hist) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in hist)


def test_max_wall_s_stops_training_after_the_budget(tmp_path):
    from neuro_lpc.data import load_dataset

    with pytest.raises(ValueError, match="max_wall_s"):
        TrainConfig(max_wall_s=0).validate()
    train, _, info = load_dataset("animal-mnist")
    cfg = TrainConfig(method="vae", epochs=50, max_batches_per_epoch=20, max_wall_s=0.5, sample_grid=0, device="cpu")
    m, e = build_model(cfg, info.image_size, info.channels)
    tr = VAETrainer(m, e, cfg, out_dir=tmp_path)
    t0 = time.perf_counter()
    hist = tr.fit(train, progress=False)
    wall = time.perf_counter() - t0
    assert tr.stopped_by_wall and 1 <= tr.global_step < 50 * 20 and len(hist) == tr.global_step
    step = wall / tr.global_step
    assert 0.5 <= wall <= 0.5 + 2 * step + 1.0          # stops after the first step past the budget (+ I/O)
    assert (tmp_path / "checkpoint.pt").is_file()        # checkpointed where it stopped
    # without a budget nothing changes
    cfg2 = TrainConfig(method="vae", epochs=1, max_batches_per_epoch=3, sample_grid=0, device="cpu")
    m2, e2 = build_model(cfg2, info.image_size, info.channels)
    tr2 = VAETrainer(m2, e2, cfg2)
    assert len(tr2.fit(train, progress=False)) == 3 and not tr2.stopped_by_wall


def test_study_cache_reuses_a_finished_wall_time_run(tmp_path):
    """A finished run (train_wall_s.json done) is loaded, not trained on with a fresh budget."""
    from circuits.study.train import fit_cached
    from neuro_lpc.data import load_dataset

    train, _, info = load_dataset("animal-mnist")
    cfg = TrainConfig(method="vae", epochs=50, max_batches_per_epoch=20, max_wall_s=0.3, sample_grid=0, device="cpu")
    m, e = build_model(cfg, info.image_size, info.channels)
    first = fit_cached(VAETrainer(m, e, cfg), train, tmp_path)
    assert not first.cached and first.stopped_by_wall and first.optimiser_steps >= 1
    m2, e2 = build_model(cfg, info.image_size, info.channels)
    again = fit_cached(VAETrainer(m2, e2, cfg), train, tmp_path)
    assert again.cached and again.optimiser_steps == first.optimiser_steps and again.wall_s == first.wall_s
    for p, q in zip(m.parameters(), m2.parameters()):
        assert torch.equal(p, q)
