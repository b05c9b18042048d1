"""Link extraction and subword merging (analysis/alignment.py: align, word_ids, merge styles and rules) on
hand-made cases, and a property-based fuzz (hypothesis) of the subword merge."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fairseq_rela.alignment.links import MERGE_RULES, MERGE_STYLES, align, word_ids
from tests.helpers import FUZZ

pytestmark = pytest.mark.unit

SRC = ["a", "b", "c", "</s>"]
TGT = ["A", "B", "C"]


def _matrix(rows):
    return np.array(rows, dtype=float)


def test_awo_reads_the_predicting_row_awi_the_input_row():
    # rows: decoder positions 0..3 (input </s> A B C); row t predicts TGT[t]
    m = _matrix([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]])
    awo, _ = align(m, SRC, TGT, shift=False)
    awi, _ = align(m, SRC, TGT, shift=True)
    assert awo == [(2, 0), (1, 1), (0, 2)]
    assert awi == [(1, 0), (0, 1)]  # row 3 (input C) points at </s>: C is left unaligned


def test_eos_and_null_rows_are_never_aligned():
    m = _matrix([[0, 0, 0, 5], [0, 0, 0, 0], [0.2, 0, 0, 0.1], [0, 0, 0, 0]])
    links, soft = align(m, SRC, TGT)
    assert links == [(0, 2)]
    assert soft.shape == (3, 3)  # </s> column dropped


def test_sentencepiece_merge_sums_source_and_averages_target():
    src = ["\u2581Ros", "in", "en", "\u2581gut", "</s>"]
    tgt = ["\u2581rai", "sins", "\u2581good"]
    assert word_ids(src[:-1], "sentencepiece") == [0, 0, 0, 1]
    m = _matrix([[0.2, 0.2, 0.2, 0.3, 0], [0.0, 0.0, 0.0, 0.9, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]])
    links, soft = align(m, src, tgt, src_style="sentencepiece", tgt_style="sentencepiece")
    # "raisins" = mean of rows 0,1: Rosinen 0.3, gut 0.6 -> gut; with "any" row 0 alone links Rosinen
    np.testing.assert_allclose(soft[0], [0.3, 0.6])
    assert links == [(1, 0), (1, 1)]
    any_links, _ = align(m, src, tgt, src_style="sentencepiece", tgt_style="sentencepiece", rule="any")
    assert any_links == [(1, 0), (1, 1)]
    m[0] = [0.5, 0.1, 0.1, 0.3, 0]
    any_links, _ = align(m, src, tgt, src_style="sentencepiece", tgt_style="sentencepiece", rule="any")
    assert any_links == [(0, 0), (1, 0), (1, 1)]


def test_subword_nmt_merge():
    assert word_ids(["Ros@@", "in@@", "en", "gut"], "subword_nmt") == [0, 0, 0, 1]
    with pytest.raises(ValueError, match="unknown value 'bpe'"):
        word_ids(["x"], "bpe")


_PIECES = st.sampled_from(["a", "b", "\u2581a", "\u2581b", "\u2581", "a@@", "@@", "b@@", "</s>", "", "x y"])


def test_fuzz_subword_merge():
    tried, outcomes = {"n": 0}, {}

    @FUZZ
    @given(src=st.lists(_PIECES, max_size=7), tgt=st.lists(_PIECES, max_size=7), eos=st.booleans(),
           shift=st.booleans(), src_style=st.sampled_from(MERGE_STYLES), tgt_style=st.sampled_from(MERGE_STYLES),
           rule=st.sampled_from(MERGE_RULES), seed=st.integers(0, 2 ** 16), zeros=st.floats(0, 1))
    def run(src, tgt, eos, shift, src_style, tgt_style, rule, seed, zeros):
        tried["n"] += 1
        src = src + ["</s>"] if eos else src
        rng = np.random.default_rng(seed)
        rows = len(tgt) + 1  # decoder positions: </s> y1 .. yn
        matrix = rng.random((rows, len(src))) * (rng.random((rows, len(src))) > zeros)
        try:
            links, words = align(matrix, src, tgt, shift, src_style, tgt_style, rule)
        except ValueError as err:
            assert "\n" not in str(err)
            outcomes["error"] = outcomes.get("error", 0) + 1
            return
        words_src = src[:-1] if src and src[-1] == "</s>" else src
        n_src = len(set(word_ids(words_src, src_style)))
        n_tgt = len(set(word_ids(tgt, tgt_style)))
        assert words.shape == (n_tgt, n_src)
        for s, t in links:
            assert 0 <= s < n_src and 0 <= t < n_tgt
        if rule == "sum_mean":
            assert len({t for _, t in links}) == len(links)  # one source word per target word at most
        outcomes["links"] = outcomes.get("links", 0) + 1

    run()
    print(f"\nsubword merge: {tried['n']} cases tried, outcomes {outcomes}")
    assert tried["n"] >= FUZZ.max_examples and outcomes.get("links", 0) > FUZZ.max_examples // 2


class _Dict:
    """The two attributes of a fairseq dictionary that the merge styles read."""

    def __init__(self, *words):
        self.nspecial, self.symbols = 4, ["<s>", "<pad>", "</s>", "<unk>", *words]


@pytest.mark.parametrize("words", [("the@@", "cat", "sat"), ("the", "cat", "sat")])
def test_sentencepiece_merge_refused_on_a_vocabulary_without_pieces(words):
    from fairseq_rela.alignment.links import merge_styles
    from fairseq_rela.errors import OptionError

    spm = _Dict("\u2581the", "cat", "\u2581sat")
    for src, tgt, side in ((_Dict(*words), spm, "source"), (spm, _Dict(*words), "target")):
        with pytest.raises(OptionError, match=f"--alignment-merge sentencepiece: the {side} dictionary .*\u2581"):
            merge_styles("sentencepiece", src, tgt, "--alignment-merge")
    assert merge_styles("sentencepiece", spm, spm) == ("sentencepiece", "sentencepiece")
    assert merge_styles("subword_nmt", _Dict(*words), _Dict(*words)) == ("subword_nmt", "subword_nmt")
