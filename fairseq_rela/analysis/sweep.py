"""Teacher-forced AER for every decoder layer x {weights, norms, block} x {AWO, AWI}, per layer
(weights averaged over heads, norms of the head sum, block: attention + residual + LayerNorm) and per
head (weights, norms), against gold alignments.

Pure: :class:`AlignmentSweep` takes sentences and returns a :class:`SweepResult`; the command line
writes it (``alignment.json``, ``alignment.txt``, ``alignment.png``).  Matrices come from
:meth:`~fairseq_rela.recording.AttentionRecord.matrix`, the same function ``fairseq-generate`` uses.
"""
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

from fairseq_rela.alignment.aer import AERResult, Gold, Link, alignment_error_rate
from fairseq_rela.alignment.links import align
from fairseq_rela.recording import SentenceAttention

SOURCES = ("weights", "norms", "block")
SHIFTS = ("AWO", "AWI")


@dataclass(frozen=True)
class SweepConfig:
    """One way of reading alignments: ``source`` of decoder ``layer``, over all heads or one ``head``,
    at the row that predicts the target word (AWO) or takes it as input (AWI)."""

    source: str
    shift: str
    layer: int
    head: Optional[int] = None

    @property
    def name(self) -> str:
        return f"{self.source}-{self.shift}-L{self.layer}" + ("" if self.head is None else f"-H{self.head}")


@dataclass
class SweepResult:
    """AER of every :class:`SweepConfig` (and of the baselines) on one gold set."""

    gold: str
    sentences: int
    merge: Tuple[str, str, str]  # source style, target style, rule
    results: Dict[SweepConfig, AERResult]
    baselines: Dict[str, AERResult] = field(default_factory=dict)

    @property
    def layers(self) -> List[int]:
        return sorted({c.layer for c in self.results})

    def best(self, per_head: bool) -> Tuple[SweepConfig, AERResult]:
        """The configuration with the lowest AER among layer-level (or head-level) ones."""
        pool = [c for c in self.results if (c.head is not None) == per_head]
        config = min(pool, key=lambda c: (self.results[c].aer, c.source, c.shift, c.layer, c.head or 0))
        return config, self.results[config]

    def per_layer(self) -> Dict[str, Dict[str, float]]:
        """``{"weights-AWO": {"0": aer, ...}, ...}`` for the layer-level configurations."""
        return {f"{s}-{sh}": {str(l): self.results[SweepConfig(s, sh, l)].aer for l in self.layers}
                for s in SOURCES for sh in SHIFTS if SweepConfig(s, sh, self.layers[0]) in self.results}

    def to_json(self) -> dict:
        bl, bl_r = self.best(per_head=False)
        bh, bh_r = self.best(per_head=True)
        ordered = sorted(self.results.items(), key=lambda item: str((item[0].source, item[0].shift,
                                                                      item[0].layer, item[0].head)))
        return {
            "gold": self.gold, "sentences": self.sentences,
            "subword_merge": {"source": self.merge[0], "target": self.merge[1], "rule": self.merge[2]},
            "per_layer": self.per_layer(),
            "per_head": {c.name: r.aer for c, r in ordered if c.head is not None},
            "details": {c.name: r.as_dict() for c, r in ordered},
            "best_layer": {"config": f"{bl.source}-{bl.shift}-{bl.layer}", **bl_r.as_dict()},
            "best_head": {"config": f"{bh.source}-{bh.shift}-{bh.layer}-{bh.head}", **bh_r.as_dict()},
            "baselines": {name: r.as_dict() for name, r in self.baselines.items()},
        }

    def format(self) -> str:
        return format_sweep(self.to_json())


class LinkSweep:
    """Word links of every configuration (layer x source x shift, over all heads and, with
    ``per_head``, each head), collected sentence by sentence."""

    def __init__(self, src_style: str, tgt_style: str, rule: str = "sum_mean", per_head: bool = True):
        self.src_style, self.tgt_style, self.rule, self.per_head = src_style, tgt_style, rule, per_head
        self.hyps: Dict[SweepConfig, Dict[int, set]] = defaultdict(dict)
        self.seen: Set[int] = set()

    def update(self, sent: SentenceAttention) -> None:
        self.seen.add(sent.id)
        src, tgt = sent.src, sent.tgt_out[:-1]
        for (kind, layer), record in sent.records.items():
            if kind != "cross":
                continue
            heads: List[Optional[int]] = [None] + (list(range(record.weights.shape[0])) if self.per_head else [])
            for head in heads:
                sources = ["weights"] + (["norms"] if record.has_norms and (head is None or record.weighted_norm
                                                                             is not None) else [])
                if head is None and record.has_block:  # the block is over all heads
                    sources.append("block")
                for source in sources:
                    matrix = record.matrix(source, None if head is None else [head])
                    for shift in SHIFTS:
                        links, _ = align(matrix, src, tgt, shift == "AWI", self.src_style, self.tgt_style, self.rule)
                        self.hyps[SweepConfig(source, shift, layer, head)][sent.id] = set(links)

    def links(self, config: SweepConfig, sentences: int) -> List[Set[Link]]:
        """The links of ``config`` for sentences 0..sentences-1 (every one must have been seen)."""
        missing = set(range(sentences)) - self.seen
        if missing:
            raise RuntimeError(f"alignment sweep: {len(missing)} sentences were never analysed (first: {min(missing)})")
        return [self.hyps[config][i] for i in range(sentences)]


class AlignmentSweep(LinkSweep):
    """:class:`LinkSweep` scored against gold links; :meth:`result` gives every configuration's AER."""

    def __init__(self, gold: List[Gold], gold_path: str, src_style: str, tgt_style: str, rule: str = "sum_mean",
                 baselines: Optional[Dict[str, List[Set[Link]]]] = None):
        super().__init__(src_style, tgt_style, rule)
        self.gold, self.gold_path = gold, gold_path
        self.baselines = baselines or {}

    def result(self) -> SweepResult:
        n = len(self.gold)
        results = {cfg: alignment_error_rate(self.gold, self.links(cfg, n)) for cfg in self.hyps}
        baselines = {name: alignment_error_rate(self.gold, links) for name, links in self.baselines.items()}
        return SweepResult(self.gold_path, n, (self.src_style, self.tgt_style, self.rule), results, baselines)


def format_sweep(out: dict) -> str:
    """``alignment.txt``: the per-layer table, the best layer and head, the baselines."""
    cols = list(out["per_layer"])
    lines = [f"AER (%) on {out['sentences']} sentences, teacher-forced; words merged "
             f"({out['subword_merge']['source']}/{out['subword_merge']['target']}, {out['subword_merge']['rule']})",
             "layer " + "".join(f"{c:>14}" for c in cols)]
    for layer in next(iter(out["per_layer"].values())):
        lines.append(f"{layer:>5} " + "".join(f"{100 * out['per_layer'][c][layer]:>14.1f}" for c in cols))
    bl, bh = out["best_layer"], out["best_head"]
    lines.append(f"best layer: {bl['config']}  AER {100 * bl['aer']:.1f} (P {100 * bl['precision']:.1f}, "
                 f"R {100 * bl['recall']:.1f})")
    lines.append(f"best head:  {bh['config']}  AER {100 * bh['aer']:.1f}")
    for name, r in out["baselines"].items():
        lines.append(f"{name:<12} AER {100 * r['aer']:.1f} (P {100 * r['precision']:.1f}, R {100 * r['recall']:.1f})")
    return "\n".join(lines)
