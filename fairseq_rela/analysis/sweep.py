"""Teacher-forced AER for every decoder layer x source x {AWO, AWI}, per layer and per head, against
gold alignments.  Sources: one layer's cross-attention — weights (averaged over heads), norms (of the
head sum), block (attention + residual + LayerNorm), alti (the block's ALTI shares), value-zeroing (when
recorded: :mod:`fairseq_rela.value_zeroing`) — and, per layer, the same rolled out through every layer
below (``rollout-weights``, ``-norms``, ``-block``, ``-alti``, ``-value-zeroing``:
the source columns of ALTI+, :mod:`fairseq_rela.contributions`); heads one by one: weights, norms.

Pure: :class:`AlignmentSweep` takes sentences and returns a :class:`SweepResult`; the command line
writes it (``alignment.json``, ``alignment.txt``, ``alignment.png``).  Matrices come from
:meth:`~fairseq_rela.recording.SentenceAttention.matrix`, which reads one layer's record with
:meth:`~fairseq_rela.recording.AttentionRecord.matrix`, the same function ``fairseq-generate`` uses.
"""
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

from fairseq_rela.alignment.aer import AERResult, Gold, Link, alignment_error_rate
from fairseq_rela.alignment.io import AlignmentFileError
from fairseq_rela.alignment.links import align, word_ids
from fairseq_rela.recording import ALIGNMENT_SOURCES, ROLLED_OUT_SOURCES, SentenceAttention

SOURCES = ALIGNMENT_SOURCES + ROLLED_OUT_SOURCES
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
            "best_layer": {"config": f"{bl.source}-{bl.shift}-{bl.layer}", "source": bl.source, "shift": bl.shift,
                           "layer": bl.layer, **bl_r.as_dict()},
            "best_head": {"config": f"{bh.source}-{bh.shift}-{bh.layer}-{bh.head}", "source": bh.source,
                          "shift": bh.shift, "layer": bh.layer, "head": bh.head, **bh_r.as_dict()},
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
        rolled = [f"rollout-{s}" for s in sent.rollout_sources()]  # every layer of the sentence recorded
        for (kind, layer), record in sent.records.items():
            if kind != "cross":
                continue
            heads: List[Optional[int]] = [None] + (list(range(record.weights.shape[0])) if self.per_head else [])
            for head in heads:
                sources = ["weights"] + (["norms"] if record.has_norms and (head is None or record.weighted_norm
                                                                             is not None) else [])
                if head is None and record.has_block:  # the block and ALTI are over all heads
                    sources += ["block"] + (["alti"] if record.alti is not None else [])
                if head is None and record.value_zeroing is not None:  # every head's value zeroed
                    sources.append("value-zeroing")
                if head is None:
                    sources += rolled
                for source in sources:
                    matrix = sent.matrix(source, layer, None if head is None else [head])
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

    def update(self, sent: SentenceAttention) -> None:
        """Check the sentence's gold links lie inside its words (after subword merging), then collect."""
        has_eos = len(sent.src) > 0 and sent.src[-1] == "</s>"
        n_src = len(set(word_ids(list(sent.src[:-1] if has_eos else sent.src), self.src_style)))
        n_tgt = len(set(word_ids(list(sent.tgt_out[:-1]), self.tgt_style)))
        outside = sorted((i, j) for i, j in self.gold[sent.id].possible if i >= n_src or j >= n_tgt)
        if outside:
            i, j = outside[0]
            raise AlignmentFileError(f"{self.gold_path}: gold line {sent.id + 1}: link {i}-{j} (0-based) outside a "
                                     f"sentence of {n_src} source and {n_tgt} target words"
                                     f"{f' ({len(outside)} such links)' if len(outside) > 1 else ''}: wrong file "
                                     "or --gold-base?")
        super().update(sent)

    def result(self) -> SweepResult:
        n = len(self.gold)
        results = {cfg: alignment_error_rate(self.gold, self.links(cfg, n)) for cfg in self.hyps}
        baselines = {name: alignment_error_rate(self.gold, links) for name, links in self.baselines.items()}
        return SweepResult(self.gold_path, n, (self.src_style, self.tgt_style, self.rule), results, baselines)


SOURCE_LEGEND = {"weights": "alpha, mean over the heads (one head: its alpha)",
                 "norms": "||sum_h alpha f(x)|| (one head: ||alpha f(x)||)",
                 "block": "the source token's part of the block output: attention + residual + LayerNorm, all heads",
                 "alti": "the source token's ALTI share of the block output (Ferrando et al. 2022), all heads",
                 "value-zeroing": "the cosine distance of the layer's output to the same with the source token's value "
                                  "zeroed, rows normalised (Mohebbi et al. 2023), all heads",
                 "rollout-": "the source token's share of the decoder state after that layer, rolled out through "
                             "every layer below\n  from weights/norms/block/alti/value-zeroing (ALTI+'s source columns: encoder "
                             "rollout x cross-attention, mixed through decoder self-attention; rollout-alti = ALTI+)"}
RULE_LEGEND = {"sum_mean": "a word's source subwords summed, its target subwords averaged",
               "any": "two words linked if any of their subwords are"}
NEAR_100 = 0.9  # an AWI AER at least this high gets the note on why


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _where(best: dict, layers: int, heads: int) -> str:
    """``norms-AWO, layer 1 (the 2nd of 2), head 0 (the 1st of 4)``: 0-based numbers, spelled out."""
    text = f"{best['source']}-{best['shift']}, layer {best['layer']} (the {_ordinal(best['layer'] + 1)} of {layers})"
    if best.get("head") is not None:
        text += f", head {best['head']} (the {_ordinal(best['head'] + 1)} of {heads})"
    return text


def _awi_note(out: dict) -> List[str]:
    """Why AWI is near 100% AER at some layers (when it is), from those configurations' own counts."""
    near: Dict[str, List[Tuple[str, float]]] = {}  # layer: (source, AER) of its AWI columns near 100%
    for column, layers in out["per_layer"].items():
        source, _, shift = column.rpartition("-")
        for layer, aer in layers.items():
            if shift == "AWI" and aer >= NEAR_100:
                near.setdefault(layer, []).append((source, aer))
    if not near:
        return []
    layer = min(near, key=int)
    source = near[layer][0][0]
    d = out["details"].get(f"{source}-AWI-L{layer}")
    where = "; ".join(f"layer {l} ({', '.join(f'{s} {100 * a:.1f}' for s, a in v)})"
                      for l, v in sorted(near.items(), key=lambda kv: int(kv[0])))
    lines = [f"note: AWI is near 100% AER at {where}: AWI reads the row whose decoder input is the word,",
             "  and those rows almost never peak on that word's source word"]
    if d and d["hyp_links"]:
        lines[-1] += (f" ({source}-AWI layer {layer}: {d['hyp_links']} links for {d['sure_links']} gold ones, "
                      f"{100 * (1 - d['precision']):.0f}% of them wrong)")
    lines.append("  A row attends in order to predict the NEXT word: a layer can look at that word's source (its AWO) "
                 "or park on </s>, never at the word it reads")
    return lines


def _layer_table(out: dict, cols: List[str], layers: List[str]) -> List[str]:
    width = max([14] + [len(c) + 2 for c in cols])
    lines = ["layer " + "".join(f"{c:>{width}}" for c in cols)]
    for layer in layers:
        lines.append(f"{layer:>5} " + "".join(f"{100 * out['per_layer'][c][layer]:>{width}.1f}" for c in cols))
    return lines


def format_sweep(out: dict) -> str:
    """``alignment.txt``: the per-layer tables (one layer's attention; rolled out), the best layer and head,
    the baselines, a legend."""
    cols = list(out["per_layer"])
    merge = out["subword_merge"]
    layers = list(next(iter(out["per_layer"].values())))
    one = [c for c in cols if not c.startswith("rollout-")]
    lines = [f"AER (%) on {out['sentences']} sentences, teacher-forced (the reference fed to the decoder); lower is "
             f"better", *_layer_table(out, one, layers)]
    rolled = [c for c in cols if c.startswith("rollout-")]
    if rolled:
        lines += ["rolled out: each layer's decoder state with every layer below it (encoder and decoder)",
                  *_layer_table(out, rolled, layers)]
    bl, bh = out["best_layer"], out["best_head"]
    heads = sum(1 for name in out["per_head"] if name.startswith(f"{bh['source']}-{bh['shift']}-L{bh['layer']}-H"))
    lines.append(f"best layer: {_where(bl, len(layers), heads)}  AER {100 * bl['aer']:.1f} "
                 f"(P {100 * bl['precision']:.1f}, R {100 * bl['recall']:.1f})")
    lines.append(f"best head:  {_where(bh, len(layers), heads)}  AER {100 * bh['aer']:.1f} "
                 f"(P {100 * bh['precision']:.1f}, R {100 * bh['recall']:.1f})")
    for name, r in out["baselines"].items():
        lines.append(f"{name:<12} AER {100 * r['aer']:.1f} (P {100 * r['precision']:.1f}, R {100 * r['recall']:.1f})")
    lines += _awi_note(out)
    legend = ["layer, head: counted from 0 (layer 0 = the first decoder layer's cross-attention) as in alignment.json, "
              "--alignment-layer, --alignment-heads, links/*-L<layer>.txt; papers count from 1",
              *(f"{s + ('X' if s.endswith('-') else '')}: {SOURCE_LEGEND[s]}" for s in SOURCE_LEGEND
                if any(c.startswith(s if s.endswith("-") else f"{s}-") for c in cols)),
              "AWO: a target word is aligned from the decoder row that predicts it (output); AWI: from the row that "
              "reads it as input (fairseq-generate --alignment-shift)",
              "P, R: precision, recall (%); a word whose row has its largest value on </s> gets no link",
              f"words: subwords merged (source {merge['source']}, target {merge['target']}): "
              f"{RULE_LEGEND.get(merge['rule'], merge['rule'])}"]
    if out["baselines"]:
        legend.append("eflomal-fwd/-rev/-gdfa: the statistical aligner eflomal, each direction and grow-diag-final-and")
    return "\n".join(lines + [""] + [f"  {line}" for line in legend])
