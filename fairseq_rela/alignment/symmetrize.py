"""Symmetrisation of two directional word alignments (Koehn et al. 2005): intersection, union,
grow-diag and grow-diag-final-and.  Links are (source, target) in both inputs.  Before that, the
checks of what can be checked: that two fairseq-generate outputs hold the same sentences in opposite
directions (:func:`check_pairing`), and which side is the source (:func:`check_orientation`)."""
import bisect
import re
from typing import Callable, Dict, List, Sequence, Set, Tuple

from fairseq_rela.alignment.aer import Alignments, AlignmentFileError

Link = Tuple[int, int]
# Moses' symal, in its (target, source) coordinates: up, left, down, right, then the diagonals
_NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))


def _grow(forward: Set[Link], reverse: Set[Link]) -> Tuple[Set[Link], Set[int], Set[int]]:
    """The intersection grown as Moses' ``symal`` does: its points are scanned in (target, source)
    order, a point added during a scan is scanned later in the same scan if it sorts after the current
    one, and scans repeat until nothing is added."""
    union = forward | reverse
    links = set(forward & reverse)
    src_aligned = {s for s, _ in links}
    tgt_aligned = {t for _, t in links}
    grown = True
    while grown:
        grown = False
        order = sorted((t, s) for s, t in links)
        i = 0
        while i < len(order):
            t, s = order[i]
            for dt, ds in _NEIGHBOURS:
                cand = (s + ds, t + dt)
                if cand in union and cand not in links and (cand[0] not in src_aligned or cand[1] not in tgt_aligned):
                    links.add(cand)
                    src_aligned.add(cand[0])
                    tgt_aligned.add(cand[1])
                    grown = True
                    key = (cand[1], cand[0])
                    bisect.insort(order, key)
                    i += key < (t, s)  # inserted before the current point: keep the place
            i += 1
    return links, src_aligned, tgt_aligned


def grow_diag(forward: Set[Link], reverse: Set[Link]) -> Set[Link]:
    """Start from the intersection and grow into neighbouring (also diagonal) union links that cover
    an unaligned word."""
    return _grow(forward, reverse)[0]


def grow_diag_final_and(forward: Set[Link], reverse: Set[Link]) -> Set[Link]:
    """grow-diag, then add union links whose words are both unaligned ("final-and"): the forward's,
    then the reverse's, each in (target, source) order (as ``symal``)."""
    links, src_aligned, tgt_aligned = _grow(forward, reverse)
    for direction in (forward, reverse):
        for t, s in sorted((t, s) for s, t in direction):
            if s not in src_aligned and t not in tgt_aligned:
                links.add((s, t))
                src_aligned.add(s)
                tgt_aligned.add(t)
    return links


METHODS: Dict[str, Callable[[Set[Link], Set[Link]], Set[Link]]] = {
    "grow-diag-final-and": grow_diag_final_and,
    "grow-diag": grow_diag,
    "intersection": lambda forward, reverse: forward & reverse,
    "union": lambda forward, reverse: forward | reverse,
}


_LINE = {"source": "S-", "reference": "T-"}
_MARKS = re.compile(r"\s+|\u2581|@@")
_UNKS = re.compile(r"<<unk>>|<unk>")


def _pieces(text: str) -> List[str]:
    """The text between unknown words, without spaces and subword marks, case-folded."""
    return [_MARKS.sub("", piece).casefold() for piece in _UNKS.split(text)]


def same_sentence(a: str, b: str) -> bool:
    """Whether two texts are the same sentence whatever their subword pieces (``▁``, ``@@``), spaces
    (tokenisation, ``--post-process``) and case; an unknown word (``<unk>``, ``<<unk>>``: the two
    models' dictionaries differ) stands for any text."""
    pa, pb = _pieces(a), _pieces(b)
    if len(pa) == 1 and len(pb) == 1:
        return pa == pb
    if len(pa) == 1 or len(pb) == 1:  # unknown words on one side: they match anything on the other
        known, other = (pa[0], pb) if len(pa) == 1 else (pb[0], pa)
        return re.fullmatch(".*".join(map(re.escape, other)), known, re.DOTALL) is not None
    # on both sides: what precedes the first and follows the last unknown word must agree
    first, last = sorted((pa[0], pb[0]), key=len), sorted((pa[-1], pb[-1]), key=len)
    return first[1].startswith(first[0]) and last[1].endswith(last[0])


def _agree(texts_a, texts_b, side_a: str, side_b: str) -> Tuple[List[int], int]:
    """Sentences whose ``side_a`` text of one output is not the ``side_b`` text of the other; sentences compared."""
    differ, compared = [], 0
    for i, (a, b) in enumerate(zip(texts_a, texts_b)):
        x, y = getattr(a, side_a), getattr(b, side_b)
        if x is not None and y is not None:
            compared += 1
            if not same_sentence(x, y):
                differ.append(i)
    return differ, compared


def check_pairing(forward: Alignments, backward: Alignments, reverse: bool = True) -> None:
    """Two fairseq-generate outputs of the same sentences in opposite directions: the forward's ``S-``
    text is the backward's ``T-`` text and the other way round (``reverse=False``, a backward already
    source-target: ``S-`` is ``S-``, ``T-`` is ``T-``).  Anything else is an error; outputs without
    these lines (Pharaoh files) are not checked.  Swapping the two outputs keeps them paired: see
    :func:`check_orientation`."""
    if not (forward.texts and backward.texts):
        return
    other = ("reference", "source") if reverse else ("source", "reference")
    bad_s, compared_s = _agree(forward.texts, backward.texts, "source", other[0])
    bad_t, compared_t = _agree(forward.texts, backward.texts, "reference", other[1])
    if not (bad_s or bad_t):
        return
    same, _ = _agree(forward.texts, backward.texts, "source", other[1])  # the same direction twice?
    fwd, bwd = forward.path, backward.path
    if compared_s and len(same) < compared_s / 2 <= len(bad_s):
        what = ("the same direction: --backward must be the other direction's output (or, if its links "
                "are already source-target, pass --no-reverse-backward)") if reverse else \
            "opposite directions: drop --no-reverse-backward"
        raise AlignmentFileError(f"{fwd} and {bwd} are {what} ({len(bad_s)} of {compared_s} sentences: the S- text "
                                 f"of the one is the {'S-' if reverse else 'T-'} text of the other)")
    i, side, their = (bad_s[0], "S-", other[0]) if bad_s and (not bad_t or bad_s[0] <= bad_t[0]) \
        else (bad_t[0], "T-", other[1])
    raise AlignmentFileError(
        f"{fwd} and {bwd} do not hold the same sentences in the same order: sentence {i}'s {side} text in "
        f"--forward is not its {_LINE[their]} text in --backward "
        f"({len(set(bad_s) | set(bad_t))} of {max(compared_s, compared_t)} sentences differ)")


def check_orientation(alignments: Alignments, src: Sequence[str], tgt: Sequence[str], source_side: str) -> None:
    """A fairseq-generate output's texts against the ``--src``/``--tgt`` sentences: an error when its
    ``source_side`` text (``source`` for S-, ``reference`` for T-) is the ``--tgt`` text and the other
    the ``--src`` text for most sentences (the directions are swapped).  Texts that match neither (another
    tokenisation, say) are not an error: :func:`fairseq_rela.alignment.aer.check_lengths` checks the indices."""
    if not alignments.texts:
        return
    target_side = "reference" if source_side == "source" else "source"
    straight = swapped = 0
    for t, s_line, t_line in zip(alignments.texts, src, tgt):
        a, b = getattr(t, source_side), getattr(t, target_side)
        if a is None or b is None:
            continue
        straight += same_sentence(a, s_line) and same_sentence(b, t_line)
        swapped += same_sentence(a, t_line) and same_sentence(b, s_line)
    if swapped > max(straight, len(alignments.texts) / 2):
        raise AlignmentFileError(
            f"{alignments.path}: its {_LINE[source_side]} lines are the --tgt text and its {_LINE[target_side]} "
            f"lines the --src text ({swapped} of {len(alignments.texts)} sentences): --forward and --backward "
            f"are swapped (or --src and --tgt)")
