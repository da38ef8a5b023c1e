"""The shared argument checks: a value passes exactly when it lies in the stated interval, and every
rejection names the argument and the interval (TypeError for a wrong type, ValueError out of range)."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sb_neurons.validation import check_int, check_positive, check_real

BOUNDS = st.one_of(st.none(), st.integers(-5, 5))


@given(value=st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10, 10), low=BOUNDS, high=BOUNDS,
       open_low=st.booleans(), open_high=st.booleans())
def test_check_real_accepts_exactly_the_finite_numbers_of_its_interval(value, low, high, open_low, open_high):
    inside = math.isfinite(value)
    if low is not None:
        inside &= value > low if open_low else value >= low
    if high is not None:
        inside &= value < high if open_high else value <= high
    bounds = dict(minimum=low, maximum=high, open_minimum=open_low, open_maximum=open_high)
    if inside:
        assert check_real(value, "x", **bounds) == float(value)
        assert isinstance(check_real(value, "x", **bounds), float)
    else:
        with pytest.raises(ValueError, match=r"^x must be a finite number") as error:
            check_real(value, "x", **bounds)
        if low is not None:
            assert f"{'(' if open_low else '['}{low}" in str(error.value) or f"{'>' if open_low else '>='} {low}" in str(error.value)


@given(value=st.integers(-20, 20), low=BOUNDS, high=BOUNDS)
def test_check_int_accepts_exactly_the_ints_of_its_range(value, low, high):
    inside = (low is None or value >= low) and (high is None or value <= high)
    if inside:
        assert check_int(value, "n", minimum=low, maximum=high) == value
    else:
        with pytest.raises(ValueError, match=r"^n must be an int") as error:
            check_int(value, "n", minimum=low, maximum=high)
        assert str(value) in str(error.value)


@pytest.mark.parametrize("bad", [True, False, "1", None, 1.0, [1]])
def test_check_int_rejects_other_types_with_a_type_error(bad):
    with pytest.raises(TypeError, match=r"^n must be an int >= 0, got"):
        check_int(bad, "n", minimum=0)


@pytest.mark.parametrize("bad", [True, "1.0", None, [0.5]])
def test_check_real_rejects_other_types_with_a_type_error(bad):
    with pytest.raises(TypeError, match=r"^x must be a finite number in \(0, 1\], got"):
        check_real(bad, "x", minimum=0, maximum=1, open_minimum=True)


def test_check_positive_is_the_open_half_line():
    assert check_positive(1e-300, "eps") == 1e-300
    for bad in (0, 0.0, -1, math.inf, math.nan):
        with pytest.raises(ValueError, match=r"eps must be a finite number > 0"):
            check_positive(bad, "eps")
