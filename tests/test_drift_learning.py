"""Hardware-aware learning under conductance drift, device ages 1 s ... 1 month, with and without compensation.

Issue 14 section 3: with drift alone (1 h, no compensation) the circuit trainer's loss fell for 10 batches and then
climbed to ~150-230 per dim while ``ideal`` kept falling. Code, not physics. The trainer recorded log p(x, z) under the
*digital* weights. Under drift the circuit runs and learns on the read weights w = s ((t + t0)/t0)^(-nu), about 0.77 s
per layer at 1 h. As learning grows the stored weights to make up for that, the digital decoder drifts away from the
device decoder, and its loss on the device's chain climbed while the device's own loss fell. The encoder's reverse-KL
term was also taken through the digital decoder, so q(z|x) proposed for the wrong posterior (it cost ~3 nats per dim
at 30 batches). Both now use the weights the presentation read.

Closed forms used below: for nu ~ |N(mu, sd^2)| and L = ln((t + t0)/t0), the expected read factor is the folded-normal
moment E[exp(-L |nu|)] = exp(-L mu + L^2 sd^2 / 2) Phi(mu/sd - L sd) + exp(L mu + L^2 sd^2 / 2) Phi(-mu/sd - L sd)
(= ((t + t0)/t0)^(-mu) exactly when sd = 0). Global compensation divides by the tensor's mean factor.
"""
import copy
import math

import pytest
import torch
from torch.func import functional_call

from circuits.learn import CircuitTrainConfig, CircuitTrainer
from circuits.noise import pcm_drift_nu_moments
from neuro_lpc.data import load_dataset
from neuro_lpc.objectives import negative_elbo
from problems import tiny_image_model

pytestmark = pytest.mark.usefixtures("single_thread")

D = 8
T0 = 20.0
AGES = {"1 s": 1.0, "1 h": 3600.0, "1 day": 86400.0, "1 month": 2592000.0}


@pytest.fixture(scope="module")
def animal():
    train, _, _ = load_dataset("animal-mnist")
    return train


def tiny_model(seed=0):
    return tiny_image_model(D, seed)


def drift_cfg(age, compensate, batches=24, **drift):
    src = {"type": "drift", "t_start": float(age), "compensate": compensate, **drift}
    return CircuitTrainConfig(batch_size=32, langevin_steps=6, max_batches_per_epoch=batches, prior_init_batches=4,
                              sample_grid=0, step_size=0.05, precondition=None, seed=5, device="cpu", tau_e=0.0,
                              lr=3e-3, learning="hardware-aware", warm_start="jeffreys",
                              noise={"preset": "ideal", "sources": [src]})


def folded_normal_mgf(mu, sd, L):
    """E[exp(-L |nu|)] for nu ~ N(mu, sd^2) (elementwise tensors, float64)."""
    mu, sd = mu.double(), sd.double()
    n = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    a = torch.exp(-L * mu + 0.5 * (L * sd) ** 2) * n.cdf(mu / sd - L * sd)
    b = torch.exp(L * mu + 0.5 * (L * sd) ** 2) * n.cdf(-mu / sd - L * sd)
    return a + b


def read_weight(age, compensate, **drift):
    """(programmed weight, what the first presentation of a hardware-aware trainer reads) for the 64 x 784 layer."""
    model, enc = tiny_model()
    tr = CircuitTrainer(model, enc, drift_cfg(age, compensate, **drift))
    fwd, _ = tr.build_circuit(tr.batch_array()).effective_weights(0.0)
    return model.decoder[2].weight.detach().double(), fwd["2.weight"].double()


# ------------------------------------------------------------------------------ learning trend ----

@pytest.mark.parametrize("compensate", [False, True], ids=["uncompensated", "compensated"])
@pytest.mark.parametrize("age", list(AGES), ids=list(AGES))
def test_drift_learning_falls_and_does_not_climb_back(animal, age, compensate):
    """The trainer's loss falls and stays down at every age. Before the fix, 1 day and 1 month without compensation
    gave last-third / first-third ratios of 0.97 and 1.37 (climbing from batch 8). Now all ages give ~0.6."""
    model, enc = tiny_model()
    hist = CircuitTrainer(model, enc, drift_cfg(AGES[age], compensate)).fit(animal, progress=False)
    loss = [float(r["loss_per_dim"]) for r in hist]
    n = len(loss) // 3
    first, middle, last = (sum(loss[i * n:(i + 1) * n]) / n for i in range(3))
    assert last < 0.8 * first, (age, compensate, first, last)
    assert last <= 1.05 * middle, f"{age}: the loss climbs back ({middle:.3g} -> {last:.3g})"


def test_the_recorded_loss_is_that_of_the_weights_the_circuit_read(animal):
    """The trainer's loss is -log p(x, z) of its recorded states under the read weights (drift at each record's time),
    not under the digital weights. After a few batches at 1 month without compensation the two differ."""
    model, enc = tiny_model()
    tr = CircuitTrainer(model, enc, drift_cfg(AGES["1 month"], False, batches=6))
    tr.fit(animal, progress=False)
    x = torch.stack([animal[i][0] for i in range(16)])
    traj = tr.present(x, model.prior_sample(16, torch.Generator().manual_seed(1)))
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        on_device, digital = [], []
        for t, z in zip(traj.t.tolist(), traj.z):
            fwd, _ = tr.circuit.effective_weights(t)
            mu = functional_call(model.decoder, fwd, (z,))
            on_device.append(model.likelihood.log_prob(x, mu) + model.log_prior(z))
            digital.append(model.log_joint(x, z))
    torch.testing.assert_close(traj.log_joint, torch.stack(on_device), rtol=1e-5, atol=1e-3)
    gap = float((torch.stack(digital) - traj.log_joint).abs().mean() / traj.log_joint.abs().mean())
    assert gap > 0.05, f"the digital and device losses should differ under a month of drift (relative gap {gap:.3g})"


def test_the_encoders_elbo_goes_through_the_decoder_the_circuit_read(animal):
    """presented_model(): the negative ELBO and its gradient w.r.t. the encoder's outputs equal those of a copy of the
    decoder loaded with the array's reads (built independently here). The digital decoder's gradient differs from them
    (by ~170 % after 4 batches at 1 month without compensation)."""
    model, enc = tiny_model()
    tr = CircuitTrainer(model, enc, drift_cfg(AGES["1 month"], False, batches=4))
    tr.fit(animal, progress=False)
    x = torch.stack([animal[i][0] for i in range(16)])
    tr.present(x, model.prior_sample(16, torch.Generator().manual_seed(1)))
    model.zero_grad(set_to_none=True)
    ref = copy.deepcopy(model)
    with torch.no_grad():
        params = dict(ref.decoder.named_parameters())
        for n, w in tr.circuit.array.read_all().items():
            params[n].copy_(w)

    def elbo_and_grad(m):
        mean, var = (v.detach().requires_grad_(True) for v in enc(x))
        loss = negative_elbo(m, x, mean, var, torch.Generator().manual_seed(3)).mean()
        return float(loss.detach()), torch.autograd.grad(loss, mean)[0]

    got, g_got = elbo_and_grad(tr.presented_model())
    want, g_want = elbo_and_grad(ref)
    _, g_dig = elbo_and_grad(model)
    assert got == pytest.approx(want, rel=1e-5)
    torch.testing.assert_close(g_got, g_want, rtol=1e-4, atol=1e-5)
    rel = float((g_dig - g_want).norm() / g_want.norm())
    assert rel > 0.5, f"the digital decoder should give the encoder another gradient under a month of drift ({rel:.3g})"


# ------------------------------------------------------------------ read weights: closed forms ----

@pytest.mark.parametrize("age", list(AGES), ids=list(AGES))
def test_uncompensated_read_weights_shrink_by_the_drift_law(age):
    """One nu for all devices: every read weight is ((t + t0)/t0)^(-nu) times the programmed one (to rounding).
    nu ~ N(0.06, 0.01^2): the mean read factor is the folded-normal moment, within 4 standard errors. At 1 month this
    is 0.7 % above ((t + t0)/t0)^(-nu_mean), about 15 standard errors away, so the test can tell the two apart."""
    t = AGES[age]
    L = math.log((t + T0) / T0)
    w, r = read_weight(t, False, nu=0.06)
    torch.testing.assert_close(r, w * math.exp(-0.06 * L), rtol=1e-6, atol=1e-9)
    w, r = read_weight(t, False, nu=0.06, nu_std=0.01)
    f = r / w
    mean_f = float(folded_normal_mgf(torch.tensor(0.06), torch.tensor(0.01), L))
    var_f = float(folded_normal_mgf(torch.tensor(0.06), torch.tensor(0.01), 2 * L)) - mean_f ** 2
    se = math.sqrt(max(var_f, 1e-30) / f.numel())
    assert abs(float(f.mean()) - mean_f) < 4 * se + 1e-9, (age, float(f.mean()), mean_f, se)
    assert float(f.std()) == pytest.approx(math.sqrt(max(var_f, 0.0)), rel=0.05, abs=1e-7)


@pytest.mark.parametrize("age", list(AGES), ids=list(AGES))
def test_pcm_read_weight_scale_matches_the_closed_form(age):
    """aihwkit PCM exponents (nu ~ |N(mu(r), sd(r)^2)|, r = |w| / w_max), the trainer's default. The least-squares
    scale alpha = <w_read, w> / <w, w> of the read weights against the programmed ones:
    uncompensated, alpha = sum w^2 E f / sum w^2 (it shrinks with age);
    compensated, alpha = sum w^2 E f / (sum w^2 mean E f). That is 1 to within the spread that large weights drift
    less than small ones, so slightly above 1, and it does not shrink with age.
    Both hold within 4 standard errors of the closed-form variance."""
    t = AGES[age]
    L = math.log((t + T0) / T0)
    for compensate in (False, True):
        w, r = read_weight(t, compensate)
        mu, sd = pcm_drift_nu_moments(w.abs() / w.abs().max())
        Ef = folded_normal_mgf(mu, sd, L)
        Vf = (folded_normal_mgf(mu, sd, 2 * L) - Ef ** 2).clamp(min=0)
        w2 = w * w
        norm = float(Ef.mean()) if compensate else 1.0
        alpha = float((r * w).sum() / w2.sum())
        pred = float((w2 * Ef).sum() / w2.sum()) / norm
        se = math.sqrt(float((w2 * w2 * Vf).sum())) / float(w2.sum()) / norm
        assert abs(alpha - pred) < 4 * se + 1e-7, (age, compensate, alpha, pred, se)
        if compensate:
            assert abs(alpha - 1) < 0.05, (age, alpha)
        elif t >= 3600:
            assert alpha < 0.8, (age, alpha)   # 1 h: ~0.77, 1 month: ~0.53


# ------------------------------------------------------------------ the issue's configuration ----

@pytest.mark.slow
@pytest.mark.parametrize("age", ["1 h", "1 month"])
def test_conv_decoder_drift_learning_of_the_issue_falls(age):
    """The issue's run: the built-in animal-mnist conv decoder, batch 64, T = 10, beta = 0.25, Jeffreys warm start from
    batch 10, drift alone without compensation. It used to climb to 148 by batch 15. Now the loss falls like ideal's."""
    from neuro_lpc.train import TrainConfig, build_model

    train, _, info = load_dataset("animal-mnist")
    kw = dict(dataset="animal-mnist", epochs=1, batch_size=64, langevin_steps=10, step_size=0.1, precondition=0.25,
              warm_start="jeffreys", prior_init_batches=10, max_batches_per_epoch=30, seed=0, device="cpu",
              sample_grid=0)
    model, enc = build_model(TrainConfig(**kw), info.image_size, info.channels)
    cfg = CircuitTrainConfig(method="circuit", **kw, dt=1e-3, tau_z=0.01, presentation_steps=10,
                             learning="hardware-aware", noise={"preset": "ideal", "sources": [{"type": "drift", "t_start": AGES[age]}]})
    loss = [float(r["loss_per_dim"]) for r in CircuitTrainer(model, enc, cfg).fit(train, progress=False)]
    assert sum(loss[-10:]) / 10 < 0.7 * sum(loss[:10]) / 10, loss
    assert max(loss[10:]) < loss[0], loss
