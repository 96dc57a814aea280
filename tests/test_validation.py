"""Field checks (neuro_lpc.validation), config validation and the CLI boundary: exact edges and closed forms."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from circuits.circuit import Circuit
from circuits.config import NOISE_AMPLITUDE_MAX, CircuitConfig, check_dt_static
from circuits.stability import stable_dt_bound
from circuits.learn import CircuitTrainConfig
from circuits.study.config import StudyConfig, StudyError, check_fields
from circuits.sweep import SweepConfig
from neuro_lpc import GaussianLikelihood, GenerativeModel
from neuro_lpc.config import TrainConfig, resolve_device
from neuro_lpc.errors import DivergenceError
from neuro_lpc.validation import (LIMITS, OneLineParser, check_int, check_number, check_out_dir, check_text,
                                  cli_boundary)


# ------------------------------------------------------------------------------------------ field checks
@pytest.mark.parametrize("v", [True, "1", "0.5", None, [1], float("nan"), float("inf"), -float("inf")])
def test_check_number_refuses_non_numbers_nan_and_inf(v):
    with pytest.raises(ValueError, match="x must be"):
        check_number("x", v)


def test_check_number_range_edges_are_exact():
    assert check_number("b", 0.0, lo=0, hi=1, hi_open=True) == 0.0
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        check_number("b", 1.0, lo=0, hi=1, hi_open=True)
    with pytest.raises(ValueError, match="positive"):
        check_number("lr", 0.0, lo=0, lo_open=True)
    assert check_number("lr", 5e-324, lo=0, lo_open=True) == 5e-324
    assert check_number("t", math.inf, lo=0, lo_open=True, allow_inf=True) == math.inf
    assert check_number("t", None, allow_none=True) is None


@pytest.mark.parametrize("v", [True, 1.0, "3", None, 2.5])
def test_check_int_refuses_non_integers(v):
    with pytest.raises(ValueError, match="n must be an integer"):
        check_int("n", v)


def test_check_int_bounds_name_the_limit():
    assert check_int("steps", LIMITS["steps"], hi=LIMITS["steps"]) == LIMITS["steps"]
    with pytest.raises(ValueError, match=f"at most {LIMITS['steps']}"):
        check_int("steps", LIMITS["steps"] + 1, hi=LIMITS["steps"])
    with pytest.raises(ValueError, match="non-negative"):
        check_int("seed", -1, lo=0)


@pytest.mark.parametrize("v", ["", "   ", "a\x00b", 3])
def test_check_text_refuses_empty_and_control_characters(v):
    with pytest.raises(ValueError, match="name must"):
        check_text("name", v)


def test_check_out_dir_refuses_empty_and_unwritable_and_creates_the_folder(tmp_path):
    with pytest.raises(ValueError, match="must not be empty"):
        check_out_dir("")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        check_out_dir(str(blocker))
    with pytest.raises(ValueError, match="not writable"):
        check_out_dir(str(blocker / "sub"))
    made = check_out_dir(str(tmp_path / "a" / "b"))
    assert made.is_dir() and list(made.iterdir()) == []   # the probe file is gone


def test_a_cuda_device_that_does_not_exist_is_refused():
    n = torch.cuda.device_count()
    with pytest.raises(ValueError, match="cuda:" + str(n)):
        resolve_device(f"cuda:{n}")
    with pytest.raises(ValueError, match="device"):
        resolve_device("gpu")
    assert resolve_device("cpu") == torch.device("cpu")


# ------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("clip", [-1, 0, -1e-9, math.nan, math.inf, "1"])
def test_grad_clip_must_be_positive(clip):
    """grad_clip -1 used to reverse every update (clip_grad_norm_ with a negative max_norm flips the gradient)."""
    with pytest.raises(ValueError, match="grad_clip"):
        TrainConfig(grad_clip=clip).validate()
    TrainConfig(grad_clip=0.5).validate()
    TrainConfig(grad_clip=None).validate()


@pytest.mark.parametrize("field, value", [
    ("log_every", 0), ("sample_grid", -1), ("prior_init_batches", -1), ("max_batches_per_epoch", 0),
    ("max_batches_per_epoch", -3), ("epochs", 0), ("langevin_steps", 10**9), ("sample_grid", 10**6),
    ("lr", "0.001"), ("lr", True), ("batch_size", 64.0), ("precondition", 1.0), ("precondition", "0.5"),
    ("temperature", -0.1), ("device", ""), ("dataset", ""), ("data_root", ""), ("download", "yes"),
])
def test_train_config_fields(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value}).validate()


@pytest.mark.parametrize("pc", [1.0, 1, 2.0, -0.5, math.nan, "on", [0.5]])
def test_circuit_precondition_one_is_not_true(pc):
    """1.0 == True in Python: the membership test used to let a beta of 1 (gain units that never decay) through."""
    with pytest.raises(ValueError, match="precondition"):
        CircuitConfig(precondition=pc).validate()
    with pytest.raises(ValueError, match="precondition"):
        CircuitTrainConfig(precondition=pc).validate()


@pytest.mark.parametrize("pc", [None, False, True, "rms", 0.0, 0, 0.25, 0.999])
def test_circuit_precondition_valid_choices(pc):
    assert CircuitConfig(precondition=pc).validate().precondition == pc


def test_static_dt_bounds_equal_the_built_circuits_bound():
    """check_dt_static's bounds (2 tau_z s_p^2, 2 tau_e, tau_m) are stable_dt_bound's for a non-linear decoder; the gain
    units' is tau_m, not 2 tau_m: m' = (1 - dt/tau_m) m + (dt/tau_m) s^2 must stay >= 0 (sqrt(m)), not just bounded."""
    model = GenerativeModel(nn.Sequential(nn.Linear(3, 5), nn.Tanh()), GaussianLikelihood(0.3), prior_std=1.5)
    for kw, expect in (({"tau_z": 1e-2, "tau_e": 0.0}, 2 * 1e-2 * 1.5**2),
                       ({"tau_z": 1e-2, "tau_e": 2e-3}, 2 * 2e-3),
                       ({"tau_z": 1e-2, "tau_e": 0.0, "precondition": True, "precondition_tau": 1e-3}, 1e-3)):
        cfg = CircuitConfig(dt=1e-6, **kw)
        bound, _ = stable_dt_bound(Circuit(model, cfg))
        assert bound == pytest.approx(expect, rel=1e-12)
        check_dt_static(CircuitConfig(dt=0.999 * expect, **kw), prior_std=1.5)
        with pytest.raises(ValueError, match="unstable"):
            check_dt_static(CircuitConfig(dt=expect, **kw), prior_std=1.5)


def test_circuit_train_config_refuses_an_unstable_dt_before_any_network():
    with pytest.raises(ValueError, match="error units .*dt < 2e-09"):
        CircuitTrainConfig(tau_e=1e-9).validate()     # dt = step_size * tau_z = 1e-3


@pytest.mark.parametrize("fast", ["fused", "graphs"])
def test_circuit_training_refuses_the_discrete_samplers_fast_path(fast):
    """TrainConfig.fast is inherited by CircuitTrainConfig but has no meaning there: refused, not silently ignored."""
    CircuitTrainConfig().validate()
    with pytest.raises(ValueError, match="discrete sampler's fast path"):
        CircuitTrainConfig(fast=fast).validate()


def test_noise_amplitudes_are_bounded():
    ok = {"sources": [{"type": "thermal", "value_std": NOISE_AMPLITUDE_MAX}]}
    CircuitConfig(noise=ok).validate()
    bad = {"sources": [{"type": "thermal", "error_std": NOISE_AMPLITUDE_MAX * 1.001}]}
    with pytest.raises(ValueError, match="error_std"):
        CircuitConfig(noise=bad).validate()


def test_study_checks_time_constants_and_cache_before_work(tmp_path):
    base = dict(out=str(tmp_path / "out"), noise="ideal", cache_dir=str(tmp_path / "cache"))
    check_fields(StudyConfig(**base))
    with pytest.raises(StudyError, match="unstable"):
        check_fields(StudyConfig(**base, tau_e=1e-9))
    blocker = tmp_path / "f"
    blocker.write_text("x")
    with pytest.raises(StudyError, match="cache"):
        check_fields(StudyConfig(**{**base, "cache_dir": str(blocker / "c")}))
    for kw in ({"model": ""}, {"out": ""}, {"n_samples": 10**9}, {"tau_z": math.nan}, {"threads": 0},
               {"prior_init_batches": -1}, {"seed": -1}, {"device": "cuda:99"}):
        with pytest.raises(StudyError):
            check_fields(StudyConfig(**{**base, **kw}))
    assert not (tmp_path / "out").exists()


def test_sweep_config_validation():
    SweepConfig().validate()
    for kw in ({"sweeps": ()}, {"sweeps": ("loud",)}, {"steps": 0}, {"record_every": 301}, {"chains": 10**9},
               {"step_size": -1.0}, {"learning": "on-chip"}, {"out": ""}, {"seed": 2**40}):
        with pytest.raises(ValueError):
            SweepConfig(**kw).validate()


# ------------------------------------------------------------------------------------------ the boundary
def test_one_line_parser(capsys):
    p = OneLineParser(prog="prog")
    p.add_argument("--n", type=int)
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--n", "x"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: prog: argument --n")


def test_cli_boundary_exit_codes_and_debug(capsys, monkeypatch):
    def raising(exc):
        def body(argv):
            raise exc
        return body

    assert cli_boundary(raising(ValueError("bad\nthing")), []) == 2
    assert capsys.readouterr().err == "error: bad thing\n"
    assert cli_boundary(raising(DivergenceError("z at step 3")), []) == 1
    assert capsys.readouterr().err.startswith("error: the run diverged: z at step 3")
    assert cli_boundary(raising(ZeroDivisionError("division by zero")), []) == 1
    assert "ZeroDivisionError: division by zero" in capsys.readouterr().err
    assert cli_boundary(raising(SystemExit(0)), []) == 0
    with pytest.raises(ZeroDivisionError):
        cli_boundary(raising(ZeroDivisionError()), ["--debug"])
    monkeypatch.setenv("NEURO_LPC_DEBUG", "1")
    with pytest.raises(ValueError):
        cli_boundary(raising(ValueError("x")), [])
