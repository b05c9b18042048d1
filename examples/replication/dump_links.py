"""Write teacher-forced word links of every decoder layer as Pharaoh files, for symmetrisation.

For each layer, source (``weights``: α averaged over heads; ``norms``: ‖Σ_h α^h f_h(x_j)‖) and
shift (AWO, AWI) one file ``OUT/links-SOURCE-SHIFT-L{layer}.txt`` with 0-based ``src-tgt`` word
links, one line per sentence of ``--gen-subset`` in id order (subwords merged as the sweep does).

    python examples/replication/dump_links.py DATA --path CKPT --gen-subset test1 --out DIR \
        [--source-lang en --target-lang de]
"""
import argparse
import os

from fairseq_rela.alignment.links import merge_styles
from fairseq_rela.analysis.runner import iter_sentences, load_checkpoint
from fairseq_rela.analysis.sweep import LinkSweep
from fairseq_rela.cli.files import write_text


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
    sweep = LinkSweep(*merge_styles("auto", task.source_dictionary, task.target_dictionary), per_head=False)
    n = 0
    for sent in iter_sentences(model, task, args.gen_subset, kinds=("cross",), max_tokens=args.max_tokens):
        sweep.update(sent)
        n += 1
    os.makedirs(args.out, exist_ok=True)
    for config in sweep.hyps:
        lines = [" ".join(f"{s}-{t}" for s, t in sorted(links)) for links in sweep.links(config, n)]
        write_text(os.path.join(args.out, f"links-{config.source}-{config.shift}-L{config.layer}.txt"),
                   "".join(line + "\n" for line in lines))
    print(f"dump_links: {len(sweep.hyps)} files, {n} sentences each, in {args.out}")


if __name__ == "__main__":
    main()
