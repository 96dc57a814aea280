"""The preconditioner's gain units (neuro_lpc.gain), shared by the sampler, its fused path and the circuit: the
in-place and out-of-place updates are one equation, a per-unit decay is the scalar one unit by unit, and the gain
is 1 / (m_hat + delta) capped.  (The bias correction's closed form: tests/test_units.py.)"""
import torch

from neuro_lpc.gain import gain_of_rms, rms, second_moment_update, second_moment_update_


def test_in_place_and_out_of_place_updates_are_the_same_equation():
    g = torch.Generator().manual_seed(0)
    m, s = torch.rand(4, 6, generator=g, dtype=torch.float64), torch.randn(4, 6, generator=g, dtype=torch.float64)
    for beta in (0.25, 0.9, 0.999):
        out = second_moment_update(m, s, beta)
        inplace = second_moment_update_(m.clone(), s, beta)
        torch.testing.assert_close(inplace, out, rtol=1e-15, atol=0)
        torch.testing.assert_close(out, beta * m + (1 - beta) * s**2, rtol=1e-15, atol=0)
        per_unit = second_moment_update_(m.clone(), s, torch.full((6,), beta, dtype=torch.float64))
        torch.testing.assert_close(per_unit, out, rtol=1e-15, atol=0)


def test_gain_is_the_capped_inverse_rms():
    m = torch.tensor([4.0, 1e-12, 0.25], dtype=torch.float64)
    torch.testing.assert_close(rms(m), m.sqrt())
    torch.testing.assert_close(rms(m, 0.5), (m / 0.5).sqrt())
    G = gain_of_rms(rms(m), 1e-8, None)
    torch.testing.assert_close(G, 1 / (m.sqrt() + 1e-8))
    capped = gain_of_rms(rms(m), 1e-8, 100.0)
    assert capped[1] == 100.0 and torch.equal(capped[[0, 2]], G[[0, 2]])
    m_hat = rms(m)
    gain_of_rms(m_hat, 1e-8, 100.0)
    torch.testing.assert_close(m_hat, m.sqrt())          # the rms is left as it is (the sampler's "literal" noise)
