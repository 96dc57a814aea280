"""neuro_lpc.chain: the finite-value watch every sampler path shares (eager, fused, CUDA graphs)."""
import math

import torch

import neuro_lpc
import neuro_lpc.langevin
from neuro_lpc.chain import FiniteWatch, SampleResult, describe_bad_log_joint, first_non_finite


def test_first_non_finite_is_the_earliest_row_then_the_lowest_chain():
    ring = torch.zeros(6, 5)
    ring[4, 0] = math.inf
    ring[2, 3] = math.nan
    ring[2, 4] = -math.inf
    assert first_non_finite(ring, 6) == (2, 3)
    assert first_non_finite(ring, 2) is None          # only the first k rows are this window's


def test_the_watch_names_the_first_bad_step_and_chain_of_the_window_it_checks():
    """Checks every 4 steps (a ring of 4 rows, reused): steps 1-4 finite, then chain 2's state turns NaN at
    step 6 and chain 0's log-joint at step 7; the check after step 8 names step 6 and chain 2, not a row
    left over from the previous window."""
    z = torch.zeros(3, 2)
    watch = FiniteWatch(z, check_every=4)
    for t in range(1, 5):
        watch.note(z, t, lj=torch.full((3,), -1.0))
    assert watch.first_bad_chain(4) is None
    for t in range(5, 9):
        zt = z.clone()
        lj = torch.full((3,), -1.0)
        if t >= 6:
            zt[2, 1] = math.nan
        if t >= 7:
            lj[0] = -math.inf
        watch.note(zt, t, lj)
    assert watch.first_bad_chain(8) == (6, 2)
    assert watch.first_bad(8) == 6


def test_a_partial_last_window_is_read_up_to_the_last_step():
    z = torch.zeros(2, 3)
    watch = FiniteWatch(z, check_every=10)
    for t in range(1, 14):                             # T = 13: the last check reads rows 1..3 of window 2
        zt = z.clone()
        if t == 13:
            zt[1, 0] = math.inf
        watch.note(zt, t)
    assert watch.first_bad_chain(13) == (13, 1)


def test_a_finite_decoder_output_is_described_by_its_largest_prediction_error():
    class Shift(torch.nn.Module):
        def forward(self, z):
            return z.sum(1, keepdim=True) * torch.ones(z.shape[0], 4)

    model = neuro_lpc.GenerativeModel(Shift(), neuro_lpc.GaussianLikelihood(0.5), latent_dim=2)
    x = torch.zeros(3, 4)
    x[1, 2] = 5.0
    unit, text = describe_bad_log_joint(model, x, torch.zeros(3, 2), chain=1)
    assert unit == "x[2]" and "largest prediction error" in text and "5" in text


def test_the_old_import_paths_give_the_same_objects():
    assert neuro_lpc.SampleResult is SampleResult is neuro_lpc.langevin.SampleResult
    assert neuro_lpc.langevin.describe_bad_log_joint is describe_bad_log_joint
