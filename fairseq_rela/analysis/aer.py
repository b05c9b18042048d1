"""Alignment error rate (Och & Ney 2003) against gold links with sure and possible links.

    AER = 1 - (|A ∩ S| + |A ∩ P|) / (|A| + |S|),   precision = |A ∩ P| / |A|,   recall = |A ∩ S| / |S|

with P ⊇ S.  Gold files are talp format (``i-j`` sure, ``ipj`` possible; 1-based by default, source
index first); hypotheses are Pharaoh ``i-j`` lines (0-based by default: fairseq, fast_align,
eflomal) or a ``fairseq-generate`` output whose ``A-ID`` lines are read in sentence order.
Every problem names the file and line.
"""
import logging
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Set, Tuple

logger = logging.getLogger(__name__)
Link = Tuple[int, int]
_LINK = re.compile(r"^(\d+)([-p])(\d+)$")


class AlignmentFileError(ValueError):
    """A problem in an alignment file, reported as ``FILE:LINE: problem``."""


@dataclass
class Gold:
    sure: Set[Link]
    possible: Set[Link]  # includes the sure links


def _parse(text: str, base: int, path: str, lineno: int, allow_possible: bool) -> Tuple[Set[Link], Set[Link]]:
    sure, possible = set(), set()
    for item in text.split():
        m = _LINK.match(item)
        if not m or (m.group(2) == "p" and not allow_possible):
            form = "i-j or ipj" if allow_possible else "i-j"
            raise AlignmentFileError(f"{path}:{lineno}: malformed link {item!r} (expected {form})")
        i, j = int(m.group(1)) - base, int(m.group(3)) - base
        if i < 0 or j < 0:
            raise AlignmentFileError(f"{path}:{lineno}: link {item!r} has index 0, impossible in a {base}-based file "
                                     f"(is the index base wrong? see --gold-base/--hyp-base)")
        (sure if m.group(2) == "-" else possible).add((i, j))
    return sure, possible | sure


def _lines(path: str) -> List[str]:
    with open(path, encoding="utf-8", newline="\n") as f:
        return [line.rstrip("\n").rstrip("\r") for line in f]


def read_gold(path: str, base: int = 1) -> List[Gold]:
    gold = []
    for n, line in enumerate(_lines(path), 1):
        if not line.strip():
            logger.warning("%s:%d: empty line (a sentence with no gold links)", path, n)
        gold.append(Gold(*_parse(line, base, path, n, allow_possible=True)))
    return gold


def read_hypothesis(path: str, base: int = 0, reverse: bool = False) -> List[Set[Link]]:
    """Pharaoh lines, or the ``A-ID`` lines of a fairseq-generate output (sorted by ID)."""
    lines = _lines(path)
    if any(line.startswith("A-") for line in lines):
        by_id = {}
        for n, line in enumerate(lines, 1):
            if line.startswith("A-"):
                ident, _, text = line[2:].partition("\t")
                if not ident.isdigit():
                    raise AlignmentFileError(f"{path}:{n}: malformed fairseq alignment line (expected A-ID<TAB>links)")
                by_id[int(ident)] = (n, text)
        missing = sorted(set(range(len(by_id))) - set(by_id))
        if missing:
            raise AlignmentFileError(f"{path}: no A- line for sentence {missing[0]} ({len(missing)} missing): "
                                     "was a batch dropped? run fairseq-generate with --required-batch-size-multiple 1")
        entries = [by_id[i] for i in range(len(by_id))]
    else:
        entries = list(enumerate(lines, 1))
    hyp = []
    for n, text in entries:
        links, _ = _parse(text, base, path, n, allow_possible=False)
        hyp.append({(j, i) for i, j in links} if reverse else links)
    return hyp


def check_lengths(links: Sequence[Set[Link]], path: str, src_lens: Sequence[int], tgt_lens: Sequence[int]) -> None:
    for n, (ls, s, t) in enumerate(zip(links, src_lens, tgt_lens), 1):
        for i, j in sorted(ls):
            if i >= s or j >= t:
                raise AlignmentFileError(f"{path}:{n}: link {i}-{j} (0-based) is past the sentence length "
                                         f"({s} source, {t} target words): wrong index base or wrong file?")


@dataclass
class AERResult:
    aer: float
    precision: float
    recall: float
    hyp_links: int
    sure_links: int
    possible_links: int
    sentences: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def __str__(self) -> str:
        return (f"AER {100 * self.aer:.1f}  precision {100 * self.precision:.1f}  recall {100 * self.recall:.1f}  "
                f"links {self.hyp_links} (hyp) / {self.sure_links} sure / {self.possible_links} possible  "
                f"sentences {self.sentences}")


def alignment_error_rate(gold: Sequence[Gold], hyp: Sequence[Set[Link]]) -> AERResult:
    if len(gold) != len(hyp):
        raise ValueError(f"gold has {len(gold)} sentences, hypothesis {len(hyp)}")
    a_s = a_p = n_a = n_s = n_p = 0
    for g, a in zip(gold, hyp):
        a_s += len(a & g.sure)
        a_p += len(a & g.possible)
        n_a += len(a)
        n_s += len(g.sure)
        n_p += len(g.possible)
    aer = 1.0 - (a_s + a_p) / (n_a + n_s) if n_a + n_s else 0.0
    return AERResult(aer, a_p / n_a if n_a else 0.0, a_s / n_s if n_s else 0.0, n_a, n_s, n_p, len(gold))


def shifted(hyp: Sequence[Set[Link]], delta: int) -> List[Set[Link]]:
    return [{(i + delta, j + delta) for i, j in links if i + delta >= 0 and j + delta >= 0} for links in hyp]


def base_warning(gold: Sequence[Gold], hyp: Sequence[Set[Link]], hyp_path: str) -> Optional[str]:
    """A warning when the hypothesis fits the gold far better shifted by one (a wrong index base)."""
    plain = alignment_error_rate(gold, hyp).aer
    for delta, flag in ((-1, "--hyp-base 1"), (1, "a 0-based gold file (--gold-base 0)")):
        other = alignment_error_rate(gold, shifted(hyp, delta)).aer
        if other < plain - 0.15:
            return (f"{hyp_path}: links fit the gold much better shifted by {delta:+d} "
                    f"(AER {100 * other:.1f} vs {100 * plain:.1f}): is the index base right? try {flag}")
    return None
