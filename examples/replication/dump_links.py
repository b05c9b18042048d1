"""Write teacher-forced word links of every decoder layer as Pharaoh files, for symmetrisation.

For each layer, source (``weights``: α averaged over heads; ``norms``: ‖Σ_h α^h f_h(x_j)‖) and
shift (AWO, AWI) one file ``OUT/links-SOURCE-SHIFT-L{layer}.txt`` with 0-based ``src-tgt`` word
links, one line per sentence of ``--gen-subset`` in id order (subwords merged as the sweep does).

    python examples/replication/dump_links.py DATA --path CKPT --gen-subset test1 --out DIR \
        [--source-lang en --target-lang de]
"""
import argparse
import os

import fairseq_rela  # noqa: F401  (registers the model, allow-lists checkpoint globals)
from fairseq_rela.analysis.alignment import align, detect_style
from fairseq_rela.analysis.runner import iter_sentences, load_checkpoint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data")
    p.add_argument("--path", required=True)
    p.add_argument("--gen-subset", default="test")
    p.add_argument("--out", required=True)
    p.add_argument("--source-lang", default=None)
    p.add_argument("--target-lang", default=None)
    p.add_argument("--max-tokens", type=int, default=4000)
    args = p.parse_args()
    overrides = {k: v for k, v in (("source_lang", args.source_lang), ("target_lang", args.target_lang)) if v}
    model, task = load_checkpoint(args.path, data=args.data, **overrides)
    src_style, tgt_style = detect_style(task.source_dictionary), detect_style(task.target_dictionary)
    links = {}
    for sent in iter_sentences(model, task, args.gen_subset, kinds=("cross",), max_tokens=args.max_tokens):
        for (_, layer), maps in sent.maps.items():
            for source, matrix in (("weights", maps["weights"].mean(0)), ("norms", maps["summed_norm"])):
                for shift in (False, True):
                    found, _ = align(matrix, sent.src, sent.tgt_out[:-1], shift, src_style, tgt_style)
                    links.setdefault((source, "AWI" if shift else "AWO", layer), {})[sent.id] = found
    os.makedirs(args.out, exist_ok=True)
    for (source, shift, layer), by_id in links.items():
        with open(os.path.join(args.out, f"links-{source}-{shift}-L{layer}.txt"), "w", encoding="utf-8") as f:
            for i in range(len(by_id)):
                f.write(" ".join(f"{s}-{t}" for s, t in sorted(by_id[i])) + "\n")
    print(f"dump_links: {len(links)} files, {len(next(iter(links.values())))} sentences each, in {args.out}")


if __name__ == "__main__":
    main()
