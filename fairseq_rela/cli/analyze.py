"""fairseq-rela-analyze: attention weights and norms of a trained model over a data split.

    fairseq-rela-analyze DATA --path CKPT --gen-subset test --output-dir OUT [--plot-sentences 0,5]

Takes fairseq's usual data options (``--source-lang``, ``--max-tokens``, ``--batch-size``, ``--cpu``,
``--fp16``, ...) and writes ``stats.json``, ``stats.txt``, ``heads.png`` and, for chosen sentences,
``sentence-ID-KIND.png`` (weights beside norms).  With ``--gold-alignment`` it also writes the
alignment-error sweep (see :mod:`fairseq_rela.analysis.sweep`).
"""
import logging
import os
import sys
from typing import List

from fairseq import options

from fairseq_rela.config import ATTENTION_KINDS

logger = logging.getLogger("fairseq_rela.analyze")


def get_parser():
    parser = options.get_generation_parser(default_task="translation")
    group = parser.add_argument_group("fairseq-rela-analyze")
    group.add_argument("--output-dir", required=True, help="where to write stats.json, stats.txt and plots")
    group.add_argument("--plot-sentences", default="0", help="comma-separated sentence ids to draw (''=none)")
    group.add_argument("--plot-kinds", default="cross", help=f"attention kinds to draw: {','.join(ATTENTION_KINDS)}")
    group.add_argument("--no-plots", action="store_true", help="write statistics only")
    group.add_argument("--top-frequent", type=int, default=50, help="size of the 'frequent' token category")
    group.add_argument("--gold-alignment", default=None,
                       help="talp gold alignment of --gen-subset: also run the AER sweep over layers/heads")
    group.add_argument("--gold-base", type=int, default=1, help="index base of --gold-alignment (default 1)")
    group.add_argument("--eflomal-train", default=None, metavar="PREFIX",
                       help="word-level training text PREFIX.{src,tgt} for an eflomal baseline in the sweep")
    group.add_argument("--eflomal-test", default=None, metavar="PREFIX",
                       help="word-level text of --gen-subset, PREFIX.{src,tgt} (with --eflomal-train)")
    group.add_argument("--merge-subwords", choices=["auto", "none", "sentencepiece", "subword_nmt"], default="auto",
                       help="merge subwords into words before scoring (auto: detected from the dictionaries)")
    return parser


def _csv(value: str) -> List[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def main(args) -> dict:
    import torch
    from tqdm import tqdm

    from fairseq_rela.analysis.plots import plot_head_heatmaps, plot_weight_vs_norm
    from fairseq_rela.analysis.runner import iter_sentences, load_checkpoint, trained_updates
    from fairseq_rela.analysis.statistics import AttentionStatistics, format_table, frequent_tokens, write_json

    kinds = _csv(args.plot_kinds)
    bad = [k for k in kinds if k not in ATTENTION_KINDS]
    if bad:
        raise SystemExit(f"fairseq-rela-analyze: error: --plot-kinds: unknown value {bad[0]!r}; "
                         f"choose from {','.join(ATTENTION_KINDS)}")
    if bool(args.eflomal_train) != bool(args.eflomal_test) or (args.eflomal_train and not args.gold_alignment):
        raise SystemExit("fairseq-rela-analyze: error: --eflomal-train and --eflomal-test go together, "
                         "with --gold-alignment")
    plot_ids = {int(i) for i in _csv(args.plot_sentences)} if not args.no_plots else set()
    os.makedirs(args.output_dir, exist_ok=True)
    device = "cpu" if args.cpu or not torch.cuda.is_available() else "cuda"
    model, task = load_checkpoint(args.path, data=args.data, device=device, fp16=args.fp16,
                                  **eval(args.model_overrides))
    task.load_dataset(args.gen_subset)
    dataset = task.dataset(args.gen_subset)
    stats = AttentionStatistics(frequent_tokens(task.source_dictionary, args.top_frequent),
                                frequent_tokens(task.target_dictionary, args.top_frequent))
    sweep = None
    if args.gold_alignment:
        from fairseq_rela.analysis.sweep import AlignmentSweep

        sweep = AlignmentSweep.from_args(args, task, dataset)
    sentences = iter_sentences(model, task, dataset=dataset, max_tokens=args.max_tokens, batch_size=args.batch_size)
    for sent in tqdm(sentences, total=len(dataset), desc="analyse", disable=args.no_progress_bar, file=sys.stderr):
        stats.update(sent)
        if sweep is not None:
            sweep.update(sent)
        if sent.id in plot_ids:
            for kind in kinds:
                plot_weight_vs_norm(sent, kind, os.path.join(args.output_dir, f"sentence-{sent.id}-{kind}.png"))
    result = stats.result()
    result["checkpoint"], result["subset"] = os.path.abspath(args.path), args.gen_subset
    result["num_updates"] = trained_updates(args.path)
    result["attention_activation"] = getattr(model.args, "attention_activation", None)
    write_json(result, os.path.join(args.output_dir, "stats.json"))
    table = format_table(result)
    with open(os.path.join(args.output_dir, "stats.txt"), "w") as f:
        f.write(table + "\n")
    print(table)
    if not args.no_plots:
        plot_head_heatmaps(result, os.path.join(args.output_dir, "heads.png"),
                           title=f"{result['attention_activation']}: {os.path.basename(args.path)}")
    if sweep is not None:
        result["alignment"] = sweep.finish(args.output_dir, plots=not args.no_plots)
    return result


def cli_main() -> None:
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.WARNING)
    parser = get_parser()
    args = options.parse_args_and_arch(parser)
    if not args.path:
        parser.error("--path is required")
    main(args)


if __name__ == "__main__":
    cli_main()
