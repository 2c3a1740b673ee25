"""The gate's statistics: one log ratio per block, and a trimmed t-interval over blocks.

Rounds time HEAD and the base back to back (ABBA), so load that swings over seconds reaches
both sides alike. What a batch meets on a shared machine (another process's burst, a cold
cache after a context switch) only ever adds time, so each block compares the FASTEST batch
of each side: min(HEAD) / min(base) over the block's rounds. Measured on a loaded two-core
machine with HEAD slowed 1.30x, this put ten blocks' interval at [1.24, 1.32]; the median of
per-round ratios gave [1.16, 1.44] from the same batches.

Blocks exist because rounds are not the only noise. Two processes running identical code
against freshly built Kuzu or Chroma stores differ by up to 1.8x for as long as those stores
stay open, and a fresh pair of stores draws a new difference. Rounds within a block share
that draw, so they cannot measure it; blocks (fresh stores on both sides) can. Hence an
interval over block ratios (a trimmed t, see block_interval): wide with few blocks, which is
the honest answer, narrowing as blocks are added. Cheap blocks beat long ones: one ABBA round a
block and twice the blocks gave lower bounds of 1.20-1.27 for a 1.30x slowdown where three
rounds a block gave 1.07-1.25 in the same time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (Lentz's method)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-12:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1 - x) / b


def t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile by bisection on the CDF (no SciPy needed)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    low, high = -1e3, 1e3
    for _ in range(200):
        mid = (low + high) / 2
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2


@dataclasses.dataclass(frozen=True)
class Interval:
    """A ratio (HEAD time / base time, > 1 = HEAD slower) with its confidence interval."""

    ratio: float
    low: float
    high: float
    blocks: int
    rounds: int

    @property
    def half_width(self) -> float:
        """Half the interval's width in log space (0.05 is about +-5 %)."""
        if not (self.low > 0 and math.isfinite(self.high)):
            return math.inf
        return (math.log(self.high) - math.log(self.low)) / 2


TRIM = 0.2


def block_interval(log_ratios: Sequence[float], confidence: float = 0.95, rounds: int = 0) -> Interval:
    """The ratio and its interval from one log ratio per block: Yuen's trimmed t (20 % trimmed mean,
    winsorized standard error, n - 2g - 1 degrees of freedom). A block that met a slow spell on one
    side (measured: whole blocks at 0.7x or 2.5x of the truth) is trimmed instead of widening the
    interval for everything else, and the interval stays honest about the blocks that are kept."""
    values = sorted(float(v) for v in log_ratios)
    n = len(values)
    if not n:
        return Interval(math.nan, math.nan, math.nan, 0, rounds)
    g = int(math.floor(TRIM * n))
    kept = values[g:n - g]
    centre = sum(kept) / len(kept)
    if n - 2 * g - 1 < 1:
        return Interval(math.exp(centre), 0.0, math.inf, n, rounds)
    winsorized = [values[g]] * g + kept + [values[n - g - 1]] * g
    mean_w = sum(winsorized) / n
    sd_w = math.sqrt(sum((v - mean_w) ** 2 for v in winsorized) / (n - 1))
    half = t_quantile(1 - (1 - confidence) / 2, n - 2 * g - 1) * sd_w / ((1 - 2 * g / n) * math.sqrt(n))
    return Interval(math.exp(centre), math.exp(centre - half), math.exp(centre + half), n, rounds)


def block_ratio(head: Sequence[float], base: Sequence[float]) -> float:
    """A block's log ratio: HEAD's fastest batch against the base's fastest batch."""
    return math.log(max(min(head), 1e-12) / max(min(base), 1e-12))


def verdict(interval: Interval, threshold: float) -> str:
    """``regression`` only when even the interval's low end is slower than the threshold allows."""
    limit = 1 + threshold
    if interval.blocks == 0:
        return "not measured"
    if interval.low > limit:
        return "regression"
    if interval.high < 1 / limit:
        return "faster"
    if interval.high < limit:
        return "ok"
    return "unsettled"  # the interval straddles the threshold: not proven, so it does not fail the gate
