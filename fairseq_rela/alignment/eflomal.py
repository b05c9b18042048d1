"""A strong statistical baseline: eflomal (Östling & Tiedemann 2016) trained on the same parallel
text plus the test sentences, forward, reverse and grow-diag-final-and."""
import os
import tempfile
from typing import Dict, List, Sequence, Set, Tuple

from fairseq_rela.alignment.aer import read_hypothesis
from fairseq_rela.alignment.symmetrize import grow_diag_final_and

Link = Tuple[int, int]


def eflomal_alignments(train_src: Sequence[str], train_tgt: Sequence[str], test_src: Sequence[str],
                       test_tgt: Sequence[str], seed_iterations=None) -> Dict[str, List[Set[Link]]]:
    """Links for the test pairs: ``{"eflomal-fwd": ..., "eflomal-rev": ..., "eflomal-gdfa": ...}``."""
    from eflomal import Aligner

    if len(train_src) != len(train_tgt) or len(test_src) != len(test_tgt):
        raise ValueError("eflomal baseline: source and target sides differ in length")
    src = list(train_src) + list(test_src)
    tgt = list(train_tgt) + list(test_tgt)
    n_test = len(test_src)
    with tempfile.TemporaryDirectory() as tmp:
        fwd_path, rev_path = os.path.join(tmp, "fwd"), os.path.join(tmp, "rev")
        Aligner(n_iterations=seed_iterations).align(
            [line + "\n" for line in src], [line + "\n" for line in tgt],
            links_filename_fwd=fwd_path, links_filename_rev=rev_path, quiet=True)
        fwd = read_hypothesis(fwd_path, base=0)[-n_test:]
        rev = read_hypothesis(rev_path, base=0)[-n_test:]
    return {"eflomal-fwd": fwd, "eflomal-rev": rev,
            "eflomal-gdfa": [grow_diag_final_and(f, r) for f, r in zip(fwd, rev)]}

