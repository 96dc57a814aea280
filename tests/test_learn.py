"""Circuit learning (circuits.learn): the discrete limit, online rule, resume, config and CLI.

Expectations come from the definitions: with adiabatic error units, no extra noise and
dt = step_size * tau_z a presentation *is* the discrete Langevin chain (same random numbers), so the
first optimiser step equals LPCTrainer's; online learning is tau_theta d theta = grad mean_b log p dt.
"""
import copy
import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from circuits.cli import train_main
from circuits.learn import CircuitTrainConfig, CircuitTrainer, load_circuit_trained
from neuro_lpc import CheckpointError, DivergenceError, GaussianLikelihood, GenerativeModel, MLPEncoder, TrainConfig
from neuro_lpc.data import load_dataset
from neuro_lpc.train import LPCTrainer, build_model


@pytest.fixture(scope="module")
def animal():
    train, _test, info = load_dataset("animal-mnist")
    return train, info


# exactness tests run on the CPU: bit-equality across runs needs deterministic kernels (cuDNN's conv-transpose
# backward is not), and TF32 convolutions would round the two samplers differently
COMMON = dict(batch_size=16, langevin_steps=5, max_batches_per_epoch=1, prior_init_batches=0, sample_grid=0,
              step_size=0.1, precondition=None, seed=3, device="cpu")


def circuit_cfg(**kw):
    base = dict(COMMON, tau_e=0.0, noise="ideal")
    base.update(kw)
    return CircuitTrainConfig(**base)


def twin_models(cfg, info, n=2):
    torch.manual_seed(0)
    m, e = build_model(cfg, info.image_size, info.channels)
    init = copy.deepcopy((m.state_dict(), e.state_dict()))
    out = [(m, e)]
    for _ in range(n - 1):
        m2, e2 = build_model(cfg, info.image_size, info.channels)
        m2.load_state_dict(init[0]), e2.load_state_dict(init[1])
        out.append((m2, e2))
    return out


def all_params(model, enc):
    return list(model.named_parameters()) + [("encoder." + n, p) for n, p in enc.named_parameters()]


@pytest.mark.parametrize("warm_start", ["reverse", "none", "forward", "jeffreys"])
def test_first_step_equals_discrete_lpc_in_the_adiabatic_limit(animal, warm_start):
    train, info = animal
    lcfg = TrainConfig(**COMMON, warm_start=warm_start)
    ccfg = circuit_cfg(warm_start=warm_start)                 # dt = None -> step_size * tau_z
    assert ccfg.resolved_dt == pytest.approx(0.1 * ccfg.tau_z) and ccfg.resolved_steps == 5
    (m1, e1), (m2, e2) = twin_models(lcfg, info)
    h1 = LPCTrainer(m1, e1, lcfg).fit(train, progress=False)
    h2 = CircuitTrainer(m2, e2, ccfg).fit(train, progress=False)
    assert h1[0]["encoder_loss"] == pytest.approx(h2[0]["encoder_loss"], rel=1e-5)
    for (name, a), (_, b) in zip(all_params(m1, e1), all_params(m2, e2)):
        if a.grad is None:                                    # warm start "none": the encoder is not trained
            assert b.grad is None, name
            continue
        # the gradients themselves (Adam's first step is ~ lr * sign(g) and would hide a wrong scale)
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6 * float(a.grad.abs().max()), msg=lambda m, name=name: f"{name}: {m}")
        # after the Adam step (bit-equal on CPU; 1 % of one Adam step allows other summation orders, since
        # Adam's step g / (|g| + eps) amplifies rounding where |g| is near eps)
        torch.testing.assert_close(b, a, rtol=0, atol=1e-2 * lcfg.lr, msg=lambda m, name=name: f"{name}: {m}")


def _loss_drop(animal, **kw):
    train, info = animal
    cfg = CircuitTrainConfig(prior_init_batches=2, sample_grid=0, step_size=0.1, seed=3, **kw)
    torch.manual_seed(3)
    model, enc = build_model(cfg, info.image_size, info.channels)
    hist = CircuitTrainer(model, enc, cfg).fit(train, progress=False)
    assert all(math.isfinite(r["error_norm"]) for r in hist)
    first = sum(r["loss"] for r in hist[:5]) / 5
    last = sum(r["loss"] for r in hist[-5:]) / 5
    return first, last


def test_short_circuit_training_lowers_the_loss(animal):
    """Adiabatic error units with thermal noise on value and error units (not the discrete chain)."""
    first, last = _loss_drop(animal, batch_size=32, langevin_steps=4, max_batches_per_epoch=30, tau_e=0.0,
                             noise="thermal")
    assert last < 0.8 * first, (first, last)


@pytest.mark.slow
def test_circuit_training_with_finite_error_time_constant_lowers_the_loss(animal):
    first, last = _loss_drop(animal, batch_size=32, presentation_steps=100, max_batches_per_epoch=15, tau_e=2e-4,
                             dt=1e-4)
    assert last < 0.8 * first, (first, last)


def test_online_with_zero_rate_equals_offline(animal):
    train, info = animal
    off = circuit_cfg(warm_start="jeffreys", tau_e=2e-3, max_batches_per_epoch=2)
    on = circuit_cfg(warm_start="jeffreys", tau_e=2e-3, max_batches_per_epoch=2, online=True, tau_theta=math.inf)
    assert on.online_lr == 0.0 and off.online_lr is None
    (m1, e1), (m2, e2) = twin_models(off, info)
    CircuitTrainer(m1, e1, off).fit(train, progress=False)
    CircuitTrainer(m2, e2, on).fit(train, progress=False)
    for (name, a), (_, b) in zip(all_params(m1, e1), all_params(m2, e2)):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=lambda m, name=name: f"{name}: {m}")


def vector_problem(d=3, n=8, N=64, hidden=16, decoder=None, sigma=0.5):
    """A small float64 linear-Gaussian model with an MLP encoder and a vector data set."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(n, d, generator=g, dtype=torch.float64)
    X = torch.randn(N, d, generator=g, dtype=torch.float64) @ W.T + 0.3 * torch.randn(N, n, generator=g, dtype=torch.float64)
    data = TensorDataset(X, torch.zeros(N, dtype=torch.long))
    torch.manual_seed(1)
    dec = decoder if decoder is not None else nn.Linear(d, n)
    model = GenerativeModel(dec.double(), GaussianLikelihood(sigma, learn_sigma=True), latent_dim=d).double()
    return model, MLPEncoder(n, d, hidden=hidden).double(), data


def test_online_rule_integrates_the_gradient():
    """online only (no Adam step on the decoder): theta(P) - theta(0) = online_lr sum_k grad mean_b log p(x, z(t_k)),
    i.e. -online_lr * P * (the offline time-averaged loss gradient) up to O(online_lr^2)."""
    tau_theta = 1e5
    common = dict(batch_size=16, presentation_steps=20, max_batches_per_epoch=1, prior_init_batches=0, sample_grid=0,
                  warm_start="none", seed=3, tau_e=2e-3, dt=1e-4, noise="ideal", latent_dim=3, likelihood="gaussian",
                  device="cpu")
    off = CircuitTrainConfig(**common, lr=1e-300)                    # Adam step ~ 0: .grad is kept, theta stays
    on = CircuitTrainConfig(**common, online=True, tau_theta=tau_theta, online_adam=False)
    m1, e1, data = vector_problem()
    m2, e2, _ = vector_problem()
    theta0 = copy.deepcopy(m2.state_dict())
    CircuitTrainer(m1, e1, off).fit(data, progress=False)
    CircuitTrainer(m2, e2, on).fit(data, progress=False)
    rate, P = on.resolved_dt / tau_theta, on.resolved_steps
    for name, p in m2.named_parameters():
        assert p.grad is None, name                                  # no Adam step on the decoder / likelihood
        expected = -rate * P * dict(m1.named_parameters())[name].grad
        delta = p.detach() - theta0[name]
        assert float(expected.abs().max()) > 1e-8, name
        torch.testing.assert_close(delta, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()),
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_resume_ends_at_the_same_parameters(animal, tmp_path):
    train, info = animal
    cfg = circuit_cfg(warm_start="jeffreys", epochs=2, max_batches_per_epoch=3, prior_init_batches=4, tau_e=2e-3,
                      noise="thermal", presentation_steps=4)
    (m1, e1), (m2, e2) = twin_models(cfg, info)
    CircuitTrainer(m1, e1, cfg, out_dir=tmp_path / "full").fit(train, progress=False)
    CircuitTrainer(m2, e2, cfg, out_dir=tmp_path / "split").fit(train, epochs=1, progress=False)
    m3, e3 = build_model(cfg, info.image_size, info.channels)      # a fresh process starts from random weights
    t3 = CircuitTrainer(m3, e3, cfg, out_dir=tmp_path / "split")
    t3.fit(train, resume=True, progress=False)
    assert t3.epoch == 2 and t3.global_step == 6
    for (name, a), (_, b) in zip(all_params(m1, e1), all_params(m3, e3)):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=lambda m, name=name: f"{name}: {m}")
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == list(range(1, 7))
    # the checkpoint is a circuit checkpoint and loads back
    m4, e4, c4, ck = load_circuit_trained(tmp_path / "split" / "checkpoint.pt")
    assert ck["method"] == "circuit" and isinstance(c4, CircuitTrainConfig) and c4.noise == "thermal"
    for (name, a), (_, b) in zip(all_params(m3, e3), all_params(m4, e4)):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=lambda m, name=name: f"{name}: {m}")
    # an lpc trainer refuses it
    lp = LPCTrainer(*build_model(TrainConfig(**COMMON), info.image_size, info.channels), TrainConfig(**COMMON))
    with pytest.raises(CheckpointError, match="'circuit' trainer"):
        lp.load_checkpoint(tmp_path / "split" / "checkpoint.pt")


def test_config_round_trip_and_validation(tmp_path):
    cfg = circuit_cfg(noise={"preset": "thermal", "sources": [{"type": "shot"}]}, online=True, tau_theta=5.0)
    from neuro_lpc.config import write_run_metadata

    write_run_metadata(tmp_path, cfg.validate())
    again = CircuitTrainConfig.from_file(tmp_path / "config.json")
    assert again == cfg and again.online_lr == pytest.approx(cfg.resolved_dt / 5.0)
    inf = circuit_cfg(online=True, tau_theta=math.inf)
    write_run_metadata(tmp_path, inf.validate(), name="inf.json")
    assert CircuitTrainConfig.from_file(tmp_path / "inf.json").online_lr == 0.0
    bad = [
        (dict(noise="loud"), "unknown noise preset"),
        (dict(online=True), "tau_theta"),
        (dict(online=True, tau_theta=-1.0), "tau_theta"),
        (dict(dt=-1e-3), "dt"),
        (dict(presentation_steps=0), "presentation_steps"),
        (dict(record_every=10), "record_every"),
        (dict(tau_e=-1.0), "tau_e"),
        (dict(method="lpc"), "method"),
        (dict(warm_start="symmetric"), "objective"),
        (dict(precondition=1.5), "precondition"),
        (dict(error_form="other"), "error_form"),
    ]
    for kw, match in bad:
        with pytest.raises(ValueError, match=match):
            circuit_cfg(**kw).validate()
    with pytest.warns(UserWarning, match="tau_theta"):
        circuit_cfg(online=True, tau_theta=0.02).validate()


def test_unstable_dt_is_refused_before_work_and_divergence_names_the_batch(animal, tmp_path):
    train, info = animal
    cfg = circuit_cfg(dt=1e-2, tau_e=2e-3)                                 # dt > 2 tau_e: error units unstable
    with pytest.raises(ValueError, match="unstable"):
        CircuitTrainer(*build_model(cfg, info.image_size, info.channels), cfg)
    # a decoder the stability check cannot see through (not an nn.Linear): the chain blows up mid-presentation
    common = dict(batch_size=16, max_batches_per_epoch=2, prior_init_batches=0, sample_grid=0, warm_start="none",
                  seed=3, tau_e=0.0, noise="ideal", latent_dim=3, likelihood="gaussian")
    model, enc, data = vector_problem(decoder=nn.Sequential(nn.Linear(3, 8)), sigma=0.01)
    cfg = CircuitTrainConfig(**common, dt=1e-2, presentation_steps=300)     # gamma = 1, lambda_max(P) ~ 1e4
    # (named by the log-joint that overflows one step before the state, or by the value unit that overflows)
    with pytest.raises(DivergenceError, match=r"epoch 1, batch 1 .*circuit diverged at step [0-9]+ .*(value unit z|"
                                              r"log p\(x, z\) of chain [0-9]+ with a finite state)"):
        CircuitTrainer(model, enc, cfg, out_dir=tmp_path / "a").fit(data, progress=False)
    # weights that grow past the stable dt between batches stop the run like a divergence
    model, enc, data = vector_problem(sigma=0.5)
    cfg = CircuitTrainConfig(**common, dt=1e-3, presentation_steps=5)
    trainer = CircuitTrainer(model, enc, cfg, out_dir=tmp_path / "b")
    with torch.no_grad():
        model.decoder.weight.mul_(100.0)
    with pytest.raises(DivergenceError, match="epoch 1, batch 1 .*can no longer run.*unstable"):
        trainer.fit(data, progress=False)


def test_cli_trains_and_writes_a_rerunnable_config(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--out", str(out), "--epochs", "1", "--max-batches-per-epoch", "2", "--presentation-steps", "3",
            "--batch-size", "8", "--sample-grid", "0", "--quiet", "--noise", "thermal", "--tau-e", "0.002",
            "--online", "--tau-theta", "1e4", "--precondition", "0.25"]
    assert train_main(args) == 0
    meta = json.loads((out / "config.json").read_text())
    c = meta["config"]
    assert c["method"] == "circuit" and c["noise"] == "thermal" and c["online"] is True and c["tau_theta"] == 1e4
    assert c["presentation_steps"] == 3 and c["precondition"] == 0.25 and meta["method"] == "circuit"
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert train_main(["--out", str(tmp_path / "rerun"), "--config", str(out / "config.json"), "--quiet"]) == 0
    assert json.loads((tmp_path / "rerun" / "config.json").read_text())["config"] == c
    # resume one more epoch from the checkpoint
    assert train_main(["--out", str(out), "--config", str(out / "config.json"), "--epochs", "2", "--resume",
                       "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 4
    # a noise config file
    noise = tmp_path / "noise.json"
    noise.write_text(json.dumps({"preset": "ideal", "sources": [{"type": "thermal", "value_std": 0.2}]}))
    assert train_main(["--out", str(tmp_path / "nc"), "--noise-config", str(noise), "--epochs", "1",
                       "--max-batches-per-epoch", "1", "--presentation-steps", "2", "--batch-size", "8",
                       "--sample-grid", "0", "--quiet"]) == 0
    saved = json.loads((tmp_path / "nc" / "config.json").read_text())["config"]["noise"]
    assert saved["sources"][0]["value_std"] == 0.2


@pytest.mark.parametrize("args,match", [
    (["--noise", "loud"], "unknown noise preset"),
    (["--noise-config", "/nonexistent/noise.json"], "not found"),
    (["--online"], "tau_theta"),
    (["--dt", "0.03"], "unstable"),                 # > 2 tau_z: the value units' own leak is unstable
    (["--tau-z", "-1"], "tau_z"),
    (["--dataset", "cifar10", "--data-root", "/nonexistent/data"], "cifar"),
    (["--config", "/nonexistent/config.json"], "not found"),
    (["--warm-start", "symmetric"], "objective"),
    (["--learning", "on-chip"], "unknown learning mode"),
    (["--learning", "hardware-aware", "--noise-config", "PULSED"], "in-memory writes only"),
    (["--learning", "in-memory", "--noise-config", "BAD_DEVICE"], "dw_min"),
    (["--deploy-time", "-5"], "deploy_time"),
])
def test_cli_reports_bad_input_before_work(tmp_path, capsys, args, match):
    out = tmp_path / "bad"
    files = {"PULSED": {"preset": "analog", "sources": [{"type": "pulsed"}]},
             "BAD_DEVICE": {"preset": "analog", "sources": [{"type": "pulsed", "dw_min": 0.0}]}}
    for i, a in enumerate(args):
        if a in files:
            path = tmp_path / f"{a.lower()}.json"
            path.write_text(json.dumps(files[a]))
            args = [*args[:i], str(path), *args[i + 1:]]
    assert train_main(["--out", str(out), "--quiet", "--sample-grid", "0", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and match in err.lower(), err
    assert not (out / "checkpoint.pt").exists() and not (out / "metrics.jsonl").exists()
