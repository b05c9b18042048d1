"""Alignment error rate (Och & Ney 2003) against gold links with sure and possible links.

    AER = 1 - (|A ∩ S| + |A ∩ P|) / (|A| + |S|),   precision = |A ∩ P| / |A|,   recall = |A ∩ S| / |S|

with P ⊇ S.  Gold files are talp format (``i-j`` sure, ``ipj`` possible; 1-based by default, source
index first); hypotheses are Pharaoh ``i-j`` lines (0-based by default: fairseq, fast_align,
eflomal) or a ``fairseq-generate`` output whose ``A-ID`` lines are read in sentence order.
Every problem names the file and line (:class:`AlignmentFileError`).
"""
import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

from fairseq_rela.alignment.io import AlignmentFileError, read_lines

logger = logging.getLogger(__name__)
Link = Tuple[int, int]
_LINK = re.compile(r"([0-9]+)([-p])([0-9]+)", re.ASCII)  # ASCII digits only: no '٥', no full-width '５'
_ID = re.compile(r"[0-9]+", re.ASCII)
MAX_DIGITS = 7  # an index or id beyond 9,999,999 is not a sentence position: refuse it in one line


@dataclass
class Gold:
    sure: Set[Link]
    possible: Set[Link]  # includes the sure links


def _show(item: str, width: int = 40) -> str:
    """repr of a piece of input, shortened: error messages stay one readable line."""
    return repr(item if len(item) <= width else item[:width] + "...")


def _parse(text: str, base: int, path: str, lineno: int, allow_possible: bool,
           base_flag: str) -> Tuple[Set[Link], Set[Link]]:
    """Sure and possible links of one line; ``base_flag``: the caller's option that sets ``base``."""
    sure, possible = set(), set()
    for item in text.split():
        m = _LINK.fullmatch(item)
        if not m or (m.group(2) == "p" and not allow_possible):
            form = "i-j or ipj" if allow_possible else "i-j"
            raise AlignmentFileError(f"{path}:{lineno}: malformed link {_show(item)} (expected {form})")
        if len(m.group(1)) > MAX_DIGITS or len(m.group(3)) > MAX_DIGITS:
            raise AlignmentFileError(f"{path}:{lineno}: link {_show(item)}: index too large")
        i, j = int(m.group(1)) - base, int(m.group(3)) - base
        if i < 0 or j < 0:
            raise AlignmentFileError(f"{path}:{lineno}: link {item!r} has index 0, impossible in a {base}-based file "
                                     f"(is the index base wrong? see {base_flag})")
        (sure if m.group(2) == "-" else possible).add((i, j))
    return sure, possible | sure


def read_gold(path: str, base: int = 1, base_flag: str = "--gold-base") -> List[Gold]:
    """Gold links, talp format; a file without a single link is an error (it would score AER 0).
    ``base_flag``: the option that sets ``base``, named in errors."""
    gold = []
    for n, line in enumerate(read_lines(path), 1):
        if not line.strip():
            logger.warning("%s:%d: empty line (a sentence with no gold links)", path, n)
        gold.append(Gold(*_parse(line, base, path, n, allow_possible=True, base_flag=base_flag)))
    if not any(g.possible for g in gold):
        raise AlignmentFileError(f"{path}: no gold links at all ({len(gold)} lines): wrong file?")
    return gold


MISSING_HINT = ("sentences are missing from the fairseq-generate output: was the last batch dropped (run with "
                "--required-batch-size-multiple 1) or were sentences skipped by "
                "--skip-invalid-size-inputs-valid-test (fairseq-generate logs how many)?")


@dataclass
class SentenceText:
    """What a fairseq-generate output printed for one sentence (``None`` where the line is absent)."""
    source: Optional[str]  # S-
    reference: Optional[str]  # T-: post-processed and detokenised, unknown words escaped as <<unk>>
    hypothesis: Optional[str]  # the scored hypothesis: D- (treated like T-), else H-


@dataclass
class Alignments:
    """Links per sentence of a hypothesis file; ``texts`` only for a fairseq-generate output."""
    path: str
    links: List[Set[Link]]
    texts: Optional[List[SentenceText]] = None


def _fairseq_entries(lines: List[str], path: str, nbest_index: Optional[int],
                     sentences: Optional[int]) -> List[Tuple[int, str, SentenceText]]:
    """(line number, links text, texts) per sentence id 0..N-1 from a fairseq output's ``S-``/``A-`` lines
    (``T-``, ``H-``, ``D-`` give the texts).

    Repeated ids: the hypotheses of ``--nbest K`` follow their sentence's single ``S-`` line, best
    first; hypothesis ``nbest_index`` (default 0, the best) is taken.  Ids repeated any other way (two
    outputs concatenated, or ``A-`` lines without their ``S-`` lines) are an error naming them.
    """
    a_lines: Dict[int, List[Tuple[int, str]]] = defaultdict(list)
    s_count: Dict[int, int] = defaultdict(int)
    text: Dict[str, Dict[int, List[str]]] = {kind: defaultdict(list) for kind in ("S-", "T-", "H-", "D-")}
    outside = set()  # ids whose A- line is not in its own S- block
    current = None
    for n, line in enumerate(lines, 1):
        kind = line[:2]
        if kind in ("T-", "H-", "D-"):  # texts, used for checks only: a line of another shape is not recorded
            ident, tab, rest = line[2:].partition("\t")
            if _ID.fullmatch(ident) and len(ident) <= MAX_DIGITS and tab:
                text[kind][int(ident)].append(rest if kind == "T-" else rest.partition("\t")[2])
            continue
        if kind not in ("S-", "A-"):
            continue
        ident, tab, rest = line[2:].partition("\t")
        if not _ID.fullmatch(ident) or len(ident) > MAX_DIGITS or (kind == "A-" and not tab):
            raise AlignmentFileError(f"{path}:{n}: malformed fairseq {kind} line {_show(line)} "
                                     f"(expected {kind}ID<TAB>..., ASCII digits)")
        ident = int(ident)
        if kind == "S-":
            s_count[ident] += 1
            text["S-"][ident].append(rest)
            current = ident
        else:
            a_lines[ident].append((n, rest))
            if current != ident:
                outside.add(ident)
    repeated = sorted(i for i, a in a_lines.items() if len(a) > 1)
    doubled = sorted(i for i, c in s_count.items() if c > 1)

    def ids(xs):
        return ", ".join(map(str, xs[:5])) + (f" ... ({len(xs)} in all)" if len(xs) > 5 else "")

    if doubled:
        raise AlignmentFileError(f"{path}: sentence ids {ids(doubled)} appear in more than one S- line: "
                                 "two fairseq-generate outputs concatenated? score one at a time")
    if repeated and (not s_count or outside):
        raise AlignmentFileError(f"{path}: A- lines repeat for sentence ids {ids(repeated)} and cannot be told "
                                 "apart as --nbest hypotheses (each must follow its sentence's S- line): "
                                 "keep one A- line per sentence, or keep the S- lines")
    counts = sorted({len(a) for a in a_lines.values()})
    if len(counts) > 1:
        odd = sorted(i for i, a in a_lines.items() if len(a) != counts[-1])
        raise AlignmentFileError(f"{path}: sentences have {' or '.join(map(str, counts))} hypotheses each "
                                 f"(--nbest gives all the same): sentence ids {ids(odd)} have fewer")
    k = nbest_index or 0
    short = sorted(i for i, a in a_lines.items() if len(a) <= k)
    if short:
        raise AlignmentFileError(f"{path}: --nbest-index {k}, but sentence {short[0]} has only "
                                 f"{len(a_lines[short[0]])} hypothesis(es) ({len(short)} such sentences)")
    n_sent = sentences if sentences is not None else (max(a_lines) + 1 if a_lines else 0)
    extra = sorted(i for i in a_lines if i >= n_sent)
    if extra:
        raise AlignmentFileError(f"{path}: A- line for sentence id {extra[0]}, but there are only {n_sent} "
                                 "sentences (wrong file?)")
    missing = [i for i in range(n_sent) if i not in a_lines]
    if missing:
        raise AlignmentFileError(f"{path}: no A- line for sentence {missing[0]} ({len(missing)} of {n_sent} "
                                 f"missing): {MISSING_HINT}")

    def one(kind: str, i: int, per_hypothesis: bool = False) -> Optional[str]:
        found = text[kind].get(i, [])
        if per_hypothesis:  # the k-th of the sentence's hypotheses, if each has its line
            return found[k] if len(found) == len(a_lines[i]) else None
        return found[0] if len(found) == 1 else None

    return [(*a_lines[i][k], SentenceText(one("S-", i), one("T-", i),
                                          one("D-", i, True) if text["D-"] else one("H-", i, True)))
            for i in range(n_sent)]


def read_alignments(path: str, base: int = 0, reverse: bool = False, nbest_index: Optional[int] = None,
                    sentences: Optional[int] = None, base_flag: str = "--hyp-base",
                    text_lengths: bool = False) -> Alignments:
    """Pharaoh lines, or the ``A-ID`` lines of a fairseq-generate output (sorted by ID; see
    :func:`_fairseq_entries` for ``--nbest`` outputs) with its texts.  ``sentences``: the expected
    count, if known; ``base_flag``: the option that sets ``base``, named in errors; ``text_lengths``:
    check a fairseq-generate output's links against the word counts of its own S- and H-/D- lines."""
    lines = read_lines(path)
    texts = None
    if any(line.startswith("A-") for line in lines):
        entries = _fairseq_entries(lines, path, nbest_index, sentences)
        texts = [t for _, _, t in entries]
    else:
        if any(line[:2] in ("S-", "H-", "T-") for line in lines):
            raise AlignmentFileError(f"{path}: a fairseq-generate output without A- lines: "
                                     "run fairseq-generate with --print-alignment")
        if nbest_index:
            raise AlignmentFileError(f"{path}: --nbest-index applies to fairseq-generate outputs, not Pharaoh files")
        entries = [(n, line, None) for n, line in enumerate(lines, 1)]
    hyp = []
    for ident, (n, links_text, text) in enumerate(entries):
        links, _ = _parse(links_text, base, path, n, allow_possible=False, base_flag=base_flag)
        if text_lengths and text is not None:
            _check_text_lengths(links, text, path, n, ident, base)
        hyp.append({(j, i) for i, j in links} if reverse else links)
    return Alignments(path, hyp, texts)


def _check_text_lengths(links: Set[Link], text: SentenceText, path: str, lineno: int, ident: int,
                        base: int) -> None:
    """Links of a fairseq-generate sentence within the words (split on spaces, as :func:`same_text`)
    of its S- line and of the hypothesis its A- line aligns (H-/D-); unchecked where a line is absent."""
    if text.source is None or text.hypothesis is None:
        return
    s, t = len(text.source.split()), len(text.hypothesis.split())
    for i, j in sorted(links):
        if i >= s or j >= t:
            raise AlignmentFileError(
                f"{path}:{lineno}: sentence {ident}: link {i + base}-{j + base} is past the sentence length "
                f"({s} source words in its S- line, {t} target words in its H-/D- line): wrong index base or "
                f"links of another output? (--src/--tgt check against those texts instead)")


def read_hypothesis(path: str, base: int = 0, reverse: bool = False, nbest_index: Optional[int] = None,
                    sentences: Optional[int] = None) -> List[Set[Link]]:
    """The links of :func:`read_alignments`."""
    return read_alignments(path, base, reverse, nbest_index, sentences).links


_UNK = re.compile(r"<<unk>>|<unk>")
HYPOTHESES_FLAG = "--allow-hypothesis-links"


def same_text(reference: str, hypothesis: str) -> bool:
    """Whether a hypothesis (H-/D-) is the reference (T-) word for word; an unknown word of the
    reference (``<<unk>>``, subword pieces post-processed around it or not) matches anything but a space."""
    parts = reference.split()
    hyp = " ".join(hypothesis.split())
    if "<<unk>>" not in reference:
        return " ".join(parts) == hyp
    pattern = r"\S*".join(re.escape(piece) for piece in " ".join(parts).split("<<unk>>"))
    return re.fullmatch(pattern, hyp) is not None


def check_aligns_reference(alignments: Alignments) -> None:
    """A fairseq-generate output whose scored hypothesis differs from the reference (``T-``) for some
    sentence is an error: its ``A-`` links align a beam hypothesis, and gold links describe the reference."""
    texts = alignments.texts or []
    differ = [i for i, t in enumerate(texts) if t.reference is not None and t.hypothesis is not None
              and not same_text(t.reference, t.hypothesis)]
    if differ:
        raise AlignmentFileError(
            f"{alignments.path}: the A- links of {len(differ)} of {len(texts)} sentences (first: sentence "
            f"{differ[0]}) align the beam hypothesis (H-), not the reference (T-): rerun fairseq-generate with "
            f"--score-reference (or pass {HYPOTHESES_FLAG} if the hypotheses are aligned on purpose)")


def read_sentences(path: str, n: int, other: str) -> List[str]:
    """The lines of ``path``, which must be as many as the ``n`` sentences of the file ``other``."""
    lines = read_lines(path)
    if len(lines) != n:
        raise AlignmentFileError(f"{path}: {len(lines)} sentences, but {other} has {n}")
    return lines


def check_lengths(links: Sequence[Set[Link]], path: str, src_lens: Sequence[int], tgt_lens: Sequence[int]) -> None:
    """Every link inside its sentence (the counts are checked by the caller)."""
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


@dataclass
class AERDifference:
    """AER(a) − AER(b) on the same gold sentences and its 95% interval from a paired bootstrap."""

    difference: float
    low: float
    high: float
    samples: int


def paired_bootstrap(gold: Sequence[Gold], hyp_a: Sequence[Set[Link]], hyp_b: Sequence[Set[Link]],
                     samples: int = 1000, seed: int = 0) -> AERDifference:
    """AER(a) − AER(b) and the 2.5th / 97.5th percentiles of the difference over ``samples`` resamplings of
    the sentences with replacement, both alignments scored on the same resampled sentences (Koehn 2004's
    paired bootstrap; AER is a ratio of sums, so each resample recomputes both sums)."""
    import random

    if not len(gold) == len(hyp_a) == len(hyp_b) or not gold:
        raise ValueError(f"gold has {len(gold)} sentences, the hypotheses {len(hyp_a)} and {len(hyp_b)}")
    counts = [(len(a & g.sure) + len(a & g.possible), len(a), len(b & g.sure) + len(b & g.possible), len(b),
               len(g.sure)) for g, a, b in zip(gold, hyp_a, hyp_b)]

    def difference(rows) -> float:
        hit_a, n_a, hit_b, n_b, n_s = (sum(column) for column in zip(*rows))
        aer_a = 1.0 - hit_a / (n_a + n_s) if n_a + n_s else 0.0
        aer_b = 1.0 - hit_b / (n_b + n_s) if n_b + n_s else 0.0
        return aer_a - aer_b

    rng = random.Random(seed)
    draws = sorted(difference(rng.choices(counts, k=len(counts))) for _ in range(samples))
    return AERDifference(difference(counts), draws[int(0.025 * (samples - 1))], draws[int(0.975 * (samples - 1))],
                         samples)


def shifted(hyp: Sequence[Set[Link]], delta: int) -> List[Set[Link]]:
    return [{(i + delta, j + delta) for i, j in links if i + delta >= 0 and j + delta >= 0} for links in hyp]


def _shift_hint(delta: int, gold_base: int, hyp_base: int) -> str:
    """The options that would shift the hypothesis by ``delta`` against the gold, given the ones in use."""
    if delta < 0:  # hypothesis indices one too high for the gold's
        fixes = ["--hyp-base 1"] * (hyp_base == 0) + ["--gold-base 0"] * (gold_base == 1)
    else:
        fixes = ["--hyp-base 0"] * (hyp_base == 1) + ["--gold-base 1"] * (gold_base == 0)
    if not fixes:
        return f"is a file's index base other than --gold-base {gold_base} / --hyp-base {hyp_base} say?"
    return "is the index base right? try " + " or ".join(fixes)


def base_warning(gold: Sequence[Gold], hyp: Sequence[Set[Link]], hyp_path: str, gold_base: int = 1,
                 hyp_base: int = 0, reversed_: bool = False) -> Optional[str]:
    """A warning when the hypothesis fits the gold far better shifted by one (a wrong index base) or
    with each link's two indices swapped (target-source links); the hint names options not yet given
    (``gold_base``, ``hyp_base``, ``reversed_``: the ones in use)."""
    plain = alignment_error_rate(gold, hyp).aer
    n_links = sum(len(links) for links in hyp)
    for delta in (-1, 1):
        # a link the shift pushes below index 0 counts as a miss: dropping links is no better fit (with no
        # sure links AER is 1 - precision, and fewer links would otherwise look like a wrong base)
        moved = shifted(hyp, delta)
        hits = sum(len(a & g.sure) + len(a & g.possible) for g, a in zip(gold, moved))
        n_sure = sum(len(g.sure) for g in gold)
        other = 1.0 - hits / (n_links + n_sure) if n_links + n_sure else 0.0
        if other < plain - 0.15:
            return (f"{hyp_path}: links fit the gold much better shifted by {delta:+d} "
                    f"(AER {100 * other:.1f} vs {100 * plain:.1f}): {_shift_hint(delta, gold_base, hyp_base)}")
    other = alignment_error_rate(gold, [{(j, i) for i, j in links} for links in hyp]).aer
    if other < plain - 0.15:
        fix = "without --reverse-hyp" if reversed_ else "with --reverse-hyp"
        return (f"{hyp_path}: links fit the gold much better with source and target swapped (AER {100 * other:.1f} "
                f"vs {100 * plain:.1f}): are they target-source? try {fix} (from fairseq-rela-symmetrize: were "
                f"--forward and --backward swapped?)")
    return None
