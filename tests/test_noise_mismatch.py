"""Frozen mismatch (circuits.noise.mismatch, circuits.noise.feedback): gain/offset mismatch of units
and a mismatched feedback path, drawn once from the seed."""
import pytest
import torch
from torch import nn

from circuits import Circuit, CircuitConfig
from circuits.run import CircuitRun
from helpers_noise import F64, bind, linear_model
from neuro_lpc import GaussianLikelihood, GenerativeModel


pytestmark = pytest.mark.usefixtures("single_thread")


# --------------------------------------------------------------------------- frozen draws ----

def test_mismatch_is_frozen_by_the_seed():
    model = linear_model(8, 400, 0.5)[0]
    spec = [{"type": "mismatch", "gain_std": 0.1, "offset_std": 0.05}]
    _, (a,) = bind(spec, model, seed=1)
    _, (a2,) = bind(spec, model, seed=1)
    _, (b,) = bind(spec, model, seed=2)
    for key in ("value_gain", "error_gain", "error_offset"):
        assert torch.equal(a.frozen[key], a2.frozen[key])
        assert not torch.equal(a.frozen[key], b.frozen[key])
    g = a.frozen["error_gain"]
    assert abs(g.mean().item() - 1) < 0.02 and abs(g.std().item() / 0.1 - 1) < 0.15
    assert abs(a.frozen["error_offset"].std().item() / (0.05 * 2.0) - 1) < 0.15  # in units of 1/sigma_x
    z = torch.randn(10, 8, dtype=F64)
    torch.testing.assert_close(a.value_transform(z), z * a.frozen["value_gain"] + a.frozen["value_offset"])


def test_feedback_mismatch_perturbs_only_the_feedback_path():
    model = GenerativeModel(nn.Linear(20, 300).double(), GaussianLikelihood(0.5).double())
    c = Circuit(model, CircuitConfig(dt=1e-4, noise={"sources": [{"type": "feedback_mismatch", "std": 0.1}]}))
    run = CircuitRun(c, torch.zeros(2, 300, dtype=F64), torch.zeros(2, 20, dtype=F64), torch.Generator())
    w = model.decoder.weight.detach()
    torch.testing.assert_close(run.weights.fwd["weight"], w)
    rel = run.weights.fb["weight"] / w - 1
    assert abs(rel.std().item() / 0.1 - 1) < 0.05
