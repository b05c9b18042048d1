"""Symmetrisation of two directional word alignments (Koehn et al. 2005): intersection, union,
grow-diag and grow-diag-final-and.  Links are (source, target) in both inputs."""
from typing import Callable, Dict, Set, Tuple

Link = Tuple[int, int]
_NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))


def _grow(forward: Set[Link], reverse: Set[Link]) -> Tuple[Set[Link], Set[int], Set[int]]:
    union = forward | reverse
    links = set(forward & reverse)
    src_aligned = {s for s, _ in links}
    tgt_aligned = {t for _, t in links}
    grown = True
    while grown:
        grown = False
        for s, t in sorted(links):
            for ds, dt in _NEIGHBOURS:
                cand = (s + ds, t + dt)
                if cand in union and cand not in links and (cand[0] not in src_aligned or cand[1] not in tgt_aligned):
                    links.add(cand)
                    src_aligned.add(cand[0])
                    tgt_aligned.add(cand[1])
                    grown = True
    return links, src_aligned, tgt_aligned


def grow_diag(forward: Set[Link], reverse: Set[Link]) -> Set[Link]:
    """Start from the intersection and grow into neighbouring (also diagonal) union links that cover
    an unaligned word."""
    return _grow(forward, reverse)[0]


def grow_diag_final_and(forward: Set[Link], reverse: Set[Link]) -> Set[Link]:
    """grow-diag, then add union links whose words are both unaligned ("final-and")."""
    links, src_aligned, tgt_aligned = _grow(forward, reverse)
    for direction in (forward, reverse):
        for s, t in sorted(direction):
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
