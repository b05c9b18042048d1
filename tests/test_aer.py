"""The AER scorer's functions (analysis/aer.py) on hand-made cases, and a property-based fuzz (hypothesis) of
its parsers: any input either parses to links inside the sentence bounds or gives a one-line error naming the
file.  Each fuzz test counts and reports the cases it tried."""
import os
import re
import tempfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fairseq_rela.alignment.aer import (MAX_DIGITS, AlignmentFileError, Gold, SentenceText, alignment_error_rate,
                                       base_warning, check_aligns_reference, check_lengths, read_alignments, read_gold,
                                       read_hypothesis, same_text)
from tests.helpers import FUZZ

pytestmark = pytest.mark.unit


def test_aer_hand_computed():
    gold = [Gold(sure={(0, 0), (1, 1)}, possible={(0, 0), (1, 1), (2, 1)})]
    hyp = [{(0, 0), (2, 1), (2, 2)}]
    r = alignment_error_rate(gold, hyp)
    # |A∩S| = 1, |A∩P| = 2, |A| = 3, |S| = 2 -> AER = 1 - 3/5
    assert r.aer == pytest.approx(0.4) and r.precision == pytest.approx(2 / 3) and r.recall == pytest.approx(0.5)


def test_gold_and_hypothesis_index_bases(tmp_path):
    (tmp_path / "gold").write_text("1-1 2p3\n\n")
    (tmp_path / "hyp").write_text("0-0 1-2\n0-0\n")
    gold = read_gold(str(tmp_path / "gold"), base=1)
    assert gold[0].sure == {(0, 0)} and gold[0].possible == {(0, 0), (1, 2)}
    assert read_hypothesis(str(tmp_path / "hyp"), base=0)[0] == {(0, 0), (1, 2)}
    assert read_hypothesis(str(tmp_path / "hyp"), base=0, reverse=True)[0] == {(0, 0), (2, 1)}


def test_fairseq_generate_output_is_read_in_id_order(tmp_path):
    (tmp_path / "gen").write_text("S-1\tx\nA-1\t0-1\nH-0\ty\nA-0\t1-0 0-0\n")
    assert read_hypothesis(str(tmp_path / "gen")) == [{(1, 0), (0, 0)}, {(0, 1)}]
    (tmp_path / "gap").write_text("A-0\t0-0\nA-2\t0-0\n")
    with pytest.raises(AlignmentFileError, match="no A- line for sentence 1"):
        read_hypothesis(str(tmp_path / "gap"))


# Text made mostly of the characters that matter to the parsers, plus anything else.
_ALPHABET = st.sampled_from(list("0123456789-p \t\n\r") + ["A-", "S-", "H-", "\ufeff", "\u0665", "\uff15", "\u2028",
                                                          "\x85", "9" * 12])
_TEXT = st.lists(st.one_of(_ALPHABET, st.characters()), max_size=60).map("".join)
_LINK_ITEM = st.builds("{}{}{}".format, st.integers(0, 14), st.sampled_from("-p"), st.integers(0, 14))
# Well-formed link lines, sometimes with one piece of noise spliced in.
_LINK_LINES = st.builds(
    lambda lines, noise, at: (lambda text: text[:at] + noise + text[at:])("\n".join(" ".join(l) for l in lines) + "\n"),
    st.lists(st.lists(_LINK_ITEM, max_size=5), min_size=1, max_size=6),
    st.one_of(st.just(""), st.just(""), _ALPHABET, st.characters()), st.integers(0, 80))


class _Files:
    """One scratch directory for all the examples of a test (hypothesis reruns the body many times)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="fuzz-")

    def write(self, data) -> str:
        path = os.path.join(self.dir, "input")
        with open(path, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
        return path


def _one_line(err: Exception, path: str) -> None:
    message = str(err)
    assert "\n" not in message and "\r" not in message and message.startswith(path), message
    assert len(message) < len(path) + 300, message


def _check_links(sentences, src_lens=None, tgt_lens=None) -> None:
    for n, links in enumerate(sentences):
        for i, j in links:
            assert 0 <= i < 10 ** MAX_DIGITS and 0 <= j < 10 ** MAX_DIGITS
            if src_lens is not None:
                assert i < src_lens[n] and j < tgt_lens[n]


def _report(name: str, tried: dict, outcomes: dict) -> None:
    print(f"\n{name}: {tried['n']} cases tried, outcomes {outcomes}")
    assert tried["n"] >= FUZZ.max_examples
    assert len(outcomes) >= 2, outcomes  # the generator reaches both accepted and rejected inputs


@pytest.mark.parametrize("kind", ["gold", "hypothesis"])
def test_fuzz_talp_and_pharaoh_text(kind):
    files, tried, outcomes = _Files(), {"n": 0}, {}

    @FUZZ
    @given(data=st.one_of(_LINK_LINES, _TEXT, st.binary(max_size=40)), base=st.sampled_from([0, 1]),
           draw=st.data())
    def run(data, base, draw):
        tried["n"] += 1
        path = files.write(data)
        try:
            if kind == "gold":
                sentences = [g.possible for g in read_gold(path, base)]
                assert all(g.sure <= g.possible for g in read_gold(path, base))
            else:
                sentences = read_hypothesis(path, base)
            _check_links(sentences)
            if sentences:  # the --src/--tgt check: inside the bounds or an error
                n = len(sentences)
                src, tgt = draw.draw(st.lists(st.integers(0, 16), min_size=n, max_size=n)), \
                    draw.draw(st.lists(st.integers(0, 16), min_size=n, max_size=n))
                check_lengths(sentences, path, src, tgt)
                _check_links(sentences, src, tgt)
                outcomes["within bounds"] = outcomes.get("within bounds", 0) + 1
            outcomes["parsed"] = outcomes.get("parsed", 0) + 1
        except AlignmentFileError as err:
            _one_line(err, path)
            outcomes["error"] = outcomes.get("error", 0) + 1

    run()
    _report(f"talp/Pharaoh ({kind})", tried, outcomes)


_LINKS = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), max_size=5)


@st.composite
def fairseq_outputs(draw):
    """A fairseq-generate output (sentences in any order, --nbest k), then perhaps damaged."""
    n, k = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    sentences = [[draw(_LINKS) for _ in range(k)] for _ in range(n)]
    order = draw(st.permutations(range(n)))
    lines = []
    for i in order:
        lines += [f"S-{i}\tsrc words", f"T-{i}\ttgt words"]
        for links in sentences[i]:
            lines += [f"H-{i}\t-0.5\thyp", f"P-{i}\t-0.1", "A-%d\t%s" % (i, " ".join(f"{a}-{b}" for a, b in links))]
    damage = draw(st.sampled_from(["none", "none", "drop", "duplicate", "insert", "truncate"]))
    if lines and damage != "none":
        at = draw(st.integers(0, len(lines) - 1))
        if damage == "drop":
            del lines[at]
        elif damage == "duplicate":
            lines.insert(at, lines[draw(st.integers(0, len(lines) - 1))])
        elif damage == "insert":
            lines.insert(at, draw(st.one_of(_TEXT, st.sampled_from(["A-", "A-x\t0-0", "S-\t", "A-1 0-0"]))))
        else:
            lines[at] = lines[at][: draw(st.integers(0, len(lines[at])))]
    index = draw(st.integers(0, k))
    return "\n".join(lines) + "\n", damage, sentences, index


def test_fuzz_fairseq_generate_output():
    files, tried, outcomes = _Files(), {"n": 0}, {}

    @FUZZ
    @given(case=fairseq_outputs())
    def run(case):
        tried["n"] += 1
        text, damage, sentences, index = case
        path = files.write(text)
        try:
            hyp = read_hypothesis(path, 0, nbest_index=index)
        except AlignmentFileError as err:
            _one_line(err, path)
            if damage == "none":  # an intact output fails only for an impossible --nbest-index
                assert index >= len(sentences[0]) or not sentences, str(err)
            outcomes["error"] = outcomes.get("error", 0) + 1
            return
        _check_links(hyp)
        if damage == "none":
            assert hyp == [set(s[index]) for s in sentences]  # the documented --nbest rule
        outcomes[f"parsed ({damage})"] = outcomes.get(f"parsed ({damage})", 0) + 1

    run()
    _report("fairseq-generate output", tried, outcomes)


@pytest.mark.parametrize("reference,hypothesis,same", [
    ("A B", "A  B", True),
    ("A <<unk>> C", "A <unk> C", True),  # T- escapes unknown words, H- does not
    ("A <<unk>> C", "A Bx C", True),
    ("Ros<<unk>>en gut", "Ros<unk>en gut", True),  # --post-process sentencepiece glues the pieces around it
    ("A B", "A B C", False),
    ("A <<unk>> C", "A B D C", False),  # an unknown word is one word
    ("A B", "", False),
])
def test_same_text(reference, hypothesis, same):
    assert same_text(reference, hypothesis) is same


def test_generate_texts_follow_the_scored_hypothesis(tmp_path):
    out = ("S-0\ta b\nT-0\tA B\nH-0\t-0.1\tA B\nD-0\t-0.1\tA B\nA-0\t0-0\nH-0\t-0.2\tB A\nD-0\t-0.2\tB A\nA-0\t1-0\n")
    (tmp_path / "gen").write_text(out)
    best = read_alignments(str(tmp_path / "gen"))
    assert best.texts == [SentenceText("a b", "A B", "A B")] and best.links == [{(0, 0)}]
    second = read_alignments(str(tmp_path / "gen"), nbest_index=1)
    assert second.texts[0].hypothesis == "B A" and second.links == [{(1, 0)}]
    with pytest.raises(AlignmentFileError, match=r"gen: the A- links of 1 of 1 sentences \(first: sentence 0\)"):
        check_aligns_reference(second)
    check_aligns_reference(best)
    # D- (detokenised, like T-) is compared, not H-: --tokenizer moses leaves H- tokenised
    (tmp_path / "moses").write_text("S-0\ta b\nT-0\tA, B\nH-0\t-0.1\tA , B\nD-0\t-0.1\tA, B\nA-0\t0-0\n")
    check_aligns_reference(read_alignments(str(tmp_path / "moses")))
    (tmp_path / "pharaoh").write_text("0-0\n")
    assert read_alignments(str(tmp_path / "pharaoh")).texts is None


@pytest.mark.parametrize("gold_base,hyp_base,delta,hints", [
    (1, 0, -1, ["--hyp-base 1", "--gold-base 0"]),
    (0, 0, -1, ["--hyp-base 1"]),
    (1, 1, -1, ["--gold-base 0"]),
    (0, 1, -1, []),
    (1, 0, 1, []),
    (0, 0, 1, ["--gold-base 1"]),
    (1, 1, 1, ["--hyp-base 0"]),
    (0, 1, 1, ["--hyp-base 0", "--gold-base 1"]),
])
def test_base_warning_hints_only_options_not_given(gold_base, hyp_base, delta, hints):
    gold = [Gold({(i, i) for i in range(1, 4)}, {(i, i) for i in range(1, 4)})]
    hyp = [{(i - delta, i - delta) for i in range(1, 4)}]  # fits the gold shifted by delta
    warning = base_warning(gold, hyp, "hyp", gold_base, hyp_base)
    assert f"shifted by {delta:+d}" in warning
    offered = re.findall(r"--(?:hyp|gold)-base [01]", warning.partition(" try ")[2])
    assert offered == hints, warning
    assert f"--gold-base {gold_base}" not in offered and f"--hyp-base {hyp_base}" not in offered


def test_base_warning_names_swapped_links():
    gold = [Gold({(0, 1), (1, 2), (2, 0)}, {(0, 1), (1, 2), (2, 0)})]
    swapped = [{(1, 0), (2, 1), (0, 2)}]
    assert "try with --reverse-hyp" in base_warning(gold, swapped, "hyp")
    assert "try without --reverse-hyp" in base_warning(gold, swapped, "hyp", reversed_=True)
    assert base_warning(gold, [g.sure for g in gold], "hyp") is None


def test_generate_links_checked_against_their_own_texts_when_asked(tmp_path):
    """S- and H- give each sentence's word counts: a link past them is an error naming sentence and link."""
    path = tmp_path / "gen"
    path.write_text("S-0\ta b c\nH-0\t-1\tA B\nA-0\t0-0 2-1\nS-1\ta b c\nH-1\t-1\tA B C\nA-1\t0-0 32-1\n")
    assert read_alignments(str(path)).links[1] == {(0, 0), (32, 1)}  # not asked: read as before
    with pytest.raises(AlignmentFileError, match=r"gen:6: sentence 1: link 32-1 is past the sentence length "
                                                 r"\(3 source words in its S- line, 3 target words"):
        read_alignments(str(path), text_lengths=True)
    path.write_text("S-0\ta b c\nH-0\t-1\tA B\nA-0\t1-3\n")  # 1-based 1-3: target word 2 of 2 words
    with pytest.raises(AlignmentFileError, match=r"sentence 0: link 1-3 .*2 target words"):
        read_alignments(str(path), base=1, text_lengths=True)
    path.write_text("S-0\ta b c\nH-0\t-1\tA B\nA-0\t2-1\n")
    assert read_alignments(str(path), text_lengths=True, reverse=True).links == [{(1, 2)}]  # file orientation


def test_index_base_error_names_the_callers_option(tmp_path):
    path = tmp_path / "links"
    path.write_text("0-1\n")
    with pytest.raises(AlignmentFileError, match=r"see --forward-base\)$"):
        read_alignments(str(path), base=1, base_flag="--forward-base")
    with pytest.raises(AlignmentFileError, match=r"see --gold-base\)$"):
        read_gold(str(path), base=1)


@pytest.mark.unit
def test_paired_bootstrap_difference_and_interval():
    """The point estimate is AER(a) - AER(b) on all sentences; the interval is the percentiles of the same
    difference on resampled sentences (an independent loop with numpy's generator), and it shrinks to the
    point when a and b differ by the same links in every sentence-independent way."""
    import numpy as np

    from fairseq_rela.alignment.aer import paired_bootstrap

    rng = np.random.default_rng(1)
    gold, a, b = [], [], []
    for _ in range(60):
        sure = {(i, i) for i in range(5)}
        gold.append(Gold(sure, sure | {(0, 1)}))
        a.append({(i, i) for i in range(5) if rng.random() < 0.8} | ({(2, 3)} if rng.random() < 0.3 else set()))
        b.append({(i, i) for i in range(5) if rng.random() < 0.6})
    got = paired_bootstrap(gold, a, b, samples=500, seed=3)
    assert got.difference == pytest.approx(alignment_error_rate(gold, a).aer - alignment_error_rate(gold, b).aer)
    assert got.low < got.difference < got.high < 0  # a is better, and clearly so on 60 sentences
    diffs = []
    for _ in range(2000):
        idx = rng.integers(0, len(gold), len(gold))
        g = [gold[i] for i in idx]
        diffs.append(alignment_error_rate(g, [a[i] for i in idx]).aer
                     - alignment_error_rate(g, [b[i] for i in idx]).aer)
    low, high = np.percentile(diffs, [2.5, 97.5])
    assert got.low == pytest.approx(low, abs=0.02) and got.high == pytest.approx(high, abs=0.02)
    same = paired_bootstrap(gold, a, a, samples=50)
    assert same.difference == same.low == same.high == 0
    with pytest.raises(ValueError, match="gold has 60 sentences, the hypotheses 59 and 60"):
        paired_bootstrap(gold, a[:-1], b)


def test_base_warning_does_not_reward_links_a_shift_drops():
    """Issue 36: with only possible gold links AER is 1 - precision, so shifting by -1 (which drops the links
    at index 0) looked far better on a correctly based file; dropped links now count as misses."""
    n = 8
    band = {(i, j) for i in range(n) for j in range(n) if abs(i - j) <= 1}
    gold = [Gold(set(), band) for _ in range(5)]
    hyp = [{(i, i) for i in range(n)} | {(0, j) for j in range(n)} for _ in range(5)]  # diagonal + a wrong row 0
    assert alignment_error_rate(gold, hyp).aer > 0.3  # poor, but not from the base
    assert base_warning(gold, hyp, "hyp") is None
    order = [Gold(set(), {(i, 3 * i % n) for i in range(n)}) for _ in range(5)]  # a truly 1-based file still warns
    ones = [{(i + 1, j + 1) for i, j in g.possible} | {(1, 1)} for g in order]
    assert "shifted by -1" in base_warning(order, ones, "hyp")


def _fine_grained():
    """6 sentences of different lengths and quality: a fine-grained bootstrap distribution."""
    gold, a, b = [], [], []
    for k in range(6):
        n = 3 + k
        sure = {(i, i) for i in range(n)}
        gold.append(Gold(sure, sure | {(0, n - 1)}))
        a.append({(i, i) for i in range(n) if (i * (k + 2)) % 5 != 0} | ({(1, 0)} if k % 2 else set()))
        b.append({(i, i) for i in range(n) if (i + k) % 3 != 0} | ({(0, n - 1), (2, 1)} if k % 3 == 0 else set()))
    return gold, a, b


def _one_outlier():
    """1 long sentence that a aligns and b does not, 5 short ones the other way round: the difference is set by
    how many copies of the long one a resample holds, k of n (k of n - 1 gives values no n-resample has)."""
    long_, short = {(i, i) for i in range(10)}, {(0, 0), (1, 1)}
    gold = [Gold(long_, long_)] + [Gold(short, short)] * 5
    return gold, [long_] + [set()] * 5, [set()] + [short] * 5


@pytest.mark.parametrize("data", [_fine_grained, _one_outlier])
def test_paired_bootstrap_interval_sits_at_the_exact_percentiles(data):
    """On 6 sentences every one of the 6^6 equally likely resamples can be enumerated: the exact bootstrap
    distribution of AER(a) - AER(b).  The interval's ends must sit at its 2.5th and 97.5th percentiles (the
    exact distribution's mass below/at each end within 0.01), which a 95th percentile or resamples of n - 1
    sentences miss."""
    import itertools

    from fairseq_rela.alignment.aer import paired_bootstrap

    gold, a, b = data()
    exact = sorted(alignment_error_rate([gold[i] for i in idx], [a[i] for i in idx]).aer
                   - alignment_error_rate([gold[i] for i in idx], [b[i] for i in idx]).aer
                   for idx in itertools.product(range(6), repeat=6))

    def mass(value):  # the exact distribution's share below and at or below value
        below = sum(d < value - 1e-12 for d in exact) / len(exact)
        return below, sum(d <= value + 1e-12 for d in exact) / len(exact)

    got = paired_bootstrap(gold, a, b, samples=4000, seed=5)
    for end, q in ((got.low, 0.025), (got.high, 0.975)):
        below, at = mass(end)
        assert below <= q + 0.01 and at >= q - 0.01, (end, q, below, at)
