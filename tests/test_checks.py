"""``circuits._checks``: the argument checks shared by the whole package (their one home: the integrators', the
diagnostics' and the Brian2 simulator's checks are these)."""
import numpy as np
import pytest

from circuits import _checks


@pytest.mark.parametrize("v,lo,hi,msg", [
    (0, 1, None, "steps must be an integer >= 1, got 0"),
    (True, 0, None, "steps must be an integer >= 0, got True"),
    (2.0, 1, None, "steps must be an integer >= 1, got 2.0"),
    (11, 1, 10, r"steps must be an integer \[1, 10\], got 11"),
])
def test_check_int_refuses_with_one_line(v, lo, hi, msg):
    with pytest.raises(ValueError, match=msg):
        _checks.check_int("steps", v, lo, hi)


def test_check_int_accepts_the_bounds():
    _checks.check_int("steps", 1, 1)
    _checks.check_int("steps", 10, 1, 10)


def test_array_and_scalar_checks():
    assert _checks.array("x", [[1, 2]], 2).dtype == np.float64
    with pytest.raises(ValueError, match="x must have 1 dimensions"):
        _checks.array("x", [[1.0]], 1)
    with pytest.raises(ValueError, match="x has non-finite entries"):
        _checks.array("x", [np.nan], 1)
    assert _checks.integer("n", np.int64(3), 1) == 3
    assert _checks.positive("tau", 0, allow_zero=True) == 0.0
    with pytest.raises(ValueError, match="tau must be a positive finite number"):
        _checks.positive("tau", 0)
    with pytest.raises(ValueError, match="A must be square"):
        _checks.square("A", np.zeros((2, 3)))
    with pytest.raises(ValueError, match="A is not stable"):
        _checks.stable("A", np.eye(2))
    np.testing.assert_array_equal(_checks.projection(None, 3), np.eye(3))
    np.testing.assert_array_equal(_checks.symmetric(np.array([[0.0, 2.0], [0.0, 0.0]])), [[0.0, 1.0], [1.0, 0.0]])

