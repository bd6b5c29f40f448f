"""The narrowing rule: pure, no TensorFlow, no database."""
import math
import sys

import pytest

from study.space import COARSE, REPORT_FINE, NarrowRule, NotEnoughTrials, Range, SearchSpace, narrow


def _cfgs(pairs):
    return [{"lr": lr, "reg": reg} for lr, reg in pairs]


def test_span_is_padded_in_log_space():
    top = _cfgs([(1e-4, 1e-3), (1e-5, 1e-4), (3e-5, 2e-4)])
    fine = narrow(top, COARSE, NarrowRule(k=3, pad=0.5, min_width=1.0))
    assert math.log10(fine.lr.low) == pytest.approx(-5.5)
    assert math.log10(fine.lr.high) == pytest.approx(-3.5)
    assert math.log10(fine.reg.low) == pytest.approx(-4.5)
    assert math.log10(fine.reg.high) == pytest.approx(-2.5)


def test_narrow_span_is_widened_to_min_width_around_its_centre():
    top = _cfgs([(1e-4, 1e-2)] * 3)
    fine = narrow(top, COARSE, NarrowRule(k=3, pad=0.0, min_width=1.0))
    assert math.log10(fine.lr.low) == pytest.approx(-4.5)
    assert math.log10(fine.lr.high) == pytest.approx(-3.5)


def test_clipped_to_parent_bounds_bit_for_bit():
    top = _cfgs([(1e-3, 1e5), (9e-4, 5e4)])
    fine = narrow(top, COARSE, NarrowRule(k=2))
    assert fine.lr.high == COARSE.lr.high and fine.reg.high == COARSE.reg.high
    assert fine.lr.low > COARSE.lr.low


def test_only_the_top_k_count():
    top = _cfgs([(1e-4, 1e-3)] * 2 + [(1e-6, 1e5)])
    fine = narrow(top, COARSE, NarrowRule(k=2, pad=0.0, min_width=0.5))
    assert fine.lr.low > 1e-5 and fine.reg.high < 1e-2


def test_report_like_top_trials_give_report_like_ranges():
    # top coarse trials clustered where the report found them
    top = _cfgs([(1e-4, 1e-4), (5e-4, 1e-3), (2e-5, 3e-5), (1e-4, 5e-3), (3e-4, 2e-4)])
    fine = narrow(top, COARSE, NarrowRule(k=5))
    assert REPORT_FINE.lr.low / 10 <= fine.lr.low and fine.lr.high <= COARSE.lr.high
    assert fine.reg.high < 1e-1


def test_fewer_than_k_trials_is_a_clear_error():
    with pytest.raises(NotEnoughTrials, match="need 10 COMPLETE trials.*has 3"):
        narrow(_cfgs([(1e-4, 1e-3)] * 3), COARSE, NarrowRule(k=10))


@pytest.mark.parametrize("low,high", [(0, 1), (1e-3, 1e-4), (1e-3, 1e-3), (-1, 1)])
def test_bad_ranges_refused(low, high):
    with pytest.raises(ValueError):
        Range(low, high)


def test_round_trip_and_rule_name():
    assert SearchSpace.from_dict(COARSE.to_dict()) == COARSE
    assert NarrowRule(k=7).name == "top7-logspan-pad0.5-min1"
    with pytest.raises(ValueError):
        NarrowRule(k=0)


def test_search_side_never_imports_tensorflow():
    import subprocess

    code = ("import sys, study.space, study.stages, study.storage, study.results, study.worker, "
            "study.coordinator, study.queue, study.parser, study.cli; sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
