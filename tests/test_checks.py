import math

import pytest

from instructedit._checks import check_range


@pytest.mark.parametrize("value", [(0.0, 0.0), (0.1, 0.9), (1.0, 1.0), [0.2, 0.4]])
def test_a_range_within_its_bounds_passes(value):
    check_range("p", value, maximum=1.0)


@pytest.mark.parametrize(
    "value",
    [
        (0.9, 0.1),
        (-0.1, 0.5),
        (0.5, 1.5),
        (0.1, math.nan),
        (0.1,),
        (0.1, 0.2, 0.3),
        "ab",
        "12",
        None,
    ],
)
def test_a_bad_range_is_refused_with_its_name_and_bounds(value):
    with pytest.raises(
        ValueError, match=r"^p must be \(low, high\) with 0 <= low <= high <= 1, got"
    ):
        check_range("p", value, maximum=1.0)


def test_an_open_range_has_no_upper_bound_but_refuses_infinity():
    check_range("guidance", (7.5, 1e6))
    with pytest.raises(
        ValueError, match=r"guidance must be \(low, high\) with 0 <= low <= high, got"
    ):
        check_range("guidance", (7.5, math.inf))
    with pytest.raises(ValueError, match="with 1 <= low"):
        check_range("guidance", (0.5, 2.0), minimum=1.0)
