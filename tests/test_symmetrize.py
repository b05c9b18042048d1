"""The symmetrisation functions (analysis/symmetrize.py) on hand-made cases."""
import pytest

from fairseq_rela.alignment.symmetrize import grow_diag_final_and

pytestmark = pytest.mark.unit


def test_grow_diag_final_and():
    fwd = {(0, 0), (1, 1), (3, 4)}
    rev = {(0, 0), (1, 1), (1, 2), (5, 4)}
    # intersection {00, 11}; grow: (1,2) neighbours (1,1) and covers the unaligned target 2;
    # (3,4) and (5,4) touch nothing aligned; final-and: (3,4) first, then (5,4)'s target is taken
    assert grow_diag_final_and(fwd, rev) == {(0, 0), (1, 1), (1, 2), (3, 4)}
    # diagonal growth: a chain of neighbours is followed
    assert grow_diag_final_and({(0, 0), (1, 1), (2, 2)}, {(0, 0)}) == {(0, 0), (1, 1), (2, 2)}
