"""The local pulsed outer-product update (circuits.local_update) and learning mode "in-memory-local" (issue 17 §2).

Oracles written here, independently of the module: plain SGD eta sum_r d_r a_r^T (numpy), aihwkit's pulse-train
arithmetic (BL, C_a, C_d from ``calculateBlAB`` / ``performUpdateManagement``, restated below), the binomial
variance of coincidence counts and the covariance that a shared pulse train puts between the devices of one row,
and autograd's weight gradient of convolutions.
"""
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from circuits.learn import CircuitTrainConfig, CircuitTrainer
from circuits.local_update import (EdgeRecorder, PulseUpdateConfig, check_mapped, coincidences, layer_rows,
                                   local_update)
from circuits.modes import LEARNING_MODES
from circuits.noise.arrays import AnalogArray, PulsedDevice
from neuro_lpc import GaussianLikelihood, GenerativeModel, MLPEncoder
from neuro_lpc.data import load_dataset

sys.path.insert(0, str(Path(__file__).parent))
from problems import tiny_image_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")
F64 = torch.float64
IDEAL = dict(dw_min=1e-9, dw_min_dtod=0.0, dw_min_std=0.0, up_down=0.0)     # the SGD limit's device


# ------------------------------------------------------------------------------ oracles ----

def aihwkit_scales(a, d, eta, dw, bl_max, blm, um):
    """numpy restatement of aihwkit PulsedUpdateMetaParameter::performUpdateManagement for one row:
    (BL, C_a (x side: aihwkit's B), C_d (d side: aihwkit's A))."""
    xv, dv = np.abs(a).max(), np.abs(d).max()
    k = eta * xv * dv / dw
    bl = min(int(math.ceil(k)), bl_max) if blm else bl_max
    A = B = math.sqrt(eta / (dw * bl))
    if um:
        if k > bl_max:
            dv = dv * bl_max / k
        A *= math.sqrt(xv / dv)
        B *= math.sqrt(dv / xv)
    return bl, B, A


def predicted_moments(a, d, eta, dw, bl_max, blm, um):
    """Per device (i, j): mean and variance of the net signed count summed over rows (independent rows; on a row
    n_ij ~ Binomial(BL, p_a p_d)), and the variance of each row-sum S_i = sum_j n_ij (one row's devices share the
    d line's pulses: Cov(n_ij, n_ij') = BL p_d (1 - p_d) p_a p_a' s_j s_j' for j != j')."""
    mean = np.zeros((d.shape[1], a.shape[1]))
    var = np.zeros_like(mean)
    var_rowsum = np.zeros(d.shape[1])
    for r in range(a.shape[0]):
        bl, ca, cd = aihwkit_scales(a[r], d[r], eta, dw, bl_max, blm, um)
        pa, pd = np.minimum(np.abs(a[r]) * ca, 1), np.minimum(np.abs(d[r]) * cd, 1)
        s = np.outer(np.sign(d[r]), np.sign(a[r]))
        q = np.outer(pd, pa)
        mean += bl * q * s
        var += bl * q * (1 - q)
        for i in range(d.shape[1]):
            cross = bl * pd[i] * (1 - pd[i]) * (np.outer(pa * np.sign(a[r]), pa * np.sign(a[r])))
            np.fill_diagonal(cross, 0)
            var_rowsum[i] += (bl * q[i] * (1 - q[i])).sum() + cross.sum()
    return mean, var, var_rowsum


def draws(a, d, eta, dw, cfg, n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        up, down = coincidences(torch.as_tensor(a), torch.as_tensor(d), eta, dw, cfg, gen)
        out.append((up - down).numpy())
    return np.stack(out)


# ------------------------------------------------------------------ (a) the SGD limit ----

def linear_array(w, **dev):
    return AnalogArray({"weight": w}, pulsed=PulsedDevice(**{**IDEAL, **dev}).validate(), seed=3)


def recorded_linear(layer, x, cot):
    """The recorder's edges of one forward/backward of ``layer`` (a = x, d = cot)."""
    layers = check_mapped(nn.Sequential(layer), ["0.weight"])
    rec = EdgeRecorder(layers)
    with rec:
        x = x.clone().requires_grad_(True)
        torch.autograd.grad(layer(x), x, cot)
    return layers, rec


def test_expected_counts_with_vanishing_steps_equal_plain_sgd_on_a_linear_layer():
    g = torch.Generator().manual_seed(0)
    layer = nn.Linear(5, 4, bias=False).double()
    a, d = torch.randn(7, 5, generator=g, dtype=F64), torch.randn(7, 4, generator=g, dtype=F64)
    layers, rec = recorded_linear(layer, a, d)
    w0 = layer.weight.detach().clone()
    arr = linear_array(w0)
    arr.names = ["0.weight"]
    for k in ("stored", "t_write", "scale", "step_up", "step_down", "w_max"):
        getattr(arr, k)["0.weight"] = getattr(arr, k).pop("weight")
    lr = 0.3
    local_update(arr, rec, layers, lr, PulseUpdateConfig(expected=True), torch.Generator().manual_seed(1))
    sgd = w0.numpy() + lr / 7 * d.numpy().T @ a.numpy()        # one recorded step, batch 7: eta = lr / 7
    np.testing.assert_allclose(arr.stored["0.weight"].numpy(), sgd, rtol=0, atol=1e-7)
    assert np.abs(sgd - w0.numpy()).max() > 1e-2               # the update is really there


def test_drawn_pulse_trains_converge_to_sgd_as_bl_grows():
    """The stochastic counts' error about the SGD step shrinks as 1/sqrt(BL) (BL -> inf limit, probabilities held:
    C^2 BL fixed)."""
    g = torch.Generator().manual_seed(2)
    a, d = torch.rand(3, 6, generator=g, dtype=F64), torch.rand(3, 5, generator=g, dtype=F64)
    eta, sgd = 1.0, (d.T @ a).numpy()
    errs = []
    for bl in (31, 3100):
        cfg = PulseUpdateConfig(desired_bl=bl, bl_management=False, update_management=False)
        dw = eta / bl * 4                  # C = sqrt(eta / (dw BL)) = 0.5: the same probabilities at every BL
        n = draws(a.numpy(), d.numpy(), eta, dw, cfg, 40)
        errs.append(np.sqrt(((n * dw - sgd) ** 2).mean()))
    assert 6 < errs[0] / errs[1] < 16, errs                    # sqrt(100) = 10


# ------------------------------------------------------------ (b) finite BL: mean and variance ----

@pytest.mark.parametrize("blm", [False, True])
def test_finite_bl_mean_is_the_sgd_step_and_variance_the_binomial_arithmetic(blm):
    rng = np.random.default_rng(4)
    a = rng.uniform(-1, 1, (2, 3))
    d = rng.uniform(-1, 1, (2, 2))
    eta, dw = 0.05, 0.01                                       # k = eta |a| |d| / dw < 5: BL management shortens BL
    cfg = PulseUpdateConfig(desired_bl=31, bl_management=blm, update_management=True)
    n = draws(a, d, eta, dw, cfg, 4000)
    mean, var, _ = predicted_moments(a, d, eta, dw, 31, blm, True)
    np.testing.assert_allclose(mean * dw, eta * d.T @ a, rtol=1e-12)      # no saturation: E[count] dw = SGD
    se = np.sqrt(var / n.shape[0])
    assert (np.abs(n.mean(0) - mean) < 4.5 * se).all(), (n.mean(0), mean, se)
    np.testing.assert_allclose(n.var(0), var, rtol=0.12)


def test_bl_management_changes_the_variance_not_the_mean():
    rng = np.random.default_rng(4)
    a, d = rng.uniform(-1, 1, (2, 3)), rng.uniform(-1, 1, (2, 2))
    m0, v0, _ = predicted_moments(a, d, 0.05, 0.01, 31, False, True)
    m1, v1, _ = predicted_moments(a, d, 0.05, 0.01, 31, True, True)
    np.testing.assert_allclose(m0, m1, rtol=1e-12)
    assert (v1 < 0.9 * v0).any()       # shorter trains at the same mean: fewer, likelier coincidences


# ------------------------------------------------------------- (c) update management ----

def test_update_management_changes_the_row_variance_as_predicted_and_not_the_mean():
    """Unbalanced edges (|a| ~ 2-3, |d| ~ 0.01-0.03): without UM p_a ~ 0.25, p_d ~ 0.002; with UM both ~ 0.02. The
    marginal of each count keeps q = p_a p_d, but the d line's shared train correlates a row's devices,
    Cov = BL p_d (1 - p_d) p_a p_a' = BL q p_a' (1 - p_d): with UM p_a is 10x smaller, and the variance of the row
    sums falls as the closed form says; the mean does not move."""
    rng = np.random.default_rng(5)
    a = rng.uniform(2, 3, (1, 8))
    d = rng.uniform(0.01, 0.03, (1, 3))
    eta, dw = 0.31, 1.0                                       # C = sqrt(eta / (dw 31)) = 0.1
    out = {}
    for um in (False, True):
        cfg = PulseUpdateConfig(desired_bl=31, bl_management=False, update_management=um)
        n = draws(a, d, eta, dw, cfg, 6000, seed=7)
        mean, var, var_row = predicted_moments(a, d, eta, dw, 31, False, um)
        rows = n.sum(2)
        se = np.sqrt(var / n.shape[0])
        assert (np.abs(n.mean(0) - mean) < 4.5 * se).all()
        dev2 = (rows - rows.mean(0)) ** 2                         # the variance estimate's own standard error
        se_var = dev2.std(0) / math.sqrt(len(rows))
        assert (np.abs(rows.var(0) - var_row) < 4.5 * se_var).all(), (rows.var(0), var_row, se_var)
        out[um] = (mean, var_row, se_var)
    np.testing.assert_allclose(out[False][0], out[True][0], rtol=1e-12)   # the same mean
    gap = out[False][1] - out[True][1]                                  # and a predicted, different variance
    assert (gap > 5 * np.hypot(out[True][2], out[False][2])).all(), out  # (smaller: p_a falls 10x), beyond the SE


def test_poisson_counts_keep_the_mean_and_the_rare_event_variance():
    """trains="poisson": each device's up / down counts ~ Poisson(sum_r BL_r q_r) -- the exact mean of the drawn
    trains, variance sum BL q, which exceeds the trains' sum BL q (1 - q) by sum BL q^2 (Le Cam). Many rows, small q."""
    rng = np.random.default_rng(8)
    a, d = rng.uniform(-1, 1, (40, 3)), rng.uniform(-1, 1, (40, 2))
    eta, dw = 0.02, 0.01
    cfg = PulseUpdateConfig(trains="poisson")
    gen = torch.Generator().manual_seed(3)
    ups, downs = [], []
    for _ in range(4000):
        u, dn = coincidences(torch.as_tensor(a), torch.as_tensor(d), eta, dw, cfg, gen)
        ups.append(u.numpy()), downs.append(dn.numpy())
    ups, downs = np.stack(ups), np.stack(downs)
    rate_up, rate_dn, var_tr = np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3))
    for r in range(40):
        bl, ca, cd = aihwkit_scales(a[r], d[r], eta, dw, 31, True, True)
        q = np.outer(np.minimum(np.abs(d[r]) * cd, 1), np.minimum(np.abs(a[r]) * ca, 1))
        s = np.outer(np.sign(d[r]), np.sign(a[r]))
        rate_up += bl * q * (s > 0)
        rate_dn += bl * q * (s < 0)
        var_tr += bl * q * (1 - q)
    np.testing.assert_allclose((rate_up - rate_dn) * dw, eta * d.T @ a, rtol=1e-12)     # the SGD step
    for n, rate in ((ups, rate_up), (downs, rate_dn)):
        assert (np.abs(n.mean(0) - rate) < 4.5 * np.sqrt(rate / len(n))).all()
        np.testing.assert_allclose(n.var(0), rate, rtol=0.12)
    net = ups - downs
    assert (np.abs(net.var(0) - var_tr) <= 0.15 * var_tr + (rate_up + rate_dn - var_tr)).all()  # within Le Cam's excess
    assert np.ptp(net, axis=0).min() > 0


def test_expected_counts_have_no_spread_and_drawn_counts_do():
    a, d = np.array([[0.5, -0.2]]), np.array([[0.3]])
    e = draws(a, d, 0.1, 0.01, PulseUpdateConfig(expected=True), 3)
    s = draws(a, d, 0.1, 0.01, PulseUpdateConfig(), 50)
    assert np.ptp(e, axis=0).max() == 0 and np.ptp(s, axis=0).max() > 0


def test_each_device_applies_the_counts_with_its_own_step_and_asymmetry():
    """Counts through the device model: n_up up pulses of dw(1 + up_down) and n_down down pulses of dw(1 - up_down)
    (no noise, constant step): a zero-mean count pair moves a device by (n_up - n_down) dw + (n_up + n_down) dw up_down,
    the asymmetry's bias that Tiki-Taka answers."""
    from circuits.local_update import apply_counts
    w = torch.full((2, 2), 0.1, dtype=F64)
    arr = AnalogArray({"w": w}, pulsed=PulsedDevice(dw_min=0.01, dw_min_dtod=0.0, dw_min_std=0.0, up_down=0.2), seed=0)
    up = torch.tensor([[3.0, 0.0], [5.0, 2.0]], dtype=F64)
    down = torch.tensor([[3.0, 1.0], [0.0, 2.0]], dtype=F64)
    apply_counts(arr, "w", up, down, None)
    dw = 0.01 * arr.scale["w"]
    expect = 0.1 + up.numpy() * dw * 1.2 - down.numpy() * dw * 0.8
    np.testing.assert_allclose(arr.stored["w"].numpy(), expect, rtol=1e-12)


# ----------------------------------------------------------------------- conv mapping ----

@pytest.mark.parametrize("kind", ["conv", "convT"])
def test_conv_rows_sum_to_the_autograd_weight_gradient(kind):
    g = torch.Generator().manual_seed(0)
    if kind == "conv":
        layer, x = nn.Conv2d(3, 4, 3, stride=2, padding=1).double(), torch.randn(2, 3, 7, 7, generator=g, dtype=F64)
    else:
        layer = nn.ConvTranspose2d(3, 4, 4, stride=2, padding=1, output_padding=1).double()
        x = torch.randn(2, 3, 5, 5, generator=g, dtype=F64)
    y = layer(x)
    cot = torch.randn(y.shape, generator=g, dtype=F64)
    gw, gb = torch.autograd.grad(y, [layer.weight, layer.bias], cot)
    A, D = layer_rows(layer, x, cot)
    torch.testing.assert_close((D.T @ A).reshape(gw.shape), gw, rtol=1e-10, atol=1e-10)
    # end to end through the recorder and the pulses, in the SGD limit, weight and bias on the array
    layers = check_mapped(nn.Sequential(layer), ["0.weight", "0.bias"])
    rec = EdgeRecorder(layers)
    with rec:
        xr = x.clone().requires_grad_(True)
        torch.autograd.grad(layer(xr), xr, cot)
    params = {"0.weight": layer.weight.detach(), "0.bias": layer.bias.detach()}
    arr = AnalogArray(params, pulsed=PulsedDevice(**IDEAL), include_bias=True, seed=1)
    local_update(arr, rec, layers, 2e-4, PulseUpdateConfig(expected=True), None)     # eta = lr / B = 1e-4 (in bounds)
    for n, grad in (("0.weight", gw), ("0.bias", gb)):
        torch.testing.assert_close(arr.stored[n] - params[n], 1e-4 * grad, rtol=0, atol=1e-8)
        assert float(grad.abs().max()) > 1


def test_an_unmapped_layer_is_refused_in_one_line():
    dec = nn.Sequential(nn.Conv1d(2, 3, 3))
    with pytest.raises(ValueError, match="Conv1d, which is not mapped"):
        check_mapped(dec, ["0.weight"])
    with pytest.raises(ValueError, match="groups=1"):
        layer_rows(nn.Conv2d(2, 2, 3, groups=2), torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match="Embedding is not mapped"):
        layer_rows(nn.Embedding(3, 2), torch.zeros(1, 3), torch.zeros(1, 2))


def test_bad_pulse_statistics_and_shapes_are_refused():
    with pytest.raises(ValueError, match="desired_bl must be a positive integer"):
        PulseUpdateConfig(desired_bl=0).validate()
    with pytest.raises(ValueError, match="trains must be one of"):
        PulseUpdateConfig(trains="gauss").validate()
    with pytest.raises(ValueError, match="expected must be true/false"):
        PulseUpdateConfig(expected="yes").validate()
    with pytest.raises(ValueError, match="share R rows"):
        coincidences(torch.zeros(3, 2), torch.zeros(2, 2), 0.1, 0.01, PulseUpdateConfig())


# ------------------------------------------------------------------------- the mode ----

@pytest.fixture(scope="module")
def animal():
    train, _, _ = load_dataset("animal-mnist")
    return train


def cfg(noise, **kw):
    base = dict(batch_size=16, langevin_steps=5, max_batches_per_epoch=3, prior_init_batches=100, sample_grid=0,
                step_size=0.05, precondition=None, seed=5, device="cpu", tau_e=0.0, noise=noise, lr=0.002,
                warm_start="none", grad_clip=None)
    base.update(kw)
    return CircuitTrainConfig(**base)


def linear_image_model(seed=0):
    torch.manual_seed(seed)
    dec = nn.Sequential(nn.Linear(4, 784), nn.Unflatten(1, (1, 28, 28)))
    with torch.no_grad():
        dec[0].weight.mul_(0.1)         # W^T W / sigma^2 ~ 2.6: the Langevin step 0.05 is stable
    model = GenerativeModel(dec, GaussianLikelihood(0.5), latent_dim=4)
    return model, nn.Sequential(nn.Flatten(), MLPEncoder(784, 4, hidden=16))


def test_the_mode_is_registered():
    assert "in-memory-local" in LEARNING_MODES


def test_ideal_pulsed_local_learning_matches_a_plain_sgd_digital_twin(animal):
    """A tiny linear decoder: the local rule with an ideal pulsed device in the SGD limit (expected counts,
    dw_min -> 0, no spread, asymmetry or noise) gives the weights (decoder and encoder) of the same trainer with
    ``optimizer="sgd"`` (plain SGD on the circuit's accumulated theta-gradient: the digital twin), step for step."""
    (m1, e1), (m2, e2) = linear_image_model(), linear_image_model()
    twin = CircuitTrainer(m1, e1, cfg("ideal", optimizer="sgd"))      # TrainConfig.optimizer: the digital twin
    local = CircuitTrainer(m2, e2, cfg({"preset": "ideal", "sources": [{"type": "pulsed", **IDEAL}]},
                                       learning="in-memory-local", pulse_update={"expected": True}))
    w0 = m1.decoder[0].weight.detach().clone()
    twin.fit(animal, progress=False)
    local.fit(animal, progress=False)
    moved = float((m1.decoder[0].weight.detach() - w0).abs().max())
    assert moved > 1e-3
    for (n, a), (_, b) in zip([*m1.named_parameters(), *e1.named_parameters()],
                              [*m2.named_parameters(), *e2.named_parameters()]):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5 * moved, msg=lambda m, n=n: f"{n}: {m}")


def test_local_learning_on_a_realistic_device_lowers_the_loss(animal, tmp_path):
    """aihwkit's PulsedDevice defaults (dw_min 0.001, 30 % device-to-device and cycle-to-cycle spread, bounds +-0.6)
    with its spreads of the bounds and asymmetry, drawn pulse trains (BL 31, both managements): the loss falls."""
    model, enc = tiny_image_model(8, 0, 0.3)
    from circuits.noise.arrays import AIHWKIT_PULSED_SPREADS
    c = cfg({"preset": "ideal", "sources": [{"type": "pulsed", **AIHWKIT_PULSED_SPREADS}]}, learning="in-memory-local",
            max_batches_per_epoch=12, batch_size=32, lr=0.002, warm_start="forward", prior_init_batches=2)
    tr = CircuitTrainer(model, enc, c, out_dir=tmp_path)
    before = {n: p.detach().clone() for n, p in model.decoder.named_parameters()}
    tr.fit(animal, progress=False)
    import json
    losses = [json.loads(line)["loss_per_dim"] for line in open(tmp_path / "metrics.jsonl") if "loss_per_dim" in line]
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses
    assert tr.array.writes == 12
    w = model.decoder[2].weight.detach()
    assert float((w - before["2.weight"]).norm() / before["2.weight"].norm()) > 0.02


def test_bad_mode_options_are_refused_in_one_line():
    with pytest.raises(ValueError, match="pulse_update configures learning='in-memory-local' only"):
        cfg("ideal", pulse_update={"expected": True}).validate()
    with pytest.raises(ValueError, match="unknown fields"):
        cfg("ideal", learning="in-memory-local", pulse_update={"bl": 3}).validate()
    with pytest.raises(ValueError, match="online=True is not supported"):
        cfg("ideal", learning="in-memory-local", online=True, tau_theta=1.0).validate()
    model, enc = linear_image_model()
    with pytest.raises(ValueError, match="feedback_mismatch array is not supported"):
        CircuitTrainer(model, enc, cfg({"preset": "ideal", "sources": [{"type": "feedback_mismatch"}]},
                                       learning="in-memory-local"))


@pytest.mark.parametrize("transfer", [0, 1])
def test_local_learning_resumes_bit_for_bit(animal, tmp_path, transfer):
    """The array, its clock, the pulse generator (and with Tiki-Taka the fast array and its column pointer) are in
    the checkpoint: a run split in two epochs ends where the whole run ends (drawn trains, aihwkit's device)."""
    pu = {"transfer_every": 1, "transfer_lr": 50.0} if transfer else None
    c = cfg({"preset": "ideal", "sources": [{"type": "pulsed"}]}, learning="in-memory-local", max_batches_per_epoch=2,
            epochs=2, pulse_update=pu)
    m1, e1 = linear_image_model()
    whole = CircuitTrainer(m1, e1, c, out_dir=tmp_path / "whole")
    whole.fit(animal, progress=False)
    m2, e2 = linear_image_model()
    CircuitTrainer(m2, e2, c, out_dir=tmp_path / "split").fit(animal, epochs=1, progress=False)
    m3, e3 = linear_image_model(seed=9)
    again = CircuitTrainer(m3, e3, c, out_dir=tmp_path / "split")
    again.fit(animal, resume=True, progress=False)
    w0 = linear_image_model()[0].decoder[0].weight.detach()
    assert not torch.equal(whole.array.stored["0.weight"], w0)        # the pulses wrote something
    for n in whole.array.names:
        assert torch.equal(again.array.stored[n], whole.array.stored[n])
    assert again.array.clock == whole.array.clock
    for (n, a), (_, b) in zip(m1.named_parameters(), m3.named_parameters()):
        assert torch.equal(a, b), n
    if transfer:
        assert torch.equal(again.local[3].fast.stored["0.weight"], whole.local[3].fast.stored["0.weight"])
        assert again.local[3].column == whole.local[3].column == {"0.weight": 4 % 4}


# ------------------------------------------------------------------------------ Tiki-Taka ----

def test_transfer_writes_the_fast_columns_onto_the_slow_array_in_turn():
    """Tiki-Taka (SGD limit: expected counts, ideal device): every transfer_every-th presentation writes
    C[:, j] += transfer_lr A[:, j] for n_reads_per_transfer consecutive columns j, cyclically; nothing else moves."""
    from circuits.local_update import Transfer
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 4, generator=g, dtype=F64) * 0.1
    slow = AnalogArray({"w": w}, pulsed=PulsedDevice(**IDEAL), seed=0)
    tt = Transfer(slow, seed=1)
    assert torch.equal(tt.fast.stored["w"], torch.zeros_like(w))
    A = torch.randn(3, 4, generator=g, dtype=F64) * 0.05
    tt.fast.stored["w"] = A.clone()
    cfg = PulseUpdateConfig(expected=True, transfer_every=2, transfer_lr=0.5, scale_transfer_lr=False,
                            n_reads_per_transfer=3)
    tt.step(slow, cfg, lr=123.0, gen=None)
    assert torch.equal(slow.stored["w"], w)                              # not due yet
    tt.step(slow, cfg, lr=123.0, gen=None)
    want = w.clone()
    want[:, :3] += 0.5 * A[:, :3]
    torch.testing.assert_close(slow.stored["w"], want, rtol=0, atol=1e-7)
    tt.step(slow, cfg, lr=123.0, gen=None), tt.step(slow, cfg, lr=123.0, gen=None)
    want[:, 3] += 0.5 * A[:, 3]                                          # then columns 3, 0, 1
    want[:, :2] += 0.5 * A[:, :2]
    torch.testing.assert_close(slow.stored["w"], want, rtol=0, atol=1e-7)
    torch.testing.assert_close(tt.fast.stored["w"], A)                  # A is not reset
    # scale_transfer_lr: eta = transfer_lr x lr
    slow2 = AnalogArray({"w": w}, pulsed=PulsedDevice(**IDEAL), seed=0)
    tt2 = Transfer(slow2, seed=1)
    tt2.fast.stored["w"] = A.clone()
    tt2.step(slow2, PulseUpdateConfig(expected=True, transfer_every=1, transfer_lr=0.5), lr=0.1, gen=None)
    torch.testing.assert_close(slow2.stored["w"][:, 0], w[:, 0] + 0.05 * A[:, 0], rtol=0, atol=1e-7)


def test_with_transfer_the_trainer_learns_on_the_fast_array_and_reads_the_slow_one(animal):
    """One batch, SGD limit: the fast array holds the digital twin's SGD step, the circuit's weights (the slow array)
    moved only in column 0, by transfer_lr times that step's column."""
    (m1, e1), (m2, e2) = linear_image_model(), linear_image_model()
    twin = CircuitTrainer(m1, e1, cfg("ideal", max_batches_per_epoch=1))
    twin.optimizer = torch.optim.SGD(list(m1.parameters()), lr=0.002)
    pu = {"expected": True, "transfer_every": 1, "transfer_lr": 0.7, "scale_transfer_lr": False}
    local = CircuitTrainer(m2, e2, cfg({"preset": "ideal", "sources": [{"type": "pulsed", **IDEAL}]},
                                       learning="in-memory-local", pulse_update=pu, max_batches_per_epoch=1))
    w0 = m1.decoder[0].weight.detach().clone()
    twin.fit(animal, progress=False)
    local.fit(animal, progress=False)
    step = m1.decoder[0].weight.detach() - w0
    fast = local.local[3].fast.stored["0.weight"]
    torch.testing.assert_close(fast, step, rtol=0, atol=1e-5 * float(step.abs().max()))
    want = w0.clone()
    want[:, 0] += 0.7 * step[:, 0]
    torch.testing.assert_close(m2.decoder[0].weight.detach(), want, rtol=0, atol=1e-5 * float(step.abs().max()))
    assert local.local[3].column["0.weight"] == 1


def test_bad_transfer_options_are_refused_in_one_line():
    with pytest.raises(ValueError, match="transfer_every must be an integer >= 0"):
        PulseUpdateConfig(transfer_every=-1).validate()
    with pytest.raises(ValueError, match="transfer_lr must be a positive finite number"):
        PulseUpdateConfig(transfer_lr=0.0).validate()
    with pytest.raises(ValueError, match="n_reads_per_transfer must be an integer >= 1"):
        PulseUpdateConfig(n_reads_per_transfer=0).validate()
    with pytest.raises(ValueError, match="chunk must be an integer >= 1"):
        PulseUpdateConfig(chunk=0.5).validate()


def test_leaving_the_array_weights_autograd_gradients_out_changes_nothing(animal, monkeypatch):
    """``CircuitTrainer.skip_local_weight_grads`` (the speed path): the presentation's parameter pass leaves the
    array-covered weights out (the learning run's parameter list holds the biases and sigma only -- recorded), and
    the weights after 3 batches of drawn pulse trains equal those with every autograd gradient computed: the local
    rule reads d at each layer's output either way."""
    import circuits.run as run_mod
    from problems import tiny_image_model

    seen = []
    orig = run_mod.CircuitRun._init_learning

    def spy(self):
        orig(self)
        seen.append(sorted(tuple(p.shape) for p in self.learn_params))
    monkeypatch.setattr(run_mod.CircuitRun, "_init_learning", spy)
    out = {}
    for skip in (True, False):
        model, enc = tiny_image_model(8, 0, 0.3, learn_sigma=True)
        tr = CircuitTrainer(model, enc, cfg({"preset": "ideal", "sources": [{"type": "pulsed", "dw_min_dtod": 0.0}]},
                                            learning="in-memory-local", lr=0.002))
        tr.skip_local_weight_grads = skip
        assert bool(tr.local_weights_without_grad()) == skip
        seen.clear()
        tr.fit(animal, progress=False)
        dims = {len(s) for shapes in seen for s in shapes}
        assert (2 in dims) == (not skip), seen[0]          # weight matrices in the parameter pass only without skip
        out[skip] = {n: p.detach().clone() for n, p in model.named_parameters()}
        assert all(p.requires_grad for p in model.parameters())      # restored after each presentation
    for n in out[True]:
        torch.testing.assert_close(out[True][n], out[False][n], rtol=0, atol=1e-6, msg=n)

