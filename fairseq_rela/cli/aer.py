"""fairseq-rela-aer: alignment error rate of hypothesis links against gold links.

    fairseq-rela-aer --gold alignment.talp --hyp hyp.align [--gold-base 1] [--hyp-base 0] [--reverse-hyp]
                     [--src test.de --tgt test.en] [--nbest-index K] [--allow-hypothesis-links] [--json]

The hypothesis may be Pharaoh lines or a fairseq-generate output (its ``A-ID`` lines; of a ``--nbest``
output the best hypothesis, or the ``--nbest-index``-th; other repeated ids are an error).  A
fairseq-generate output whose hypothesis (``D-``/``H-``) differs from its reference (``T-``) for any
sentence aligns beam hypotheses, not the gold's sentences: an error unless ``--allow-hypothesis-links``.
Prints AER, precision, recall and link counts, and a signature recording the options (as sacrebleu does).
"""
import argparse
import json
import logging
import signal
import sys

from fairseq_rela import __version__
from fairseq_rela.alignment.aer import (HYPOTHESES_FLAG, AlignmentFileError, alignment_error_rate, base_warning,
                                       check_aligns_reference, check_lengths, read_alignments, read_gold, read_sentences)


def non_negative(value: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value!r}")
    return int(value)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fairseq-rela-aer", description="Alignment error rate against gold links.")
    p.add_argument("--gold", required=True, help="gold links, talp format (i-j sure, ipj possible)")
    p.add_argument("--hyp", required=True, help="hypothesis links: Pharaoh i-j lines or fairseq-generate output")
    p.add_argument("--gold-base", type=int, choices=[0, 1], default=1, help="index base of --gold (default 1)")
    p.add_argument("--hyp-base", type=int, choices=[0, 1], default=0, help="index base of --hyp (default 0)")
    p.add_argument("--reverse-hyp", action="store_true", help="hypothesis links are target-source")
    p.add_argument("--src", help="source sentences (words), to check link indices against lengths")
    p.add_argument("--tgt", help="target sentences (words), to check link indices against lengths")
    p.add_argument("--nbest-index", type=non_negative, default=None, metavar="K",
                   help="of a fairseq-generate --nbest output, score the K-th hypothesis per sentence "
                        "(0-based; default 0, the best)")
    p.add_argument(HYPOTHESES_FLAG, action="store_true",
                   help="a fairseq-generate --hyp aligns its beam hypotheses (H-) on purpose: score its A- links "
                        "even where H- differs from the reference T- (without it, that is an error: the gold "
                        "describes the reference; align it with fairseq-generate --score-reference)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def signature(args) -> str:
    return (f"fairseq-rela-aer|gold-base:{args.gold_base}|hyp-base:{args.hyp_base}|"
            f"reverse:{'yes' if args.reverse_hyp else 'no'}|nbest-index:{args.nbest_index or 0}|"
            f"aligns:{'hypothesis' if args.allow_hypothesis_links else 'reference'}|version:{__version__}")


def check_sentence_lengths(gold_path: str, n: int, src: str, tgt: str):
    """Words per sentence of --src and --tgt, which must have as many lines as the gold."""
    if not (src and tgt):
        raise AlignmentFileError("--src and --tgt go together")
    return [[len(line.split()) for line in read_sentences(path, n, gold_path)] for path in (src, tgt)]


def run(args) -> dict:
    gold = read_gold(args.gold, args.gold_base)
    lengths = check_sentence_lengths(args.gold, len(gold), args.src, args.tgt) if args.src or args.tgt else None
    alignments = read_alignments(args.hyp, args.hyp_base, args.reverse_hyp, args.nbest_index, sentences=len(gold),
                                 text_lengths=not lengths)  # without --src/--tgt: a generate output's own texts
    if not args.allow_hypothesis_links:
        check_aligns_reference(alignments)
    hyp = alignments.links
    if len(gold) != len(hyp):
        raise AlignmentFileError(f"{args.hyp}: {len(hyp)} sentences, but {args.gold} has {len(gold)}")
    if lengths:
        src, tgt = lengths
        check_lengths([g.possible for g in gold], args.gold, src, tgt)
        check_lengths(hyp, args.hyp, src, tgt)
    warning = base_warning(gold, hyp, args.hyp, args.gold_base, args.hyp_base, args.reverse_hyp)
    if warning:
        logging.getLogger("fairseq-rela-aer").warning(warning)
    result = alignment_error_rate(gold, hyp)
    return {**result.as_dict(), "signature": signature(args), "text": str(result)}


class _Collected(logging.Handler):
    """Keeps the messages of the warnings logged while it is attached."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def cli_main(argv=None) -> None:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends quietly
    logging.basicConfig(format="fairseq-rela-aer: warning: %(message)s", level=logging.WARNING, force=True)
    args = get_parser().parse_args(argv)
    said = _Collected()  # the warnings go to stderr and, with --json, into the result too
    logging.getLogger().addHandler(said)
    try:
        out = run(args)
    except (AlignmentFileError, OSError) as err:
        sys.exit(f"fairseq-rela-aer: error: {err}")
    finally:
        logging.getLogger().removeHandler(said)
    if args.json:
        print(json.dumps({**{k: v for k, v in out.items() if k != "text"}, "warnings": said.messages}, indent=1))
    else:
        print(f"{out['text']}\n{out['signature']}")


if __name__ == "__main__":
    cli_main()
