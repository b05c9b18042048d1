"""fairseq_rela.seeds: spreads over seeds, Welch's t-interval (against scipy), the pigeonhole bootstrap (against
its exact distribution where that is known) and the stratified approximate randomisation (against full
enumeration of its shuffles)."""
import itertools
import statistics

import numpy as np
import pytest

from fairseq_rela import seeds

pytestmark = pytest.mark.unit


def ratio(row):
    """A corpus score of summed statistics, as BLEU is one: 100 · hits / length."""
    return 100.0 * row[0] / row[1]


def test_spread_is_the_sample_standard_deviation():
    values = [39.46, 38.2, 40.05]
    s = seeds.spread(values)
    assert s.n == 3 and s.low == 38.2 and s.high == 40.05
    assert abs(s.mean - statistics.fmean(values)) < 1e-12 and abs(s.sd - statistics.stdev(values)) < 1e-12
    assert seeds.spread([37.5]).sd is None
    with pytest.raises(ValueError):
        seeds.spread([])


def test_t_quantile_and_welch_interval_match_scipy():
    from scipy import stats

    for df in (1.0, 1.3, 2.0, 2.62, 3.97, 7.5, 30.0, 1e4):
        for p in (0.51, 0.8, 0.975, 0.995, 0.025):
            assert abs(seeds.t_quantile(p, df) - stats.t.ppf(p, df)) < 1e-8 * max(1.0, abs(stats.t.ppf(p, df)))
            assert abs(seeds.t_cdf(stats.t.ppf(p, df), df) - p) < 1e-10
    rng = np.random.default_rng(3)
    for na, nb in ((2, 2), (3, 3), (3, 2), (5, 4)):
        a, b = rng.normal(37.5, 1.0, na), rng.normal(39.5, 0.3, nb)
        ours = seeds.welch_interval(a, b)
        ref = stats.ttest_ind(a, b, equal_var=False)
        low, high = ref.confidence_interval(0.95)
        assert abs(ours.low - low) < 1e-7 and abs(ours.high - high) < 1e-7 and abs(ours.df - ref.df) < 1e-9
        assert abs(ours.difference - (a.mean() - b.mean())) < 1e-12
        ninety = seeds.welch_interval(a, b, level=0.9)
        assert abs(ninety.high - ref.confidence_interval(0.9).high) < 1e-7
    # the hand formula for three seeds each (Welch-Satterthwaite)
    a, b = [37.5, 36.9, 38.4], [39.5, 39.1, 40.6]
    va, vb = statistics.variance(a) / 3, statistics.variance(b) / 3
    nu = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    assert abs(seeds.welch_interval(a, b).df - nu) < 1e-12
    same = seeds.welch_interval([37.0, 37.0], [39.0, 39.0])
    assert (same.low, same.high, same.df) == (-2.0, -2.0, None)
    with pytest.raises(ValueError, match="two or more seeds"):
        seeds.welch_interval([37.0], [39.0, 38.0])


def test_pigeonhole_bootstrap_resamples_the_seeds():
    """Every sentence of a seed alike: resampling sentences changes nothing, so the draws are the mean of the
    resampled seeds' scores; with two seeds a system's mean is its lower score in 1 draw of 4, and the 2.5 and
    97.5 percentiles of the difference are min(a) − max(b) and max(a) − min(b) (each 1/16 of the draws)."""
    def seed_stats(hits):
        return np.tile([hits, 20.0], (50, 1))  # 50 sentences, score 5 · hits

    a = [seed_stats(7), seed_stats(8)]  # scores 35, 40
    b = [seed_stats(9), seed_stats(7.8)]  # 45, 39
    out = seeds.pigeonhole_bootstrap(a, b, ratio, samples=2000, seed=1)
    assert abs(out.difference - (37.5 - 42.0)) < 1e-12
    assert abs(out.low - (35 - 45)) < 1e-9 and abs(out.high - (40 - 39)) < 1e-9
    assert out.samples == 2000 and out.level == 0.95


def test_pigeonhole_bootstrap_draws_one_set_of_sentences_for_both_systems():
    """Two systems with the same statistics sentence by sentence differ by 0 in every draw only if both are
    scored on the same resampled sentences; the sentences' spread shows when they differ."""
    rng = np.random.default_rng(0)
    rows = np.column_stack([rng.integers(0, 20, 200), np.full(200, 20)]).astype(float)
    out = seeds.pigeonhole_bootstrap([rows], [rows.copy()], ratio, samples=300)
    assert out.low == out.high == out.difference == 0.0
    other = np.column_stack([rng.integers(0, 20, 200), np.full(200, 20)]).astype(float)
    wide = seeds.pigeonhole_bootstrap([rows], [other], ratio, samples=300)
    assert wide.low < wide.difference < wide.high
    with pytest.raises(ValueError, match="same"):
        seeds.pigeonhole_bootstrap([rows], [rows[:10]], ratio)


def _exact_stratified_p(a, b):
    """Clark et al.'s stratified randomisation by enumeration: every pairing of the replicates and every swap
    of every (replicate, sentence) row, equally likely."""
    A, B = np.stack(a), np.stack(b)
    observed = abs(ratio(A.sum(axis=(0, 1))) - ratio(B.sum(axis=(0, 1))))
    hits = total = 0
    for perm in itertools.permutations(range(len(b))):
        paired = B[list(perm)]
        for bits in itertools.product((False, True), repeat=A.shape[0] * A.shape[1]):
            swap = np.array(bits).reshape(A.shape[:2])
            x = np.where(swap[..., None], paired, A).sum(axis=(0, 1))
            y = np.where(swap[..., None], A, paired).sum(axis=(0, 1))
            hits += abs(ratio(x) - ratio(y)) >= observed - 1e-12
            total += 1
    return hits / total


def test_stratified_randomization_matches_the_enumerated_test():
    a = [np.array([[3, 5], [4, 4], [1, 6]], float), np.array([[5, 5], [2, 4], [0, 6]], float)]
    b = [np.array([[1, 5], [4, 5], [0, 6]], float), np.array([[2, 6], [3, 4], [1, 5]], float)]
    exact = _exact_stratified_p(a, b)
    assert 0.05 < exact < 0.95  # a case where the test is not trivial
    shuffles = 20000
    p = seeds.stratified_randomization(a, b, ratio, shuffles=shuffles, seed=2)
    sd = (exact * (1 - exact) / shuffles) ** 0.5
    assert abs(p - exact) < 4 * sd + 1 / shuffles, (p, exact)
    assert seeds.stratified_randomization(a, a, ratio, shuffles=50) == 1.0  # no difference: every shuffle as far
    with pytest.raises(ValueError, match="pairs replicates"):
        seeds.stratified_randomization(a, b[:1], ratio)


def test_corpus_scores_of_sacrebleu_statistics_equal_its_corpus_bleu():
    """The statistics the summary resamples: SacreBLEU's per-sentence BLEU statistics, summed and scored, give
    its corpus BLEU."""
    import sacrebleu

    refs = ["a man rides a red bike down the street .", "two dogs play in the snow .", "a woman is cooking ."]
    hyps = ["a man rides a bike on the street .", "two dogs play in snow .", "the woman cooks ."]
    bleu = sacrebleu.BLEU()
    stats = np.asarray(bleu._extract_corpus_statistics(hyps, [refs]), dtype=float)
    (score,) = seeds.corpus_scores([stats], lambda row: bleu._compute_score_from_stats(list(row)).score)
    assert abs(score - bleu.corpus_score(hyps, [refs]).score) < 1e-9
