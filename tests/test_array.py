"""Analog arrays (circuits.array): pulse arithmetic, drift clocks, programming and read noise.

Every expectation is a closed form of the device model in the module docstring: stochastic rounding is
unbiased with variance f (1 - f); n pulses of size dw (1 + c xi) sum to n dw with variance n (c dw)^2;
soft bounds follow u_n = b - (b - u)(1 - dw/|b|)^n; read noise per product has std sigma ||x_patch||.
"""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from circuits.noise.arrays import (AnalogArray, PulsedDevice, ReadNoiseHooks, apply_pulses, pcm_programming_std,
                                   read_noise_std, stochastic_round)
from circuits.noise import NoiseModel

N = 200_000


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_stochastic_rounding_is_unbiased_with_bernoulli_variance():
    a = torch.full((N,), 2.3, dtype=torch.float64)
    r = stochastic_round(a, _gen())
    assert set(r.unique().tolist()) == {2.0, 3.0}
    f = 0.3
    assert abs(r.mean().item() - 2.3) < 5 * math.sqrt(f * (1 - f) / N)
    assert r.var().item() == pytest.approx(f * (1 - f), rel=0.03)


@pytest.mark.parametrize("frac", [0.3, 0.8])
def test_small_updates_are_applied_in_expectation_by_stochastic_pulses(frac):
    dev = PulsedDevice(dw_min=0.01, dw_min_dtod=0.0, dw_min_std=0.0).validate()
    u = torch.zeros(N, dtype=torch.float64)
    du = torch.full_like(u, frac * dev.dw_min)
    u2, n = apply_pulses(u, du, dev, dev.dw_min, dev.dw_min, _gen(1))
    assert set(n.unique().tolist()) <= {0.0, 1.0}
    assert abs(u2.mean().item() - frac * dev.dw_min) < 5 * dev.dw_min * math.sqrt(frac * (1 - frac) / N)
    assert u2.var().item() == pytest.approx(dev.dw_min**2 * frac * (1 - frac), rel=0.03)


def test_deterministic_rounding_and_pulse_cap_follow_the_pulse_count_arithmetic():
    dw = 0.01
    dev = PulsedDevice(dw_min=dw, dw_min_dtod=0.0, dw_min_std=0.0, rounding="deterministic", max_pulses=3).validate()
    du = torch.tensor([0.004, 0.006, 0.024, -0.026, 0.5, -0.5], dtype=torch.float64)
    u2, n = apply_pulses(torch.zeros(6, dtype=torch.float64), du, dev, dw, dw, None)
    expected_n = torch.tensor([0.0, 1.0, 2.0, -3.0, 3.0, -3.0], dtype=torch.float64)   # round, then clip to +-3
    torch.testing.assert_close(n, expected_n)
    torch.testing.assert_close(u2, expected_n * dw)


def test_cycle_to_cycle_noise_has_the_variance_of_a_sum_of_pulses():
    dw, c, k = 0.01, 0.3, 7
    dev = PulsedDevice(dw_min=dw, dw_min_dtod=0.0, dw_min_std=c, max_pulses=None, w_max=10, w_min=-10).validate()
    du = torch.full((N,), k * dw, dtype=torch.float64)                                  # exactly k pulses
    u2, n = apply_pulses(torch.zeros(N, dtype=torch.float64), du, dev, dw, dw, _gen(2))
    assert (n == k).all()
    assert u2.mean().item() == pytest.approx(k * dw, abs=5 * c * dw * math.sqrt(k / N))
    assert u2.var().item() == pytest.approx(k * (c * dw) ** 2, rel=0.03)


def test_up_down_asymmetry_makes_down_steps_smaller():
    dev = PulsedDevice(dw_min=0.01, dw_min_dtod=0.0, dw_min_std=0.0, up_down=0.2, rounding="deterministic",
                       max_pulses=None).validate()
    arr = AnalogArray({"w": torch.full((2, 2), 0.1)}, pulsed=dev)
    assert float(arr.step_up["w"][0, 0]) == pytest.approx(0.012) and float(arr.step_down["w"][0, 0]) == pytest.approx(0.008)
    sc = arr.scale["w"]
    desired = torch.tensor([[1.0, -1.0], [0.0, 0.0]]) * 0.024 * sc                  # 0.024 device units each way
    before = arr.stored["w"].clone()
    counts = arr.pulse_update({"w": desired}, None)
    torch.testing.assert_close(counts["w"], torch.tensor([[2.0, -3.0], [0.0, 0.0]]))    # 0.024/0.012, 0.024/0.008
    torch.testing.assert_close((arr.stored["w"] - before) / sc, torch.tensor([[0.024, -0.024], [0.0, 0.0]]))


def test_soft_bounds_closed_form_equals_pulses_one_at_a_time():
    dw = 0.05
    dev = PulsedDevice(kind="soft_bounds", dw_min=dw, dw_min_dtod=0.0, dw_min_std=0.0, rounding="deterministic",
                       max_pulses=None, w_max=0.6, w_min=-0.4).validate()
    u0 = torch.tensor([0.0, 0.3, -0.2, 0.5], dtype=torch.float64)
    du = torch.tensor([6, 4, -5, -3], dtype=torch.float64) * dw
    u_all, _ = apply_pulses(u0, du, dev, dw, dw, None)
    u = u0.clone()
    for _ in range(6):                         # one pulse at a time: up by dw (1 - u/w_max), down by dw (1 - u/w_min)
        todo = (torch.tensor([6, 4, 5, 3]) > _)
        up = du > 0
        step = torch.where(up, dw * (1 - u / 0.6), -dw * (1 - u / -0.4))
        u = torch.where(todo, u + step, u)
    torch.testing.assert_close(u_all, u)
    assert (u_all <= 0.6).all() and (u_all >= -0.4).all()


def test_constant_step_devices_stop_at_their_hard_bounds():
    dev = PulsedDevice(dw_min=0.1, dw_min_dtod=0.0, dw_min_std=0.0, max_pulses=None, rounding="deterministic").validate()
    u2, _ = apply_pulses(torch.tensor([0.55, -0.55]), torch.tensor([1.0, -1.0]), dev, 0.1, 0.1, None)
    torch.testing.assert_close(u2, torch.tensor([0.6, -0.6]))


def test_vanishing_dw_min_writes_the_desired_update_exactly():
    dev = PulsedDevice(dw_min=1e-9, dw_min_dtod=0.0, dw_min_std=0.0, max_pulses=None, w_max=100, w_min=-100).validate()
    w = torch.randn(5, 4, dtype=torch.float64, generator=_gen(3))
    arr = AnalogArray({"w": w}, pulsed=dev)
    d = 1e-3 * torch.randn(5, 4, dtype=torch.float64, generator=_gen(4))
    arr.pulse_update({"w": d}, _gen(5))
    torch.testing.assert_close(arr.stored["w"], w + d, rtol=0, atol=1e-9 * arr.scale["w"] * 2)


def test_drift_follows_time_since_each_devices_last_write():
    noise = NoiseModel([{"type": "drift", "nu": 0.05, "t_start": 0.0},
                        {"type": "pulsed", "dw_min": 0.01, "dw_min_dtod": 0.0, "dw_min_std": 0.0,
                         "rounding": "deterministic", "max_pulses": None}])
    w = torch.full((1, 2), 0.3)
    arr = AnalogArray.from_noise({"w": w}, noise.sources, seed=0)
    t0 = 20.0
    assert arr.clock == 0.0
    torch.testing.assert_close(arr.read("w"), w)                                   # at programming
    arr.advance(3600.0)
    f = ((3600.0 + t0) / t0) ** -0.05
    torch.testing.assert_close(arr.read("w"), w * f)
    torch.testing.assert_close(arr.read("w", t=100.0), w * ((3700.0 + t0) / t0) ** -0.05)
    # a pulsed write to the first device only restarts its clock
    arr.pulse_update({"w": torch.tensor([[0.05 * arr.scale["w"], 0.0]])}, None)
    assert float(arr.t_write["w"][0, 0]) == 3600.0 and float(arr.t_write["w"][0, 1]) == 0.0
    r = arr.read("w")
    assert float(r[0, 0]) == pytest.approx(float(arr.stored["w"][0, 0]))          # just written: no drift
    assert float(r[0, 1]) == pytest.approx(0.3 * f, rel=1e-6)


def test_global_drift_compensation_keeps_the_mean_factor_at_one():
    noise = NoiseModel([{"type": "drift", "t_start": 86400.0, "compensate": True}])
    w = torch.randn(30, 20, generator=_gen(6))
    arr = AnalogArray.from_noise({"w": w}, noise.sources, seed=1)
    f = arr.drift_factor("w")
    assert float(f.mean()) == pytest.approx(1.0, abs=1e-6) and float(f.std()) > 1e-3


def test_programming_noise_is_fresh_per_write_with_the_pcm_std():
    noise = NoiseModel([{"type": "weight_programming", "model": "pcm"}])
    w = torch.full((400, 500), 0.5)
    w[0, 0] = 1.0                                                                      # w_max = 1: r = 0.5
    arr = AnalogArray.from_noise({"w": w}, noise.sources, seed=0)
    first = arr.stored["w"].clone()
    err = (first - w)[1:].flatten()
    assert float(err.std()) == pytest.approx(float(pcm_programming_std(torch.tensor(0.5))), rel=0.02)
    assert abs(float(err.mean())) < 5 * float(err.std()) / math.sqrt(err.numel())
    arr.program({"w": w}, _gen(9))
    assert not torch.equal(arr.stored["w"], first)                                     # a new write, a new draw


def test_read_noise_std_is_sigma_times_the_input_patch_norm():
    x = torch.randn(3, 2, 5, 5, generator=_gen(7))
    conv = nn.Conv2d(2, 4, 3, stride=2, padding=1)
    patches = F.unfold(x, 3, padding=1, stride=2)                                      # (B, C*9, L)
    expected = patches.square().sum(1).sqrt().reshape(3, 1, 3, 3).expand(3, 4, 3, 3) * 0.1
    torch.testing.assert_close(read_noise_std(conv, x, 0.1), expected)
    lin = nn.Linear(6, 3)
    xl = torch.randn(4, 6, generator=_gen(8))
    torch.testing.assert_close(read_noise_std(lin, xl, 0.2), (xl.norm(dim=1, keepdim=True) * 0.2).expand(4, 3))
    tconv = nn.ConvTranspose2d(2, 3, 4, stride=2, padding=1)
    sq = read_noise_std(tconv, x, 1.0) ** 2                                            # sum of x^2 feeding each output
    ref = F.conv_transpose2d(x * x, torch.ones_like(tconv.weight), None, 2, 1)
    torch.testing.assert_close(sq, ref, rtol=1e-5, atol=1e-5)


def test_read_noise_is_fresh_per_chain_and_per_read():
    lin = nn.Linear(8, 3, bias=False)
    x = torch.randn(1, 8, generator=_gen(10)).expand(20_000, 8).contiguous()          # the same input on every chain
    with torch.no_grad(), ReadNoiseHooks(lin, {"weight": 0.05}, _gen(11)):
        y1, y2 = lin(x), lin(x)
    clean = lin(x[:1]).detach()
    d1, d2 = y1 - clean, y2 - clean
    sd = 0.05 * float(x[0].norm())
    assert float(d1.std()) == pytest.approx(sd, rel=0.03)                               # sigma ||x|| per output
    assert abs(float(torch.corrcoef(torch.stack([d1[:, 0], d2[:, 0]]))[0, 1])) < 0.03   # fresh per read
    assert float(d1[:, 0].std()) > 0 and len(d1[:, 0].unique()) > 19_000                # not shared across chains


@pytest.mark.parametrize("kw, msg", [
    (dict(dw_min=0.0), "dw_min"), (dict(kind="linear"), "kind"), (dict(up_down=1.0), "up_down"),
    (dict(w_min=0.1), "w_min"), (dict(max_pulses=0), "max_pulses"), (dict(rounding="nearest"), "rounding"),
    (dict(dw_min=float("nan")), "dw_min"), (dict(init_fraction=2.0), "init_fraction"),
])
def test_pulsed_device_parameters_out_of_range_are_refused(kw, msg):
    with pytest.raises(ValueError, match=msg):
        PulsedDevice(**kw).validate()


def test_an_array_needs_weight_matrices():
    with pytest.raises(ValueError, match=">= 2 dimensions"):
        AnalogArray({"bias": torch.zeros(3)}, read_std=0.01)


def _drift_reference(arr, name, t):
    """The elementwise formula of AnalogArray.drift_factor, as written before its one-write-time fast path."""
    age = (arr.clock + t - arr.t_write[name]).clamp(min=0)
    f = torch.exp(-arr.nu[name] * torch.log((age + arr.drift.t0) / arr.drift.t0))
    return f / f.mean() if arr.drift.compensate else f


@pytest.mark.parametrize("compensate", [False, True])
def test_drift_factor_with_one_write_time_is_the_elementwise_formula_bit_for_bit(compensate):
    """A programmed tensor has one write time: its age is one number, and so is log((age + t0) / t0) on every
    path of the elementwise computation; the factor is then nu * (-L) -> exp, the same numbers in 2 passes."""
    noise = NoiseModel([{"type": "weight_programming"}, {"type": "drift", "t_start": 3600.0, "compensate": compensate},
                        {"type": "pulsed"}])
    w = torch.randn(37, 29, generator=_gen(4)) * 0.1                             # not a multiple of a vector width
    arr = AnalogArray.from_noise({"w": w}, noise.sources, seed=2)
    for clock, t in ((3600.0, 0.0), (3600.0, 0.003), (86400.0, 1e-3), (1.0, 0.5), (0.0, 0.0)):
        arr.clock = clock
        assert arr._uniform_log_age("w", t) is not None
        assert torch.equal(arr.drift_factor("w", t), _drift_reference(arr, "w", t))
        assert torch.equal(arr.read("w", t), arr.stored["w"] * _drift_reference(arr, "w", t))
    arr.program({"w": w}, _gen(5), at=10.0)                                       # a new write time: seen
    assert torch.equal(arr.drift_factor("w", 0.1), _drift_reference(arr, "w", 0.1))
    arr.pulse_update({"w": torch.full_like(w, 0.01) * (torch.arange(w.numel()).reshape(w.shape) % 2)}, _gen(6))
    assert arr._uniform_log_age("w", 0.0) is None                                 # devices written at other times
    assert torch.equal(arr.drift_factor("w", 0.2), _drift_reference(arr, "w", 0.2))


@pytest.mark.parametrize("layer, shape", [
    (nn.Linear(40, 512), (64, 40)), (nn.Linear(512, 784), (16, 512)), (nn.Linear(6, 3), (4, 6)),
    (nn.Conv2d(2, 4, 3, stride=2, padding=1), (3, 2, 5, 5)), (nn.Conv1d(3, 5, 3), (2, 3, 11)),
    (nn.ConvTranspose2d(64, 32, 4, 2, 1), (8, 64, 8, 8)), (nn.ConvTranspose2d(8, 1, 4, 2, 1), (2, 8, 7, 7))])
def test_read_noise_std_equals_the_full_all_ones_layer_bit_for_bit(layer, shape):
    """The patch norm comes from a few all-ones output channels where that reproduces the full all-ones layer
    exactly (checked on first use per signature), so the read noise is what it always was, at a fraction of a
    forward's cost."""
    x = torch.randn(shape, generator=_gen(12))
    ones = torch.ones_like(layer.weight)
    if isinstance(layer, nn.Linear):
        full = F.linear(x * x, ones)
    elif isinstance(layer, nn.ConvTranspose2d):
        full = F.conv_transpose2d(x * x, ones, None, layer.stride, layer.padding, layer.output_padding)
    elif isinstance(layer, nn.Conv2d):
        full = F.conv2d(x * x, ones, None, layer.stride, layer.padding)
    else:
        full = F.conv1d(x * x, ones, None, layer.stride, layer.padding)
    ref = full.clamp(min=0).sqrt() * 0.03
    for _ in range(3):                                                            # the checking call and later ones
        std = read_noise_std(layer, x, 0.03)
        assert std.shape == ref.shape and torch.equal(std, ref)
