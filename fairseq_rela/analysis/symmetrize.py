"""Symmetrisation of two directional word alignments: grow-diag-final-and (Koehn et al. 2005)."""
from typing import Set, Tuple

Link = Tuple[int, int]
_NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))


def grow_diag_final_and(forward: Set[Link], reverse: Set[Link]) -> Set[Link]:
    """Start from the intersection, grow into neighbouring union links that cover an unaligned word,
    then add union links whose words are both unaligned ("final-and").  Links are (source, target)."""
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
    for direction in (forward, reverse):
        for s, t in sorted(direction):
            if s not in src_aligned and t not in tgt_aligned:
                links.add((s, t))
                src_aligned.add(s)
                tgt_aligned.add(t)
    return links
