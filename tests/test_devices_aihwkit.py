"""Device-model gaps closed against aihwkit (issue 17, section 1): accumulated 1/f conductance noise, noisy transposed
reads, pulsed devices' device-to-device spreads of bounds and asymmetry, and the differential-pair mapping.

Every expectation is a closed form written here independently of the code (numpy / explicit sums):

* 1/f (aihwkit ``PCMLikeNoiseModel.apply_drift_noise_to_conductance``): g = g_d + |g_d| Q_s sqrt(ln((t + t_read) /
  (2 t_read))) xi, Q_s = min(0.0088 / (|g| / g_max)^0.65, 0.2), t = age + t0, t_read = 250 ns;
* transposed read: v_j = sum_i (w_ij + s xi_ij) e_i has std s ||e|| per input j (Linear), s ||e_patch(j)|| (conv);
* dtod: bounds w_max (1 + s xi), asymmetry (step_up - step_down) / (2 dw_min) = up_down_dtod xi (at up_down = 0);
* pair: w = (g+ - g-) w_max / (1 - g_min); the two programming errors add:
  Var = (s_+^2 + s_-^2) (w_max / (1 - g_min))^2.
"""
import math

import numpy as np
import pytest
import torch
from torch import nn

from circuits import Circuit, CircuitConfig
from circuits.modes import deployed_model, program_array
from circuits.noise import NoiseModel
from circuits.noise.arrays import (AIHWKIT_PULSED_SPREADS, AnalogArray, PulsedDevice, ReadNoiseHooks, _Drift,
                                   _Programming, pair_conductances, pcm_accumulated_noise_std, pcm_programming_std,
                                   transposed_read_noise_std)
from circuits.run import CircuitRun
from circuits.timescales import derive_seed
from neuro_lpc import GaussianLikelihood, GenerativeModel

F64 = torch.float64
N = 200_000
T_READ = 250e-9
pytestmark = pytest.mark.usefixtures("single_thread")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _sign_weights(shape, seed=0):
    """+-1 weights: every |w| = w_max, so r = 1 and Q_s = 0.0088 on every device."""
    return torch.where(torch.rand(shape, generator=_gen(seed), dtype=F64) < 0.5, -1.0, 1.0).to(F64)


def _qs_numpy(r):
    return np.minimum(0.0088 / np.maximum(np.abs(r) ** 0.65, 1e-3), 0.2)


# ====================================================================== 1/f noise ====

def test_accumulated_noise_std_is_aihwkits_closed_form():
    r = torch.tensor([1e-9, 1e-3, 0.05, 0.3, 1.0], dtype=F64)
    for t in (20.0, 3620.0, 86_420.0, 2.6e6):
        expected = _qs_numpy(r.numpy()) * math.sqrt(math.log((t + T_READ) / (2 * T_READ)))
        np.testing.assert_allclose(pcm_accumulated_noise_std(r, t).numpy(), expected, rtol=1e-12)
    assert float(pcm_accumulated_noise_std(torch.tensor(1e-9, dtype=F64), 20.0)) == pytest.approx(
        0.2 * math.sqrt(math.log((20 + T_READ) / (2 * T_READ))))           # Q_s capped at 0.2 for tiny conductances
    assert float(pcm_accumulated_noise_std(torch.tensor(1.0, dtype=F64), T_READ)) == 0.0   # ln 1 = 0


@pytest.mark.parametrize("age", [0.0, 3600.0, 86_400.0, 2.6e6])
def test_one_over_f_std_grows_as_sqrt_ln_t_and_scales_with_the_drifted_conductance(age):
    w = _sign_weights((400, 500))
    nu = 0.05
    arr = AnalogArray({"w": w}, drift=_Drift(nu=nu, one_over_f=True), seed=1)
    arr.advance(age)
    t = age + 20.0
    f = (t / 20.0) ** (-nu)
    dev = (arr.read("w") - w * f) / (w.abs() * f)                          # = Q_s sqrt(ln(...)) xi
    expected = 0.0088 * math.sqrt(math.log((t + T_READ) / (2 * T_READ)))
    assert float(dev.std()) == pytest.approx(expected, rel=0.01)
    assert abs(float(dev.mean())) < 5 * expected / math.sqrt(dev.numel())


def test_t_read_of_the_drift_source_sets_the_1_over_f_time_scale():
    """Through the source (``from_noise``): t_read = 1 ms gives Q_s sqrt(ln((t + 1e-3) / 2e-3)) at t = t_start + t0."""
    w = _sign_weights((300, 400), seed=21)
    for t_read in (1e-3, T_READ):
        src = NoiseModel([{"type": "drift", "nu": 0.0, "one_over_f": True, "t_read": t_read, "t_start": 100.0}])
        arr = AnalogArray.from_noise({"w": w}, src.sources, seed=3)
        dev = (arr.read("w") - w) / w.abs()
        assert float(dev.std()) == pytest.approx(0.0088 * math.sqrt(math.log((120 + t_read) / (2 * t_read))), rel=0.01)


def test_one_over_f_is_zero_where_the_formula_is_zero_and_off_without_the_option():
    w = torch.randn(30, 40, dtype=F64, generator=_gen(2))
    at_t_read = AnalogArray({"w": w}, drift=_Drift(t0=T_READ, nu=0.0, one_over_f=True))   # t = age + t0 = t_read
    assert torch.equal(at_t_read.read("w"), w)
    at_t_read.advance(1.0)
    assert not torch.equal(at_t_read.read("w"), w)
    off = AnalogArray({"w": w}, drift=_Drift(nu=0.0), clock=2.6e6)
    assert torch.equal(off.read("w"), w) and off.acc_xi == {}


def test_one_over_f_realisation_is_held_between_writes_and_redrawn_at_each_write():
    w = _sign_weights((200, 200), seed=3)
    arr = AnalogArray({"w": w}, drift=_Drift(nu=0.0, one_over_f=True), seed=4)
    a = arr.read("w", 10.0) - w
    b = arr.read("w", 1e5) - w
    assert float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]) > 0.999   # one realisation, grown
    assert float(b.std() / a.std()) == pytest.approx(math.sqrt(math.log((1e5 + 20 + T_READ) / (2 * T_READ))
                                                               / math.log((30 + T_READ) / (2 * T_READ))), rel=1e-6)
    arr.program({"w": w}, None)
    c = arr.read("w", 10.0) - w
    assert abs(float(torch.corrcoef(torch.stack([a.flatten(), c.flatten()]))[0, 1])) < 0.02   # a new write: fresh xi


def test_one_over_f_reaches_the_deployed_models_output():
    """Programming the linear decoder and deploying it 1 h later: its output deviates from W z by
    sum_j w_ij Q_s sqrt(ln(...)) xi_ij z_j (|w_ij| = w_max: Q_s = 0.0088); with one-hot z = e_j the output's spread over
    the units is 0.0088 sqrt(ln((3600 + 20 + t_read) / (2 t_read))) w_max, and 0 with the option off."""
    dec = nn.Linear(4, 5000, bias=False).double()
    with torch.no_grad():
        dec.weight.copy_(_sign_weights((5000, 4), seed=5) * 0.3)
    model = GenerativeModel(dec, GaussianLikelihood(0.5).double())
    z = torch.eye(4, dtype=F64)
    for on in (True, False):
        noise = NoiseModel([{"type": "drift", "nu": 0.0, "one_over_f": on}])
        out = deployed_model(model, program_array(model, noise, seed=0, t_since_programming=3600.0))
        dev = (out.decoder(z) - model.decoder(z)).detach()
        expected = 0.0088 * math.sqrt(math.log((3620 + T_READ) / (2 * T_READ))) * 0.3 if on else 0.0
        assert float(dev.std()) == pytest.approx(expected, rel=0.03, abs=1e-15)


@pytest.mark.parametrize("kw, msg", [({"one_over_f": "yes"}, "one_over_f must be one of"),
                                     ({"t_read": 0.0}, "t_read must be positive"),
                                     ({"t_read": float("nan")}, "t_read must be a finite number")])
def test_bad_one_over_f_settings_are_refused(kw, msg):
    with pytest.raises(ValueError, match=msg):
        NoiseModel([{"type": "drift", **kw}])


# ================================================================= transposed reads ====

def _linear_circuit(reads, n=300, d=20, std=0.02, T=None, extra=()):
    dec = nn.Linear(d, n).double()
    model = GenerativeModel(dec, GaussianLikelihood(0.5).double())
    src = {"type": "weight_read", "std": std, "reads": reads}
    cfg = CircuitConfig(dt=1e-4, tau_e=0.0, temperature=T, noise={"sources": [src, *extra], "temperature": T})
    return model, Circuit(model, cfg)


@pytest.mark.parametrize("kernel, extra", [("linear", ()), ("autograd", ()),
                                           ("autograd", ({"type": "feedback_mismatch", "std": 0.1},))])
def test_transposed_read_has_the_closed_form_variance_and_is_off_by_default(kernel, extra):
    """v = J^T eps read from the array: mean W_fb^T eps, std sigma_r ||eps|| per input unit and chain, a fresh draw per
    read; "forward" leaves it exact (the forward gets its noise instead), "both" noises both reads. With feedback
    mismatch the feedback is a separate read of its own weights W_fb, with the same noise law."""
    B, n, d = 8, 300, 20
    eps = torch.randn(B, n, dtype=F64, generator=_gen(6))
    z = torch.randn(B, d, dtype=F64, generator=_gen(7))
    for reads in ("backward", "both", "forward"):
        model, c = _linear_circuit(reads, extra=extra)
        W = c.effective_weights()[1]["weight"].detach()
        assert torch.equal(W, model.decoder.weight.detach()) != bool(extra)
        sigma = 0.02 * float(model.decoder.weight.detach().abs().max())   # std * w_max of the programmed weights
        run = CircuitRun(c, torch.zeros(B, n, dtype=F64), z, _gen(0), kernel=kernel)
        assert run.kernel == kernel
        run.weights.step(0.0, run.gen)
        draws = []
        for _ in range(400):
            mu = run.kernel_impl.forward(z)
            draws.append(run.kernel_impl.feedback(eps).detach())
            fwd_dev = float((mu - model.decoder(z).detach()).abs().max())
            assert (fwd_dev > 0) == (reads != "backward")                   # the forward read's own noise
        v = torch.stack(draws)                                               # (draws, B, d)
        if reads == "forward":
            assert float((v - eps @ W).abs().max()) < 1e-12
            continue
        xi = (v - eps @ W) / (sigma * eps.norm(dim=1, keepdim=True))
        assert float(xi.std()) == pytest.approx(1.0, abs=0.02) and abs(float(xi.mean())) < 0.02
        assert abs(float(torch.corrcoef(torch.stack([xi[0].flatten(), xi[1].flatten()]))[0, 1])) < 0.05   # per read


def test_transposed_read_of_a_convolution_has_the_patch_norm_std():
    """ConvTranspose2d: the backward read v_j = sum_{i <- j} (w + s xi) g_i has std s sqrt(sum_{i <- j} g_i^2), the
    sum over the outputs input j feeds: an explicit loop over the kernel taps (no autograd) is the oracle."""
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(3, 2, 4, 2, 1).double()
    x = torch.randn(2, 3, 5, 5, dtype=F64, requires_grad=True)
    g = torch.randn(2, 2, 10, 10, dtype=F64)
    sq = torch.zeros(2, 3, 5, 5, dtype=F64)
    for a in range(5):
        for b in range(5):
            for ki in range(4):
                for kj in range(4):
                    i, j = 2 * a - 1 + ki, 2 * b - 1 + kj                 # out = in * stride - padding + k
                    if 0 <= i < 10 and 0 <= j < 10:
                        sq[:, :, a, b] += (g[:, :, i, j] ** 2).sum(1, keepdim=True).expand(2, 3)
    std = transposed_read_noise_std(layer, g, x.shape, 0.1)
    torch.testing.assert_close(std, 0.1 * sq.sqrt())
    hooks = ReadNoiseHooks(layer, {"weight": 0.1}, _gen(1), forward=False, backward=True)
    clean = torch.autograd.grad(layer(x), x, g)[0]
    devs = []
    for _ in range(300):
        with hooks:
            y = layer(x)
        torch.testing.assert_close(y, layer(x))                              # the forward read stays exact
        devs.append((torch.autograd.grad(y, x, g)[0] - clean) / (0.1 * sq.sqrt()))
    d = torch.stack(devs)
    assert float(d.std()) == pytest.approx(1.0, abs=0.03) and abs(float(d.mean())) < 0.03


@pytest.mark.parametrize("reads", ["forward", "backward", "both"])
def test_read_noise_reaches_the_value_units_as_predicted(reads):
    """One step at T = 0 with adiabatic error units from one z0 shared by all chains: z1 = z0 + a_z (J^T eps -
    z0 / s_p^2) + (noise), so Var(z1_j) across chains is the read noise's: backward a_z^2 s^2 ||eps||^2 (eps exact:
    prec (x - W z0 - b)); forward a_z^2 prec^2 s^2 ||z0||^2 sum_i W_ij^2 (the forward noise through the exact
    feedback); both their sum."""
    B, n, d = 20_000, 50, 6
    model, c = _linear_circuit(reads, n=n, d=d, std=0.05, T=0.0)
    W, b = model.decoder.weight.detach(), model.decoder.bias.detach()
    s = 0.05 * float(W.abs().max())
    z0 = torch.randn(1, d, dtype=F64, generator=_gen(8)).expand(B, d).contiguous()
    x = torch.randn(1, n, dtype=F64, generator=_gen(9)).expand(B, n).contiguous()
    run = CircuitRun(c, x, z0.clone(), _gen(10))
    run.kernel_impl.step()
    a_z, prec = run.az, 1 / 0.25
    eps = prec * (x[0] - W @ z0[0] - b)
    var = torch.zeros(d, dtype=F64)
    if reads != "forward":
        var += (a_z * s * eps.norm()) ** 2
    if reads != "backward":
        var += (a_z * prec * s * z0[0].norm()) ** 2 * (W ** 2).sum(0)
    torch.testing.assert_close(run.z.var(0), var, rtol=0.04, atol=0)
    mean = z0[0] + a_z * (eps @ W - z0[0] / model.prior_std ** 2)
    assert float(((run.z.mean(0) - mean) / var.sqrt()).abs().max()) < 5 / math.sqrt(B)


def test_bad_reads_are_refused():
    with pytest.raises(ValueError, match="reads must be one of"):
        NoiseModel([{"type": "weight_read", "reads": "sideways"}])
    with pytest.raises(ValueError, match="reads must be one of"):
        AnalogArray({"w": torch.ones(2, 2)}, read_std=0.1, reads="transposed")
    with pytest.raises(ValueError, match="direction must be 'forward' or 'backward'"):
        AnalogArray({"w": torch.ones(2, 2)}, read_std=0.1).read_sigmas("both")


# ====================================================================== dtod spreads ====

def test_pulsed_bounds_and_asymmetry_spread_across_devices_as_the_parameters():
    dev = PulsedDevice(dw_min=0.01, dw_min_dtod=0.0, dw_min_std=0.0, max_pulses=None,
                       **AIHWKIT_PULSED_SPREADS).validate()
    arr = AnalogArray({"w": torch.randn(400, 500, dtype=F64, generator=_gen(11))}, pulsed=dev, seed=2)
    hi, lo = arr.w_hi["w"], arr.w_lo["w"]
    assert float(hi.mean()) == pytest.approx(0.6, rel=0.01) and float(hi.std()) == pytest.approx(0.6 * 0.3, rel=0.02)
    assert float(lo.mean()) == pytest.approx(-0.6, rel=0.01) and float(lo.std()) == pytest.approx(0.6 * 0.3, rel=0.02)
    assert abs(float(torch.corrcoef(torch.stack([hi.flatten(), lo.flatten()]))[0, 1])) < 0.01   # independent draws
    asym = (arr.step_up["w"] - arr.step_down["w"]) / (2 * 0.01)           # = r = up_down_dtod xi
    assert float(asym.std()) == pytest.approx(0.01, rel=0.02) and abs(float(asym.mean())) < 5e-4
    # saturating pulses leave every device at its own bound
    sc = arr.scale["w"]
    arr.pulse_update({"w": torch.full_like(arr.stored["w"], 100.0 * sc)}, None)
    torch.testing.assert_close(arr.stored["w"] / sc, hi)


def test_zero_spreads_reproduce_the_devices_of_before_draw_for_draw():
    w = torch.randn(30, 40, dtype=F64, generator=_gen(12))
    new = AnalogArray({"w": w}, pulsed=PulsedDevice(up_down=0.1).validate(), seed=5)
    assert new.w_hi == {} and new.w_lo == {}
    d2d = (1 + 0.3 * torch.randn(w.shape, generator=_gen(derive_seed(5, 11)), dtype=F64)).clamp(min=0.05)
    torch.testing.assert_close(new.step_up["w"], 0.001 * 1.1 * d2d, rtol=0, atol=0)
    desired = {"w": 0.01 * torch.randn(w.shape, dtype=F64, generator=_gen(13))}
    a = new.pulse_update(desired, _gen(14))["w"]
    spread = AnalogArray({"w": w}, pulsed=PulsedDevice(up_down=0.1, up_down_dtod=0.01).validate(), seed=5)
    assert not torch.equal(spread.step_up["w"], new.step_up["w"])
    assert torch.equal(a, AnalogArray({"w": w}, pulsed=PulsedDevice(up_down=0.1).validate(), seed=5)
                       .pulse_update(desired, _gen(14))["w"])


def test_pulsed_bound_spread_reaches_the_circuits_prediction():
    """A circuit reading an array whose devices were pulsed to saturation predicts g(e_j) = column j of the
    per-device bounds (times the device scale): its spread over the outputs is w_max w_max_dtod scale."""
    dec = nn.Linear(3, 4000, bias=False).double()
    model = GenerativeModel(dec, GaussianLikelihood(0.5).double())
    noise = {"sources": [{"type": "pulsed", "w_max_dtod": 0.3, "dw_min_std": 0.0, "max_pulses": None}]}
    arr = AnalogArray.from_noise(dict(dec.named_parameters()), NoiseModel.resolve(noise).sources, seed=3)
    sc = arr.scale["weight"]
    arr.pulse_update({"weight": torch.full_like(arr.stored["weight"], 100.0 * sc)}, None)
    c = Circuit(model, CircuitConfig(dt=1e-8, noise=noise), array=arr)
    z = torch.eye(3, dtype=F64)
    mu = CircuitRun(c, torch.zeros(3, 4000, dtype=F64), z, _gen(0)).kernel_impl.readout()
    assert float(mu.std(1).mean()) == pytest.approx(0.6 * 0.3 * sc, rel=0.04)
    assert float(mu.mean()) == pytest.approx(0.6 * sc, rel=0.01)


@pytest.mark.parametrize("kw", [{"w_max_dtod": -0.1}, {"w_min_dtod": float("inf")}, {"up_down_dtod": "0.1"}])
def test_bad_spreads_are_refused(kw):
    name = next(iter(kw))
    with pytest.raises(ValueError, match=f"noise source 'pulsed': {name} must be"):
        NoiseModel([{"type": "pulsed", **kw}])


# ====================================================================== differential pair ====

def test_pair_mapping_is_aihwkits_single_pair_converter():
    w = torch.tensor([[-2.0, -0.5, 0.0, 1.0, 2.0]], dtype=F64)
    gp, gm = pair_conductances(w, 2.0, 0.1)
    torch.testing.assert_close(gp, torch.tensor([[0.1, 0.1, 0.1, 0.55, 1.0]], dtype=F64))
    torch.testing.assert_close(gm, torch.tensor([[1.0, 0.325, 0.1, 0.1, 0.1]], dtype=F64))
    torch.testing.assert_close((gp - gm) * 2.0 / 0.9, w)
    assert float(gp.max()) <= 1.0 and float(gm.max()) <= 1.0                # clamped at g_max


def test_pair_noise_folds_into_the_signed_model_with_the_two_variances_added():
    """Constant programming std s (units of g_max) on each conductance, g_min = 0.5 (no clip at 0): the pair's weight
    error is s (xi+ - xi-) w_max / (1 - g_min), i.e. the signed model with std s sqrt(2) / (1 - g_min); the PCM
    polynomial adds sigma(g+)^2 + sigma(g-)^2."""
    w = torch.randn(300, 400, dtype=F64, generator=_gen(15))
    wmax = float(w.abs().max())
    s, gmin = 0.02, 0.5
    pair = AnalogArray({"w": w}, programming=_Programming(model="constant", std=s), mapping="pair", g_min=gmin)
    pair.program({"w": w}, _gen(16))
    e = (pair.read("w") - w) / wmax
    assert float(e.std()) == pytest.approx(s * math.sqrt(2) / (1 - gmin), rel=0.01) and abs(float(e.mean())) < 1e-3
    signed = AnalogArray({"w": w}, programming=_Programming(model="constant", std=s * math.sqrt(2) / (1 - gmin)))
    signed.program({"w": w}, _gen(16))
    assert float(((signed.read("w") - w) / wmax).std()) == pytest.approx(float(e.std()), rel=0.01)
    pcm = AnalogArray({"w": w}, programming=_Programming(model="pcm"), mapping="pair", g_min=gmin)
    pcm.program({"w": w}, _gen(17))
    gp, gm = pair_conductances(w, wmax, gmin)
    sd = torch.sqrt(pcm_programming_std(gp) ** 2 + pcm_programming_std(gm) ** 2) * wmax / (1 - gmin)
    xi = (pcm.read("w") - w) / sd
    assert float(xi.std()) == pytest.approx(1.0, rel=0.01)


def test_pair_clips_each_conductance_at_zero():
    """g_min = 0: the idle device of each pair sits at 0; its programming error s xi is clipped to max(s xi, 0), a
    half-normal: the weight is biased towards 0 by s / sqrt(2 pi) w_max and its variance is
    s^2 (1 + 1/2 - 1/(2 pi)) w_max^2 (the active device far from 0 unclipped)."""
    w = torch.full((400, 500), 1.0, dtype=F64)
    w[0, 0] = 2.0                                                           # w_max = 2: g+ = 0.5, g- = 0
    s = 0.03
    arr = AnalogArray({"w": w}, programming=_Programming(model="constant", std=s), mapping="pair")
    arr.program({"w": w}, _gen(18))
    assert float(arr.pair["w"].min()) >= 0.0
    idle = arr.pair["w"][1]
    assert float((idle == 0).double().mean()) == pytest.approx(0.5, abs=0.01)
    e = (arr.read("w") - w)[1:] / 2.0
    assert float(e.mean()) == pytest.approx(-s / math.sqrt(2 * math.pi), rel=0.02)
    assert float(e.var()) == pytest.approx(s ** 2 * (1.5 - 1 / (2 * math.pi)), rel=0.02)


def test_pair_drift_and_one_over_f_act_on_each_conductance():
    """Each conductance drifts with its own nu and carries its own 1/f noise: with nu = 0.05 and g_min = 0.5, a read
    at age t is (g+ f - g- f) w_max / (1 - g_min) = w f in the mean, and the 1/f noise of both devices adds:
    Var = f^2 L (g+^2 Q_s(g+)^2 + g-^2 Q_s(g-)^2) (w_max / (1 - g_min))^2, L = ln((t + t_read) / (2 t_read))."""
    w = torch.randn(300, 400, dtype=F64, generator=_gen(19))
    wmax, gmin, nu, age = float(w.abs().max()), 0.5, 0.05, 3600.0
    arr = AnalogArray({"w": w}, drift=_Drift(nu=nu, one_over_f=True), mapping="pair", g_min=gmin,
                      programming=_Programming(model="constant", std=0.0), clock=age, seed=7)
    arr.program({"w": w}, None, at=0.0)
    f, t = ((age + 20) / 20) ** (-nu), age + 20
    gp, gm = pair_conductances(w, wmax, gmin)
    qs = lambda g: torch.from_numpy(_qs_numpy(g.numpy()))                     # noqa: E731
    sd = f * math.sqrt(math.log((t + T_READ) / (2 * T_READ))) * torch.sqrt((gp * qs(gp)) ** 2 + (gm * qs(gm)) ** 2)
    xi = (arr.read("w") - w * f) / (sd * wmax / (1 - gmin))
    assert float(xi.std()) == pytest.approx(1.0, rel=0.01) and abs(float(xi.mean())) < 0.01


def test_pair_mapping_reaches_the_circuits_prediction():
    """A circuit on a pair-mapped array (constant std s, g_min = 0.5) predicts g(e_j) = column j of the pair's
    weights: its deviation from W e_j has std s sqrt(2) w_max / (1 - g_min); the signed mapping gives s w_max."""
    dec = nn.Linear(3, 6000, bias=False).double()
    model = GenerativeModel(dec, GaussianLikelihood(0.5).double())
    wmax = float(dec.weight.detach().abs().max())
    for mapping, factor in (("pair", math.sqrt(2) / 0.5), ("signed", 1.0)):
        noise = {"sources": [{"type": "weight_programming", "model": "constant", "std": 0.02, "mapping": mapping,
                              "g_min": 0.5}]}
        c = Circuit(model, CircuitConfig(dt=1e-8, noise=noise))
        z = torch.eye(3, dtype=F64)
        run = CircuitRun(c, torch.zeros(3, 6000, dtype=F64), z, _gen(0))
        dev = run.kernel_impl.readout() - model.decoder(z).detach()
        assert float(dev.std()) == pytest.approx(0.02 * factor * wmax, rel=0.03)


def test_bad_pair_settings_are_refused():
    with pytest.raises(ValueError, match="mapping must be one of"):
        NoiseModel([{"type": "weight_programming", "mapping": "quad"}])
    with pytest.raises(ValueError, match="g_min must be < 1"):
        NoiseModel([{"type": "weight_programming", "g_min": 1.0}])
    with pytest.raises(ValueError, match="mapping='pair' does not take pulsed writes"):
        AnalogArray({"w": torch.ones(2, 2)}, pulsed=PulsedDevice().validate(), mapping="pair")
    with pytest.raises(ValueError, match="g_min must be a number in"):
        AnalogArray({"w": torch.ones(2, 2)}, mapping="pair", g_min=-0.1)


def test_one_over_f_is_redrawn_only_for_pulsed_devices_and_survives_a_checkpoint():
    w = torch.randn(50, 60, dtype=F64, generator=_gen(20))
    dev = PulsedDevice(dw_min=1e-4, dw_min_std=0.0, max_pulses=None).validate()
    arr = AnalogArray({"w": w}, drift=_Drift(nu=0.0, one_over_f=True), pulsed=dev, seed=8)
    before = arr.acc_xi["w"].clone()
    desired = torch.zeros_like(w)
    desired[:10] = 0.01 * arr.scale["w"]
    arr.advance(5.0)
    arr.pulse_update({"w": desired}, _gen(21))
    assert torch.equal(arr.acc_xi["w"][10:], before[10:]) and not (arr.acc_xi["w"][:10] == before[:10]).any()
    twin = AnalogArray({"w": w}, drift=_Drift(nu=0.0, one_over_f=True), pulsed=dev, seed=99)
    twin.load_state_dict(arr.state_dict())
    assert torch.equal(twin.read("w", 3.0), arr.read("w", 3.0))
    arr.pulse_update({"w": desired}, _gen(22))
    twin.pulse_update({"w": desired}, _gen(22))
    assert torch.equal(twin.acc_xi["w"], arr.acc_xi["w"])                    # the 1/f stream resumes where it was


def test_backward_reads_reach_the_learning_runs_feedback():
    """A learning run (autograd kernel, one backward for J^T eps and the parameter gradients): with reads="backward"
    the feedback differs from the exact W^T eps by sigma_r ||eps|| xi; the parameter gradient eps z^T of a one-layer
    decoder does not pass through a transposed read and stays exact."""
    model, c = _linear_circuit("backward", n=200, d=10)
    B = 64
    z = torch.randn(B, 10, dtype=F64, generator=_gen(23))
    run = CircuitRun(c, torch.zeros(B, 200, dtype=F64), z, _gen(24), accumulate_grad=True)
    assert run.kernel == "autograd" and run.learning
    run.weights.step(0.0, run.gen)
    eps = torch.randn(B, 200, dtype=F64, generator=_gen(25))
    run.kernel_impl.forward(z)
    v = run.kernel_impl.feedback(eps)
    W = model.decoder.weight.detach()
    sigma = 0.02 * float(W.abs().max())
    xi = (v - eps @ W) / (sigma * eps.norm(dim=1, keepdim=True))
    assert float(xi.std()) == pytest.approx(1.0, abs=0.06)
    torch.testing.assert_close(run.pgrads[0], eps.t() @ z)
