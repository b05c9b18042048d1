"""Statistics over training seeds: comparing two systems when each was trained several times.

A paired bootstrap over test sentences (Koehn 2004) measures the test set's sampling noise for two fixed
models; it says nothing of the spread between training runs of the same system (Clark, Dyer, Lavie and
Smith 2011, *Better Hypothesis Testing for Statistical Machine Translation: Controlling for Optimizer
Instability*, ACL: replicate every system at least three times, report the mean and the standard
deviation over replicates, and test with a randomisation over all of them). For per-seed scores, or
per-seed, per-sentence sufficient statistics of a corpus metric (rows summed, then scored, as BLEU is):

- :func:`spread`: mean and sample standard deviation (n − 1) over seeds;
- :func:`welch_interval`: the difference of two means with Welch's t-interval (Welch 1947, *Biometrika*
  34; degrees of freedom by Welch–Satterthwaite): ``d ± t_{0.975, ν} · sqrt(s_a²/n_a + s_b²/n_b)``,
  ``ν = (s_a²/n_a + s_b²/n_b)² / ((s_a²/n_a)²/(n_a − 1) + (s_b²/n_b)²/(n_b − 1))``;
- :func:`pigeonhole_bootstrap`: the percentile interval of the difference when each draw resamples the
  seeds of each system and, independently, the test sentences (one draw of sentences for both systems:
  every seed of both translates the same sentences). Seeds × sentences is a crossed design, not a nested
  one; resampling rows and columns separately is Owen's pigeonhole bootstrap (Owen 2007, *Annals of
  Applied Statistics* 1(2), 386–411; no bootstrap of crossed data is exact, McCullagh 2000, *Bernoulli* 6).
  With few seeds the seed part is poor: n seeds allow few distinct draws, and resampling them gives a
  variance of the mean (n − 1)/n of the usual estimate;
- :func:`stratified_randomization`: Clark et al. (2011)'s test as MultEval implements it: the replicates of
  each system pooled into one corpus score, and each shuffle pairs the replicates of the two systems at
  random and swaps each (replicate, sentence) row between them with probability 1/2.

Pure functions, torch-free; scores of summed statistics come from a callable (SacreBLEU's
``BLEU._compute_score_from_stats`` for BLEU).
"""
import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np

Score = Callable[[np.ndarray], float]  # summed sufficient statistics (one row) -> corpus score


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation (n − 1; None for one value) of one quantity over seeds."""

    mean: float
    sd: Optional[float]
    n: int
    low: float
    high: float


@dataclass(frozen=True)
class Interval:
    """A difference (system a − system b) with a two-sided interval and how it was obtained."""

    difference: float
    low: float
    high: float
    level: float
    method: str
    df: Optional[float] = None  # Welch's degrees of freedom
    samples: Optional[int] = None  # bootstrap draws


def spread(values: Sequence[float]) -> Spread:
    if not len(values):
        raise ValueError("no values")
    x = np.asarray(values, dtype=float)
    return Spread(float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else None, len(x), float(x.min()),
                  float(x.max()))


def _incomplete_beta(x: float, a: float, b: float) -> float:
    """Regularised incomplete beta I_x(a, b), by its continued fraction (modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast below the mean; use the symmetry above it
        return 1.0 - _incomplete_beta(1.0 - x, b, a)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 1000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return front * f


def t_cdf(t: float, df: float) -> float:
    """Student's t distribution function: 1 − I_{ν/(ν+t²)}(ν/2, 1/2) / 2 for t ≥ 0 (real ν > 0)."""
    tail = 0.5 * _incomplete_beta(df / (df + t * t), df / 2.0, 0.5)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with ν = ``df`` degrees of freedom (real ν > 0), by bisection."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0 (got p={p}, df={df})")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
    """mean(a) − mean(b) with Welch's t-interval; each system needs at least two seeds. Two sets without
    any spread give the point itself (no degrees of freedom)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch's interval needs two or more seeds per system (got {len(a)} and {len(b)})")
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
    d = float(xa.mean() - xb.mean())
    if va + vb == 0.0:
        return Interval(d, d, d, level, "Welch t")
    df = (va + vb) ** 2 / (va ** 2 / (len(xa) - 1) + vb ** 2 / (len(xb) - 1))
    half = t_quantile(0.5 + level / 2.0, df) * math.sqrt(va + vb)
    return Interval(d, d - half, d + half, level, "Welch t", df=float(df))


def _check_statistics(stats_a: Sequence[np.ndarray], stats_b: Sequence[np.ndarray]):
    a = [np.asarray(s, dtype=float) for s in stats_a]
    b = [np.asarray(s, dtype=float) for s in stats_b]
    if not a or not b:
        raise ValueError("each system needs at least one seed's statistics")
    shapes = {s.shape for s in a + b}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2 or not next(iter(shapes))[0]:
        raise ValueError(f"every seed needs the same (sentences x statistics) shape; got {sorted(shapes)}")
    return a, b


def corpus_scores(stats: Sequence[np.ndarray], score: Score) -> List[float]:
    """Each seed's corpus score: ``score`` of its rows summed."""
    return [float(score(np.asarray(s, dtype=float).sum(axis=0))) for s in stats]


def pigeonhole_bootstrap(stats_a: Sequence[np.ndarray], stats_b: Sequence[np.ndarray], score: Score,
                        samples: int = 1000, level: float = 0.95, seed: int = 0) -> Interval:
    """mean over seeds of a's corpus scores − b's, and the percentile interval of that difference over
    ``samples`` draws, each resampling a's seeds, b's seeds (with replacement, as many as each has) and
    the sentences (with replacement, the same sentences for every seed of both systems)."""
    a, b = _check_statistics(stats_a, stats_b)
    n = a[0].shape[0]
    rng = np.random.default_rng(seed)
    point = float(np.mean(corpus_scores(a, score)) - np.mean(corpus_scores(b, score)))
    draws = np.empty(samples)
    for i in range(samples):
        seeds_a = rng.integers(len(a), size=len(a))
        seeds_b = rng.integers(len(b), size=len(b))
        counts = np.bincount(rng.integers(n, size=n), minlength=n).astype(float)
        draws[i] = (np.mean([score(counts @ a[s]) for s in seeds_a]) - np.mean([score(counts @ b[s]) for s in seeds_b]))
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    return Interval(point, float(low), float(high), level, "pigeonhole bootstrap (seeds x sentences)",
                    samples=samples)


def stratified_randomization(stats_a: Sequence[np.ndarray], stats_b: Sequence[np.ndarray], score: Score,
                             shuffles: int = 10000, seed: int = 0) -> float:
    """Two-sided p of |score(a's replicates pooled) − score(b's pooled)| under Clark et al. (2011)'s
    stratified approximate randomisation: each shuffle pairs a's replicates with a random permutation of
    b's and swaps each paired (replicate, sentence) row with probability 1/2;
    p = (1 + #{shuffled difference ≥ observed}) / (1 + shuffles). Both systems need as many replicates."""
    a, b = _check_statistics(stats_a, stats_b)
    if len(a) != len(b):
        raise ValueError(f"the stratified test pairs replicates: {len(a)} and {len(b)} seeds")
    rng = np.random.default_rng(seed)
    A, B = np.stack(a), np.stack(b)  # replicates x sentences x statistics
    observed = abs(score(A.sum(axis=(0, 1))) - score(B.sum(axis=(0, 1))))
    total = A.sum(axis=(0, 1)) + B.sum(axis=(0, 1))  # swapping rows keeps the sum of both sides
    hits = 0
    for _ in range(shuffles):
        paired = B[rng.permutation(len(b))]
        swap = rng.random(A.shape[:2]) < 0.5
        x = A.sum(axis=(0, 1)) - (A * swap[..., None]).sum(axis=(0, 1)) + (paired * swap[..., None]).sum(axis=(0, 1))
        hits += abs(score(x) - score(total - x)) >= observed - 1e-12 * max(1.0, abs(observed))
    return (1 + hits) / (1 + shuffles)
