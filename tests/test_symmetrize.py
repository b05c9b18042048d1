"""The symmetrisation functions and the pairing checks (alignment/symmetrize.py) on hand-made cases."""
import pytest

from fairseq_rela.alignment.aer import Alignments, AlignmentFileError, SentenceText
from fairseq_rela.alignment.symmetrize import (check_orientation, check_pairing, grow_diag, grow_diag_final_and,
                                               same_sentence)

pytestmark = pytest.mark.unit


def test_grow_diag_final_and():
    fwd = {(0, 0), (1, 1), (3, 4)}
    rev = {(0, 0), (1, 1), (1, 2), (5, 4)}
    # intersection {00, 11}; grow: (1,2) neighbours (1,1) and covers the unaligned target 2;
    # (3,4) and (5,4) touch nothing aligned; final-and: (3,4) first, then (5,4)'s target is taken
    assert grow_diag_final_and(fwd, rev) == {(0, 0), (1, 1), (1, 2), (3, 4)}
    # diagonal growth: a chain of neighbours is followed
    assert grow_diag_final_and({(0, 0), (1, 1), (2, 2)}, {(0, 0)}) == {(0, 0), (1, 1), (2, 2)}


def test_growth_into_diagonal_neighbours():
    # (1,1) touches (0,0) only diagonally; it covers source word 1 (unaligned) while target 1 is already
    # aligned by (3,1): grow-diag adds it, final-and (both words unaligned) never would
    fwd, rev = {(0, 0), (3, 1), (1, 1)}, {(0, 0), (3, 1)}
    assert grow_diag(fwd, rev) == {(0, 0), (3, 1), (1, 1)}
    assert grow_diag_final_and(fwd, rev) == {(0, 0), (3, 1), (1, 1)}
    # the other three diagonals, each alone next to its seed
    for ds, dt in ((-1, -1), (-1, 1), (1, -1)):
        seed, cand = (5, 5), (5 + ds, 5 + dt)
        assert grow_diag({seed, cand}, {seed}) == {seed, cand}


def test_growth_order_follows_moses_symal():
    """Worked by hand: intersection {0-0, 2-3}; scanned target first, 0-0 adds 0-1 (target 1 free), which
    is scanned in the same pass (it sorts after 0-0) and adds 0-2 (target 2 free); then 2-3 adds 1-3;
    2-2 comes too late (targets 2 and source 2 aligned).  Scanning only the points present when a pass
    began would let 2-2 take target 2 before 0-2."""
    fwd = {(0, 0), (0, 1), (0, 2), (2, 0), (2, 3), (3, 1), (4, 0)}
    rev = {(0, 0), (1, 3), (2, 2), (2, 3), (3, 3), (4, 1)}
    assert grow_diag(fwd, rev) == {(0, 0), (0, 1), (0, 2), (1, 3), (2, 3), (3, 3)}


@pytest.mark.parametrize("a,b,same", [
    ("▁Wir ▁glauben ▁nicht", "Wir glauben nicht", True),  # pieces against words
    ("Ros@@ in@@ en .", "Rosinen .", True),
    ("Wir glauben nicht", "wir  glauben nicht", True),  # case and spaces
    ("Wir <<unk>> nicht", "Wir glauben nicht", True),  # an unknown word stands for any text
    ("Wir gl<unk>n nicht", "Wir glauben nicht", True),
    ("<unk> glauben <unk>", "Wir <<unk>> nicht", True),  # unknown words on both sides
    ("Wir glauben nicht", "We do not believe", False),
    ("Wir <<unk>> nicht", "We do not believe", False),
    ("Wir <unk> nicht", "We <<unk>> believe", False),
    ("Wir glauben", "Wir glauben nicht", False),
])
def test_same_sentence(a, b, same):
    assert same_sentence(a, b) is same and same_sentence(b, a) is same


def _gen(path, pairs):
    return Alignments(path, [set() for _ in pairs], [SentenceText(s, t, t) for s, t in pairs])


DE_EN = [("Das stimmt nicht !", "But this is not what happens ."), ("Ja .", "Yes .")]
EN_DE = [(t, s) for s, t in DE_EN]


def test_check_pairing():
    check_pairing(_gen("fwd", DE_EN), _gen("bwd", EN_DE))
    check_pairing(_gen("fwd", DE_EN), _gen("bwd", DE_EN), reverse=False)
    with pytest.raises(AlignmentFileError, match=r"fwd and bwd are the same direction.*2 of 2 sentences"):
        check_pairing(_gen("fwd", DE_EN), _gen("bwd", DE_EN))
    with pytest.raises(AlignmentFileError, match=r"are opposite directions: drop --no-reverse-backward"):
        check_pairing(_gen("fwd", DE_EN), _gen("bwd", EN_DE), reverse=False)
    with pytest.raises(AlignmentFileError, match=r"not hold the same sentences in the same order: sentence 0's S- "
                                                 r"text in --forward is not its T- text in --backward \(2 of 2"):
        check_pairing(_gen("fwd", DE_EN), _gen("bwd", EN_DE[::-1]))
    check_pairing(_gen("fwd", DE_EN), Alignments("bwd", [set(), set()]))  # a Pharaoh file: nothing to check


def test_check_orientation():
    src, tgt = [s for s, _ in DE_EN], [t for _, t in DE_EN]
    check_orientation(_gen("fwd", DE_EN), src, tgt, "source")
    check_orientation(_gen("bwd", EN_DE), src, tgt, "reference")
    with pytest.raises(AlignmentFileError, match=r"fwd: its S- lines are the --tgt text .*2 of 2.*are swapped"):
        check_orientation(_gen("fwd", EN_DE), src, tgt, "source")
    with pytest.raises(AlignmentFileError, match=r"bwd: its T- lines are the --tgt text"):
        check_orientation(_gen("bwd", DE_EN), src, tgt, "reference")
    other = ["x y", "z"]  # texts matching neither side (another tokenisation): the lengths are checked instead
    check_orientation(_gen("fwd", EN_DE), other, other, "source")
