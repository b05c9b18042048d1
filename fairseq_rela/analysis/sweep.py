"""Teacher-forced AER for every decoder layer x {weights, norms} x {AWO, AWI}, per layer
(weights averaged over heads, norms of the head sum) and per head, against gold alignments."""
import json
import os
from collections import defaultdict
from typing import Dict, List, Optional, Set, Tuple

from fairseq_rela.analysis.aer import AERResult, alignment_error_rate, read_gold
from fairseq_rela.analysis.alignment import align, detect_style
from fairseq_rela.analysis.runner import SentenceAttention

Config = Tuple[str, str, int, Optional[int]]  # (source, shift AWO|AWI, layer, head or None)


class AlignmentSweep:
    def __init__(self, gold_path: str, gold_base: int, src_style: str, tgt_style: str,
                 baselines: Optional[Dict[str, List[Set[Tuple[int, int]]]]] = None):
        self.gold = read_gold(gold_path, gold_base)
        self.gold_path = gold_path
        self.src_style, self.tgt_style = src_style, tgt_style
        self.hyps: Dict[Config, Dict[int, set]] = defaultdict(dict)
        self.baselines = baselines or {}
        self.seen: Set[int] = set()

    @classmethod
    def from_args(cls, args, task, dataset) -> "AlignmentSweep":
        merge = args.merge_subwords
        src_style = detect_style(task.source_dictionary) if merge == "auto" else merge
        tgt_style = detect_style(task.target_dictionary) if merge == "auto" else merge
        baselines = None
        if getattr(args, "eflomal_train", None):
            from fairseq_rela.analysis.eflomal_baseline import eflomal_alignments

            def read(prefix, lang):
                with open(f"{prefix}.{lang}", encoding="utf-8", newline="\n") as f:
                    return [line.rstrip("\n") for line in f]

            s, t = args.source_lang, args.target_lang
            baselines = eflomal_alignments(read(args.eflomal_train, s), read(args.eflomal_train, t),
                                           read(args.eflomal_test, s), read(args.eflomal_test, t))
        sweep = cls(args.gold_alignment, args.gold_base, src_style, tgt_style, baselines)
        if len(sweep.gold) != len(dataset):
            raise SystemExit(f"fairseq-rela-analyze: error: {args.gold_alignment} has {len(sweep.gold)} lines but "
                             f"--gen-subset {args.gen_subset} has {len(dataset)} sentences")
        return sweep

    def update(self, sent: SentenceAttention) -> None:
        self.seen.add(sent.id)
        src, tgt = sent.src, sent.tgt_out[:-1]
        for (kind, layer), maps in sent.maps.items():
            if kind != "cross":
                continue
            candidates = [("weights", None, maps["weights"].mean(0))]
            if "summed_norm" in maps:
                candidates.append(("norms", None, maps["summed_norm"]))
            for h in range(maps["weights"].shape[0]):
                candidates.append(("weights", h, maps["weights"][h]))
                if "weighted_norm" in maps:
                    candidates.append(("norms", h, maps["weighted_norm"][h]))
            for source, head, matrix in candidates:
                for shift in (False, True):
                    links, _ = align(matrix, src, tgt, shift, self.src_style, self.tgt_style)
                    self.hyps[(source, "AWI" if shift else "AWO", layer, head)][sent.id] = set(links)

    def results(self) -> Dict[Config, AERResult]:
        n = len(self.gold)
        missing = set(range(n)) - self.seen
        if missing:
            raise RuntimeError(f"alignment sweep: {len(missing)} sentences were never analysed (first: {min(missing)})")
        return {cfg: alignment_error_rate(self.gold, [hyp[i] for i in range(n)]) for cfg, hyp in self.hyps.items()}

    def finish(self, output_dir: str, plots: bool = True) -> dict:
        res = self.results()
        base = {name: alignment_error_rate(self.gold, links) for name, links in self.baselines.items()}
        layers = sorted({c[2] for c in res})
        table = {f"{src}-{shift}": {str(l): res[(src, shift, l, None)].aer for l in layers}
                 for src in ("weights", "norms") for shift in ("AWO", "AWI") if (src, shift, layers[0], None) in res}
        best_layer = min(((r.aer, c) for c, r in res.items() if c[3] is None))
        best_head = min(((r.aer, c) for c, r in res.items() if c[3] is not None))
        out = {
            "gold": os.path.abspath(self.gold_path), "sentences": len(self.gold),
            "subword_merge": {"source": self.src_style, "target": self.tgt_style, "rule": "sum_mean"},
            "per_layer": table,
            "per_head": {f"{s}-{sh}-L{l}-H{h}": r.aer for (s, sh, l, h), r in sorted(res.items(), key=str)
                         if h is not None},
            "details": {f"{s}-{sh}-L{l}" + ("" if h is None else f"-H{h}"): r.as_dict()
                        for (s, sh, l, h), r in sorted(res.items(), key=str)},
            "best_layer": {"config": "-".join(map(str, best_layer[1][:3])), **res[best_layer[1]].as_dict()},
            "best_head": {"config": "-".join(map(str, best_head[1])), **res[best_head[1]].as_dict()},
            "baselines": {name: r.as_dict() for name, r in base.items()},
        }
        with open(os.path.join(output_dir, "alignment.json"), "w") as f:
            json.dump(out, f, indent=1)
        text = format_sweep(out)
        with open(os.path.join(output_dir, "alignment.txt"), "w") as f:
            f.write(text + "\n")
        print(text)
        if plots:
            plot_sweep(out, os.path.join(output_dir, "alignment.png"))
        return out


def format_sweep(out: dict) -> str:
    cols = list(out["per_layer"])
    lines = [f"AER (%) on {out['sentences']} sentences, teacher-forced; words merged "
             f"({out['subword_merge']['source']}/{out['subword_merge']['target']})",
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


def plot_sweep(out: dict, path: str) -> None:
    from fairseq_rela.analysis.plots import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, per_layer in out["per_layer"].items():
        layers = sorted(per_layer, key=int)
        ax.plot([int(l) for l in layers], [100 * per_layer[l] for l in layers], marker="o",
                linestyle="-" if name.startswith("norms") else "--", label=name)
    for name, r in out["baselines"].items():
        ax.axhline(100 * r["aer"], color="grey", linewidth=0.8, linestyle=":")
        ax.text(0, 100 * r["aer"], name, fontsize=7, va="bottom")
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("AER (%)")
    ax.set_title("alignment error by layer (teacher-forced)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
