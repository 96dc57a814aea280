"""Issue 14: learning curves and their converged flag, seed statistics, reference rows, the read-out path of the
circuit's samples, the ideal-circuit control, progress display and budgets -- each against a closed form, a limit or
an independent computation."""
import json
import math
import time

import numpy as np
import pytest
import torch

from circuits.study import curves as curves_mod
from circuits.study import quality
from circuits.study.config import BUDGETS, StudyConfig, StudyError, check_fields
from circuits.study.curves import CONVERGED, IMPROVING, SHORT, WORSE, CurveRecorder, curve_status, curve_steps
from circuits.study.progress import ProgressBoard, eta_s, file_sink


# ------------------------------------------------------------------------------------------ curves
def test_curve_steps_are_log_spaced_and_end_at_the_budget():
    assert curve_steps(700, 5) == [44, 88, 175, 350, 700]
    assert curve_steps(3, 5) == [1, 2, 3]               # no repeats when the budget is short
    assert curve_steps(700, 0) == [] and curve_steps(0, 3) == []
    s = curve_steps(1000, 4)
    assert s[-1] == 1000 and all(b / a == pytest.approx(2, rel=0.02) for a, b in zip(s, s[1:]))


def _curve(f, steps, se):
    return [{"step": s, "kid": f(s), "kid_se": se} for s in steps]


@pytest.mark.parametrize("tau, expected", [(20.0, CONVERGED), (2000.0, IMPROVING)])
def test_curve_status_on_exponential_learning_curves(tau, expected):
    """KID(s) = a + b exp(-s / tau) at steps ..., 350, 700 with se 0.01: the last doubling changes it by
    b (exp(-700/tau) - exp(-350/tau)): ~0 for tau = 20 (converged), -0.16 b... for tau = 2000 (> 2 se: improving)."""
    a, b, se = 0.1, 1.0, 0.01
    pts = _curve(lambda s: a + b * math.exp(-s / tau), curve_steps(700, 5), se)
    st = curve_status(pts)
    assert st["status"] == expected
    assert st["change"] == pytest.approx(b * (math.exp(-700 / tau) - math.exp(-350 / tau)))
    assert st["change_se"] == pytest.approx(math.hypot(se, se))
    assert (st["from_step"], st["to_step"]) == (350, 700)


def test_curve_status_flags_a_rise_and_a_short_curve_and_uses_the_error_bars():
    rising = _curve(lambda s: 0.1 + s / 1000, [350, 700], 0.01)
    assert curve_status(rising)["status"] == WORSE
    assert curve_status(rising[:1])["status"] == SHORT
    # the same change is "converged" when the error bars are wide enough: the flag reads the se, not the values
    wide = _curve(lambda s: 0.1 + s / 1000, [350, 700], 0.2)
    assert curve_status(wide)["status"] == CONVERGED
    # non-finite points (a diverged sample set) are ignored
    nan = rising + [{"step": 900, "kid": float("nan"), "kid_se": 0.01}]
    assert curve_status(nan)["status"] == WORSE


class _FakeTrainer:
    def __init__(self, max_wall_s=None):
        self.global_step, self.train_wall_s, self.device = 0, 0.0, torch.device("cpu")
        self.model, self.encoder = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
        self.config = type("C", (), {"max_wall_s": max_wall_s})()


def test_curve_recorder_measures_at_its_steps_writes_each_point_and_resumes(tmp_path):
    calls = []

    def sample(tr, n, g):
        calls.append(tr.global_step)
        return torch.randn(n, 1, 4, 4, generator=g)

    rec = CurveRecorder([2, 4], sample, lambda im: {"kid": float(im.mean()), "kid_se": 0.1}, 8, 0, tmp_path)
    tr = _FakeTrainer()
    for step in range(1, 6):
        tr.global_step, tr.train_wall_s = step, 0.1 * step
        spent = rec(tr)
        assert (spent > 0) == (step in (2, 4))
    assert calls == [2, 4]
    lines = [json.loads(ln) for ln in (tmp_path / curves_mod.CURVE_FILE).read_text().splitlines()]
    assert [p["step"] for p in lines] == [2, 4] and lines[1]["train_wall_s"] == pytest.approx(0.4)
    assert curves_mod.read_curve(tmp_path) == lines
    # a training resumed from a checkpoint at step 3 keeps the point at 2, drops the one at 4 and measures 4 again
    rec2 = CurveRecorder([2, 4], sample, lambda im: {"kid": 0.0, "kid_se": 0.1}, 8, 0, tmp_path)
    tr.global_step = 4
    rec2(tr)
    assert [p["step"] for p in curves_mod.read_curve(tmp_path)] == [2, 4]
    assert curves_mod.read_curve(tmp_path)[1]["kid"] == 0.0


def test_curve_recorder_on_a_wall_time_budget_measures_at_fractions_of_it(tmp_path):
    rec = CurveRecorder([], lambda tr, n, g: torch.zeros(n, 1, 2, 2), lambda im: {"kid": 0.0, "kid_se": 0.0}, 4, 0,
                        None, points=3)
    tr = _FakeTrainer(max_wall_s=8.0)
    done = []
    for step, wall in enumerate([1.0, 2.5, 3.0, 4.5, 7.0, 8.1], 1):
        tr.global_step, tr.train_wall_s = step, wall
        if rec(tr) > 0:
            done.append(wall)
    assert done == [2.5, 4.5, 8.1]          # the first steps past 8/4, 8/2 and 8


def test_trainer_step_hooks_time_is_not_training_time(tmp_path):
    """A hook that sleeps 0.05 s after each of 6 steps: the recorded training wall leaves those 0.3 s out."""
    from neuro_lpc.config import TrainConfig
    from neuro_lpc.likelihoods import GaussianLikelihood
    from neuro_lpc.model import GenerativeModel
    from neuro_lpc.networks import MLPEncoder
    from neuro_lpc.train import LPCTrainer

    data = torch.utils.data.TensorDataset(torch.randn(48, 6), torch.zeros(48, dtype=torch.long))
    model = GenerativeModel(torch.nn.Linear(2, 6), GaussianLikelihood(sigma=0.5), prior_std=1.0)
    tc = TrainConfig(batch_size=8, langevin_steps=2, epochs=1, sample_grid=0, device="cpu", prior_init_batches=0,
                     checkpoint_every_s=None)
    tr = LPCTrainer(model, MLPEncoder(6, 2, hidden=8), tc)
    tr.step_hooks.append(lambda t: (time.sleep(0.05), 0.05)[1])
    t0 = time.perf_counter()
    hist = tr.fit(data, progress=False)
    elapsed = time.perf_counter() - t0
    assert len(hist) == 6
    assert tr.train_wall_s <= elapsed - 0.3 + 1e-3
    assert hist[-1]["wall_s"] == pytest.approx(tr.train_wall_s)


# ------------------------------------------------------------------------------------------- seeds
def test_seed_standard_error_against_a_known_variance():
    """Per-seed values ~ N(mu, sigma^2), S = 3: E[se^2] = sigma^2 / S (the unbiased sample variance / S), and the
    mean +- 2 se interval of a t-distribution with 2 dof covers mu ~ 81.6% of the time."""
    rng = np.random.default_rng(0)
    mu, sigma, S, reps = 5.0, 0.7, 3, 20000
    se2, cover = [], 0
    for _ in range(reps):
        m, se = quality.seed_statistics(rng.normal(mu, sigma, S))
        se2.append(se ** 2)
        cover += abs(m - mu) <= 2 * se
    assert np.mean(se2) == pytest.approx(sigma ** 2 / S, rel=0.03)
    from scipy import stats
    assert cover / reps == pytest.approx(2 * stats.t.cdf(2, S - 1) - 1, abs=0.01)
    with pytest.raises(ValueError):
        quality.seed_statistics([1.0])


def test_rank_metric_uses_the_seed_spread_where_there_are_seeds():
    from circuits.study.report import add_row

    table = {}
    seeded = {"kid": 0.5, "kid_se": 0.001, "seeds": [0, 1, 2], "seed_mean": {"kid": 0.6, "kid_se": 0.05},
              "fid": 1.0, "fid_se": 0.1, "n": 9, "collapsed": False}
    single = {"kid": 0.7, "kid_se": 0.01, "seeds": [0], "fid": 1.0, "fid_se": 0.1, "n": 9, "collapsed": False}
    a = add_row(table, "a", label="a", kind="lpc", samples=seeded, metric_key="fid")
    b = add_row(table, "b", label="b", kind="vae", samples=single, metric_key="fid")
    assert (a["rank_metric"]["value"], a["rank_metric"]["se"]) == (0.6, 0.05) and "3 seeds" in a["rank_metric"]["se_kind"]
    assert (b["rank_metric"]["value"], b["rank_metric"]["se"]) == (0.7, 0.01) and "one seed" in b["rank_metric"]["se_kind"]


def test_seeded_rows_match_within_the_seed_error_but_not_within_the_within_run_error():
    """Two rows 0.1 apart: with seed se 0.05 each they match (0.1 <= 2 sqrt(2) 0.05); with the within-run se alone
    (0.001) the verdict would have called one better -- the seeds' error bars are the ones used."""
    from circuits.study.report import add_row, verdict

    table = {}
    for name, v in (("discrete", 0.5), ("circuit", 0.6)):
        add_row(table, name, label=name, kind="lpc" if name == "discrete" else "circuit",
                samples={"kid": v, "kid_se": 0.001, "seeds": [0, 1, 2], "seed_mean": {"kid": v, "kid_se": 0.05},
                         "fd": 1.0, "fd_se": 0.1, "n": 9, "collapsed": False}, metric_key="fd")
    text = " ".join(verdict({"methods": table, "metric_key": "fid"}))
    assert "circuit matches discrete within the error bars" in text and "better than" not in text
    assert "discrete 500 ± 50 ≈ circuit 600 ± 50" in text          # KID x 10^3 on Inception features


# ------------------------------------------------------------------------------------- aggregate q(z)
def test_aggregate_posterior_against_torch_distributions():
    """Encoder means m_i and variances v_i: the aggregate Gaussian has covariance Cov(m) + diag(mean v); its KL to
    N(0, s^2 I) from torch.distributions, and its variance ratio = mean diagonal / s^2."""
    g = torch.Generator().manual_seed(0)
    means = torch.randn(300, 4, generator=g) * torch.tensor([2.0, 0.5, 1.0, 0.1]) + 0.3
    var = torch.rand(300, 4, generator=g) * 0.2 + 0.01
    enc = lambda x: (means, var)        # noqa: E731
    out = quality.aggregate_posterior(enc, torch.zeros(300, 1), prior_std=1.5)
    cov = torch.cov(means.double().T) + torch.diag(var.double().mean(0))
    q = torch.distributions.MultivariateNormal(means.double().mean(0), covariance_matrix=cov)
    p = torch.distributions.MultivariateNormal(torch.zeros(4, dtype=torch.float64), covariance_matrix=2.25 * torch.eye(4,
                                               dtype=torch.float64))
    assert out["kl_to_prior"] == pytest.approx(float(torch.distributions.kl_divergence(q, p)), rel=1e-9)
    assert out["variance_ratio"] == pytest.approx(float(torch.diagonal(cov).mean() / 2.25), rel=1e-12)


# ----------------------------------------------------------------------------------- read-out path
def _small_model():
    from neuro_lpc.likelihoods import GaussianLikelihood
    from neuro_lpc.model import GenerativeModel
    torch.manual_seed(0)
    dec = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2 * 2),
                              torch.nn.Unflatten(1, (1, 2, 2)))
    return GenerativeModel(dec, GaussianLikelihood(sigma=0.3), prior_std=1.0)


def test_readout_samples_go_through_the_value_units_mismatch():
    """Value-unit mismatch only: a sample is g(gain * z + offset) with the circuit's frozen gain and offset."""
    from circuits.config import CircuitConfig
    from circuits.modes import ReadoutDecoder, readout_model

    model = _small_model()
    noise = {"temperature": 1.0, "sources": [{"type": "mismatch", "gain_std": 0.3, "offset_std": 0.2,
                                              "sites": ["value"]}]}
    rm = readout_model(model, CircuitConfig(dt=1e-3, tau_z=1e-2, noise=noise))
    assert isinstance(rm.decoder, ReadoutDecoder)
    frozen = rm.decoder.circuit.frozen
    gain = next(v for k, v in frozen.items() if k.endswith("value_gain"))
    offset = next(v for k, v in frozen.items() if k.endswith("value_offset"))
    assert (gain - 1).abs().max() > 0.05 and offset.abs().max() > 0.01      # a draw that changes something
    z = torch.randn(5, 3)
    with torch.no_grad():
        torch.testing.assert_close(rm.decoder(z), model.decoder(gain * z + offset))
        assert (rm.decoder(z) - model.decoder(z)).abs().max() > 1e-3


def test_readout_samples_lie_on_the_adc_grid():
    """Prediction ADC (bits b, bound B): every decoded mean is clipped to [-B, B] and a multiple of the resolution
    2B / (2^b - 2) away from -B; without any source the read-out model is the model itself."""
    from circuits.config import CircuitConfig
    from circuits.modes import readout_model

    model = _small_model()
    bits, bound = 4, 0.5
    noise = {"temperature": 1.0, "sources": [{"type": "quantisation", "site": "prediction", "bits": bits,
                                              "bound": bound}]}
    rm = readout_model(model, CircuitConfig(dt=1e-3, tau_z=1e-2, noise=noise))
    x = rm.sample(200, generator=torch.Generator().manual_seed(1))
    res = 2 * bound / (2 ** bits - 2)
    k = (x + bound) / res
    assert x.abs().max() <= bound + 1e-6
    torch.testing.assert_close(k, k.round(), atol=1e-4, rtol=0)
    assert readout_model(model, CircuitConfig(dt=1e-3, tau_z=1e-2, noise="ideal")) is model


# ----------------------------------------------------------------------------------- ideal control
def _ctx(tmp_path, **kw):
    from neuro_lpc.data import load_dataset
    from circuits.study.methods import StudyContext

    cfg = StudyConfig(noise="analog", train_epochs=None, train_batches=3, langevin_steps=3, prior_init_batches=1,
                      architecture="mlp", curve_points=0, out=str(tmp_path), device="cpu", **kw)
    train, test, info = load_dataset("animal-mnist")
    sub = torch.utils.data.Subset(train, range(3 * cfg.batch_size))
    return StudyContext(cfg, torch.device("cpu"), "analog", tmp_path, tmp_path / "models", sub, test, info,
                        log=lambda s: None)


def test_ideal_circuit_control_trains_through_the_circuit_path(tmp_path, monkeypatch):
    """The control is CircuitTrainer's model (checkpoint written by a 'circuit' trainer).  With discrete LPC's seed
    it reproduces discrete LPC's weights (the adiabatic limit, dt = gamma tau_z); with its own seeds (the default)
    it is an independent training."""
    from circuits.study import train as train_mod

    ctx = _ctx(tmp_path)
    ref = train_mod.train_discrete(ctx)
    ctx.trained["discrete"] = ref
    monkeypatch.setattr(train_mod, "IDEAL_SEED_OFFSET", 0)
    same = train_mod.train_ideal_circuit(ctx)
    ck = torch.load(next((tmp_path / "models").glob("circuit-ideal-*")) / "checkpoint.pt", weights_only=True)
    assert ck["method"] == "circuit"
    for a, b in zip(same.model.decoder.parameters(), ref.model.decoder.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    monkeypatch.setattr(train_mod, "IDEAL_SEED_OFFSET", 1000)
    own = train_mod.train_ideal_circuit(ctx)
    assert own.training["seed"] == ctx.cfg.seed + 1000
    diff = max(float((a - b).detach().abs().max()) for a, b in zip(own.model.decoder.parameters(),
                                                                      ref.model.decoder.parameters()))
    assert diff > 1e-2


# ------------------------------------------------------------------------------------------ progress
def test_progress_board_plain_lines_and_worker_files(tmp_path):
    lines = []
    board = ProgressBoard(lines.append, tty=False, every_s=1e9)
    sink = file_sink(tmp_path / "progress-discrete.json")
    sink({"row": "discrete", "step": 10, "total": 40, "train_wall_s": 5.0, "kid": 0.25})
    board.poll(tmp_path)
    sink({"row": "discrete", "step": 20, "total": 40, "train_wall_s": 10.0, "kid": 0.2})
    board.poll(tmp_path)                               # within every_s: no second line
    sink({"row": "discrete", "step": 40, "total": 40, "train_wall_s": 20.0, "kid": 0.1})
    board.poll(tmp_path)
    assert lines == ["[progress] discrete: step 10/40, curve KID 0.25, ETA 15s",
                     "[trained] discrete: step 40/40, curve KID 0.1, ETA 0s"]
    assert eta_s({"step": 10, "total": 40, "train_wall_s": 5.0}) == pytest.approx(15.0)
    assert eta_s({"step": 3, "total": 99, "train_wall_s": 5.0, "max_wall_s": 8.0}) == pytest.approx(3.0)


# --------------------------------------------------------------------------------------------- budgets
def test_budgets_set_their_sizes_unless_a_field_was_set():
    q = StudyConfig(quick=True).apply_quick()
    assert q.budget == "quick" and q.seeds == BUDGETS["quick"]["seeds"] and q.quick_features
    d = StudyConfig().apply_quick()
    assert d.seeds == 3 and d.train_epochs == BUDGETS["default"]["train_epochs"]
    assert d.resolve_train_batches(9000) == round(BUDGETS["default"]["train_epochs"] * 140)
    kept = StudyConfig(budget="long", langevin_steps=7).apply_quick()
    assert kept.langevin_steps == 7 and kept.train_epochs == BUDGETS["long"]["train_epochs"]
    p = StudyConfig(budget="paper").apply_quick()
    assert p.langevin_steps == 300 and p.architecture == "conv" and p.n_samples == 50_000 and p.full_protocol
    assert StudyConfig().resolved_architecture(28, "cpu") == "mlp"
    assert StudyConfig().resolved_architecture(32, "cpu") == "conv"
    with pytest.raises(StudyError, match="budget"):
        StudyConfig(budget="huge").apply_quick()
    with pytest.raises(StudyError, match="seeds"):
        check_fields(StudyConfig(seeds=0, out="x"))
