"""Search spaces and the rule that narrows the coarse space into the fine one.

Pure: no TensorFlow, no database. Ranges are values (not exponents), searched
log-uniformly, as the report did: lr = 10^U(-6, -3), reg = 10^U(-5, 5).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

PARAMS = ("lr", "reg")


@dataclass(frozen=True)
class Range:
    low: float
    high: float

    def __post_init__(self):
        if not (0 < self.low < self.high) or not math.isfinite(self.high):
            raise ValueError(f"bad range [{self.low}, {self.high}]: need 0 < low < high")

    def as_list(self) -> list[float]:
        return [self.low, self.high]


@dataclass(frozen=True)
class SearchSpace:
    lr: Range
    reg: Range

    def to_dict(self) -> dict[str, list[float]]:
        return {"lr": self.lr.as_list(), "reg": self.reg.as_list()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Sequence[float]]) -> "SearchSpace":
        return cls(lr=Range(*d["lr"]), reg=Range(*d["reg"]))

    def distributions(self) -> dict:
        from optuna.distributions import FloatDistribution

        return {name: FloatDistribution(low=r.low, high=r.high, log=True)
                for name, r in (("lr", self.lr), ("reg", self.reg))}


COARSE = SearchSpace(lr=Range(1e-6, 1e-3), reg=Range(1e-5, 1e5))
# What the report chose by hand after its coarse search; only a reference for docs/tests.
REPORT_FINE = SearchSpace(lr=Range(1e-5, 1e-3), reg=Range(1e-5, 1e-2))


@dataclass(frozen=True)
class NarrowRule:
    """Fine range = span of the top-k configurations in log10 space, padded by `pad`
    decades on each side, widened to at least `min_width` decades around its centre,
    then clipped to the parent's bounds."""

    k: int = 10
    pad: float = 0.5
    min_width: float = 1.0

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if self.pad < 0 or self.min_width <= 0:
            raise ValueError("pad must be >= 0 and min_width > 0")

    @property
    def name(self) -> str:
        return f"top{self.k}-logspan-pad{self.pad:g}-min{self.min_width:g}"


class NotEnoughTrials(ValueError):
    pass


def narrow(top: Sequence[Mapping[str, float]], parent: SearchSpace,
           rule: NarrowRule = NarrowRule()) -> SearchSpace:
    """Derive the fine space from the parent's top configurations (best first)."""
    if len(top) < rule.k:
        raise NotEnoughTrials(
            f"need {rule.k} COMPLETE trials to narrow the ranges, the parent has {len(top)}")
    best = top[: rule.k]
    ranges = {}
    for name in PARAMS:
        bound = getattr(parent, name)
        logs = [math.log10(p[name]) for p in best]
        lo, hi = min(logs) - rule.pad, max(logs) + rule.pad
        if hi - lo < rule.min_width:
            mid = (lo + hi) / 2
            lo, hi = mid - rule.min_width / 2, mid + rule.min_width / 2
        # clip in value space, so a bound of the parent is kept bit for bit
        ranges[name] = Range(max(10 ** lo, bound.low), min(10 ** hi, bound.high))
    return SearchSpace(**ranges)
