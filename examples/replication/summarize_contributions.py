"""Token contributions of trained models side by side: ALTI+'s source share of the predicted tokens and the
word-alignment error of every source (issue 28's figures).

    python examples/replication/summarize_contributions.py OUT LABEL=ANALYSIS_DIR [LABEL=ANALYSIS_DIR ...]

Each ANALYSIS_DIR is a `fairseq-rela-analyze --output-dir` (its stats.json; alignment.json too when the
run had `--gold-alignment`). Writes OUT/results.md, OUT/results.json and OUT/source_share.png, and copies
each model's stats.txt / alignment.txt to OUT/LABEL/. Everything is read from the analyses (the paired
bootstrap of each source against the weights from the link files of `--write-links`, each checked against
the sweep's AER first), and a folder without ALTI+ contributions (an analysis from before them, or without the block
decomposition) is refused before anything is written.
"""
import argparse
import json
import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

MIN_SENTENCES = 20  # the position curve stops where fewer sentences reach the position
SOURCES = ("alti", "block")  # the rolled-out sources whose source share measures the model (see stats.txt)


@dataclass
class Analysis:
    """One model's analysis: statistics (stats.json) and, when scored against gold links, the sweep."""

    label: str
    folder: Path
    stats: dict
    alignment: Optional[dict]

    @classmethod
    def load(cls, spec: str) -> "Analysis":
        label, sep, folder = spec.partition("=")
        if not sep or not label or not folder:
            fail(f"{spec}: expected LABEL=ANALYSIS_DIR")
        path = Path(folder)
        if not (path / "stats.json").is_file():
            fail(f"{path}: no stats.json (not a fairseq-rela-analyze output folder)")
        stats = json.loads((path / "stats.json").read_text())
        missing = [s for s in SOURCES if "source_share" not in stats.get("contributions", {}).get(s, {})]
        if missing:
            fail(f"{path}: no {'/'.join(missing)} source share in stats.json (rerun fairseq-rela-analyze: "
                 "it records them for encoder-decoder models whose layers give the block decomposition)")
        for source in SOURCES:
            values = [v for v in stats["contributions"][source]["source_share"] if v is not None]
            if not values or not all(math.isfinite(v) and -1e-6 <= v <= 1 + 1e-6 for v in values):
                fail(f"{path}: {source} source share not a share in [0, 1]: {values}")
        alignment = None
        if (path / "alignment.json").is_file():
            alignment = json.loads((path / "alignment.json").read_text())
            bad = [c for c, layers in alignment["per_layer"].items()
                   for v in layers.values() if not (math.isfinite(v) and 0 <= v <= 1)]
            if bad:
                fail(f"{path}: alignment.json has AER outside [0, 1] for {sorted(set(bad))}")
        return cls(label, path, stats, alignment)

    def share(self, source: str) -> dict:
        return self.stats["contributions"][source]

    def cross_null(self) -> Optional[float]:
        cross = self.stats.get("attention", {}).get("cross", {})
        values = [layer["null_rate_mean"] for layer in cross.values() if "null_rate_mean" in layer]
        return sum(values) / len(values) if values else None


def fail(message: str) -> None:
    print(f"summarize_contributions.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def share_cell(share: dict, layer: int) -> str:
    value = share["source_share"][layer]
    se = (share.get("source_share_se") or [None] * (layer + 1))[layer]
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" ± {1.96 * se:.3f}" if se is not None else "")


def share_table(runs: List[Analysis]) -> List[str]:
    layers = max(len(r.share("alti")["source_share"]) for r in runs)
    head = ("| model | split (sentences) | updates | attention | "
            + " | ".join(f"ALTI+ src L{l}" for l in range(layers)) + f" | block src L{layers - 1} | "
            "ALTI+ src, first / last 5 positions | cross null rate |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in runs:
        alti, block = r.share("alti"), r.share("block")
        by_pos = [v for v, n in zip(alti["source_share_by_position"], alti["sentences_by_position"])
                  if v is not None and n >= MIN_SENTENCES]
        ends = (f"{sum(by_pos[:5]) / len(by_pos[:5]):.3f} / {sum(by_pos[-5:]) / len(by_pos[-5:]):.3f}"
                if len(by_pos) >= 10 else "n/a")
        null = r.cross_null()
        cells = [share_cell(alti, l) if l < len(alti["source_share"]) else "n/a" for l in range(layers)]
        lines.append(f"| {r.label} | {r.stats.get('subset', '?')} ({r.stats.get('sentences', '?')}) | "
                     f"{r.stats.get('num_updates', '?')} | {r.stats.get('attention_activation', '?')} | "
                     + " | ".join(cells) + f" | {share_cell(block, len(block['source_share']) - 1)} | {ends} | "
                     + ("n/a" if null is None else f"{null:.3f}") + " |")
    return lines


def aer_table(runs: List[Analysis]) -> List[str]:
    scored = [r for r in runs if r.alignment is not None]
    if not scored:
        return []
    configs = list(scored[0].alignment["per_layer"])
    lines = ["| source-shift | " + " | ".join(f"{r.label}: best layer (AER)" for r in scored) + " |",
             "|---|" + "---|" * len(scored)]
    for config in configs:
        cells = []
        for r in scored:
            per = r.alignment["per_layer"].get(config)
            if not per:
                cells.append("n/a")
                continue
            layer = min(per, key=per.get)
            cells.append(f"L{layer} ({100 * per[layer]:.1f})")
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
    return lines


def against_weights(runs: List[Analysis], gold_base: int, samples: int) -> List[str]:
    """Each source's best layer against the weights' best layer of the same shift, per scored model: AER
    difference and its 95% paired-bootstrap interval over the gold sentences, from the link files the sweep
    wrote (``--write-links``); each file's AER must equal the sweep's before it is used."""
    from fairseq_rela.alignment.aer import (AlignmentFileError, alignment_error_rate, paired_bootstrap, read_gold,
                                            read_hypothesis)

    def read(reader, path: str, base: int):
        try:
            return reader(path, base)
        except (AlignmentFileError, OSError) as err:
            fail(f"{err}")

    lines = []
    for r in runs:
        if r.alignment is None:
            continue
        gold = read(read_gold, r.alignment["gold"], gold_base)

        def best(config: str):
            per = r.alignment["per_layer"][config]
            layer = min(per, key=per.get)
            path = r.folder / "links" / f"{config}-L{layer}.txt"
            if not path.is_file():
                fail(f"{path}: missing (analyse with --write-links)")
            links = read(read_hypothesis, str(path), 0)
            if abs(alignment_error_rate(gold, links).aer - per[layer]) > 1e-9:
                fail(f"{path}: its AER on {r.alignment['gold']} (--gold-base {gold_base}) is not the sweep's "
                     f"{100 * per[layer]:.2f}: another gold, another base, or an edited link file?")
            return f"{config} L{layer}", links

        for shift in ("AWO", "AWI"):
            base_name, base = best(f"weights-{shift}")
            for config in r.alignment["per_layer"]:
                if config.endswith(shift) and not config.startswith("weights-"):
                    name, links = best(config)
                    d = paired_bootstrap(gold, links, base, samples=samples)
                    pct = [round(100 * v, 1) + 0.0 for v in (d.difference, d.low, d.high)]  # + 0.0: no "-0.0"
                    lines.append(f"| {r.label} | {name} | {base_name} | {pct[0]:+.1f} | "
                                 f"[{pct[1]:+.1f}, {pct[2]:+.1f}] |")
    if lines:
        lines = ["| model | source (best layer) | weights (best layer) | AER difference | 95% interval |",
                 "|---|---|---|---|---|"] + lines
    return lines


def plot(runs: List[Analysis], path: Path) -> None:
    from fairseq_rela.analysis.plots import pyplot
    from fairseq_rela.cli.files import save_figure

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, r in enumerate(runs):
        for source, style in zip(SOURCES, ("-", "--")):
            share = r.share(source)
            xs = [t for t, (v, n) in enumerate(zip(share["source_share_by_position"], share["sentences_by_position"]))
                  if v is not None and n >= MIN_SENTENCES]
            left.plot(xs, [share["source_share_by_position"][t] for t in xs], style, color=f"C{i}",
                      label=f"{r.label} {'ALTI+' if source == 'alti' else 'block rollout'}")
        alti = r.share("alti")
        layers = [l for l, v in enumerate(alti["source_share"]) if v is not None]
        se = alti.get("source_share_se") or [None] * len(alti["source_share"])
        errors = [1.96 * (se[l] or 0) for l in layers]  # None: one sentence reaches the layer, no error bar
        right.errorbar([l + 0.04 * (i - len(runs) / 2) for l in layers], [alti["source_share"][l] for l in layers],
                       yerr=errors, marker="o", markersize=3, capsize=2, color=f"C{i}", label=r.label)
    left.set_xlabel(f"target position (decoder's last layer; positions {MIN_SENTENCES}+ sentences reach)")
    left.set_ylabel("source share of the predicted token")
    right.set_xlabel("decoder layer (0-based)")
    right.set_ylabel("ALTI+ source share (mean, 95% CI over sentences)")
    right.set_xticks(sorted({l for r in runs for l, v in enumerate(r.share("alti")["source_share"]) if v is not None}))
    for ax in (left, right):
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    save_figure(fig, str(path))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", help="output folder (results.md, results.json, source_share.png, LABEL/)")
    p.add_argument("analyses", nargs="+", metavar="LABEL=ANALYSIS_DIR")
    p.add_argument("--gold-base", type=int, choices=(0, 1), default=1,
                   help="index base of the gold links the analyses were scored on (default 1, talp)")
    p.add_argument("--bootstrap", type=int, default=1000, help="paired-bootstrap resamples (default 1000)")
    args = p.parse_args()
    if args.bootstrap < 100:
        fail(f"--bootstrap {args.bootstrap}: at least 100 resamples for a 95% interval")
    runs = [Analysis.load(spec) for spec in args.analyses]
    labels = [r.label for r in runs]
    if len(set(labels)) != len(labels) or any("/" in l or l.startswith(".") for l in labels):
        fail(f"labels must be distinct folder names: {labels}")
    out = Path(args.out)
    lines = ["Source share of the predicted tokens: ALTI+ rolled out through every layer, teacher-forced on the "
             "reference (mean over every target token ± 95% CI over the split's sentences; 1 = everything from "
             "the source, 0 = everything from the target prefix):", ""] + share_table(runs)
    aer = aer_table(runs)
    if aer:
        lines += ["", "Word alignment, every source: best decoder layer (0-based) and its AER (%) on the gold links:",
                  ""] + aer
        lines += ["", f"Each source against the attention weights (same shift, each at its best layer): AER (%) "
                      f"difference, negative = the source aligns better; 95% paired-bootstrap interval over the gold "
                      f"sentences ({args.bootstrap} resamples; training noise is not in it):", ""] + \
            against_weights(runs, args.gold_base, args.bootstrap)
    out.mkdir(parents=True, exist_ok=True)
    for r in runs:
        (out / r.label).mkdir(exist_ok=True)
        for name in ("stats.txt", "alignment.txt"):
            if (r.folder / name).is_file():
                shutil.copyfile(r.folder / name, out / r.label / name)
    results: Dict[str, dict] = {
        r.label: {"analysis": str(r.folder), "checkpoint": r.stats.get("checkpoint"),
                  "num_updates": r.stats.get("num_updates"), "subset": r.stats.get("subset"),
                  "sentences": r.stats.get("sentences"), "attention_activation": r.stats.get("attention_activation"),
                  "contributions": r.stats["contributions"], "cross_null_rate": r.cross_null(),
                  "aer_per_layer": r.alignment["per_layer"] if r.alignment else None}
        for r in runs}
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    plot(runs, out / "source_share.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
