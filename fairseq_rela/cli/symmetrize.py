"""fairseq-rela-symmetrize: one alignment from the two translation directions' alignments.

    fairseq-rela-symmetrize --forward de-en.gen --backward en-de.gen [--method grow-diag-final-and]
                            [--src test.de --tgt test.en] [--output sym.align]

``--forward`` holds source-target links (e.g. De→En attention alignments), ``--backward`` the other
direction's (En→De: its links are target-source and are reversed).  Each is a fairseq-generate output
(its ``A-ID`` lines, by id; of a ``--nbest`` output the best hypothesis) or a Pharaoh file.  Writes
0-based Pharaoh lines (source-target) to stdout or ``--output``.  Bad input is one ``error:`` line.
Needs no torch code: it reads text and writes text.

What is checked: two fairseq-generate outputs must hold the same sentences in opposite directions
(the forward's S- text is the backward's T- text and vice versa, whatever the subword pieces), and
each must align its reference (H- equal to T-, i.e. made with --score-reference) unless
``--allow-hypothesis-links``.  Which language is the source only ``--src``/``--tgt`` can tell: with them a
fairseq-generate output whose S- lines are the ``--tgt`` text is refused as swapped, and every link must lie
within the sentence lengths (for Pharaoh files, the only check).  Without ``--src``/``--tgt``, two inputs
given the wrong way round are consistent with each other and cannot be detected: the output is then
target-source (``fairseq-rela-aer`` warns when links fit its gold far better reversed).
"""
import argparse
import os
import signal
import sys
from typing import List, Set

from fairseq_rela.alignment.aer import (HYPOTHESES_FLAG, AlignmentFileError, Alignments, Link, check_aligns_reference,
                                       check_lengths, read_alignments, read_sentences)
from fairseq_rela.alignment.io import pharaoh_line
from fairseq_rela.alignment.symmetrize import METHODS, check_orientation, check_pairing
from fairseq_rela.cli.files import write_text

PROG = "fairseq-rela-symmetrize"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Symmetrise two directional word alignments.",
        epilog="Which input is the source-target direction is checked only with --src/--tgt: without them, "
               "--forward and --backward given the wrong way round cannot be told from the right way and give a "
               "target-source output.  Two fairseq-generate outputs are checked to hold the same sentences in "
               "opposite directions (S- of the one = T- of the other) and to align their references (H- = T-).")
    p.add_argument("--forward", required=True, help="source-target links: fairseq-generate output or Pharaoh")
    p.add_argument("--backward", required=True,
                   help="the reverse direction's links (target-source, reversed here): fairseq-generate output or Pharaoh")
    p.add_argument("--method", choices=sorted(METHODS), default="grow-diag-final-and",
                   help="symmetrisation heuristic (default grow-diag-final-and)")
    p.add_argument("--forward-base", type=int, choices=[0, 1], default=0, help="index base of --forward (default 0)")
    p.add_argument("--backward-base", type=int, choices=[0, 1], default=0, help="index base of --backward (default 0)")
    p.add_argument("--no-reverse-backward", action="store_true",
                   help="--backward links are already source-target: do not reverse them")
    p.add_argument("--src", help="source sentences (words): checks link indices against lengths and, with "
                        "fairseq-generate inputs, that --forward's S- lines are this text (not --tgt's: swapped)")
    p.add_argument("--tgt", help="target sentences (words), the same checks")
    p.add_argument(HYPOTHESES_FLAG, action="store_true",
                   help="fairseq-generate inputs align their beam hypotheses (H-) on purpose: accept them even where "
                        "H- differs from the reference T- (without it, an error: rerun with --score-reference)")
    p.add_argument("--output", "-o", default="-", help="output file (default: stdout)")
    return p


def _fits(links: List[Set[Link]], src: List[int], tgt: List[int]) -> bool:
    try:
        check_lengths(links, "", src, tgt)
    except AlignmentFileError:
        return False
    return True


def check_sentences(args, forward: Alignments, backward: Alignments) -> None:
    """--src/--tgt: which side is the source (texts of fairseq-generate inputs), then every link within
    the sentence lengths; a swap of --forward and --backward is named as such."""
    src, tgt = (read_sentences(path, len(forward.links), args.forward) for path in (args.src, args.tgt))
    check_orientation(forward, src, tgt, "source")
    check_orientation(backward, src, tgt, "reference" if not args.no_reverse_backward else "source")
    lengths = [len(line.split()) for line in src], [len(line.split()) for line in tgt]
    hint = "" if args.no_reverse_backward else " (after reversing it)"
    for alignments, extra in ((forward, ""), (backward, hint)):
        try:
            check_lengths(alignments.links, alignments.path, *lengths)
        except AlignmentFileError as err:
            if all(_fits(a.links, *lengths[::-1]) for a in (forward, backward)):
                raise AlignmentFileError(f"{err}{extra}; both inputs' links fit --tgt/--src the other way round: "
                                         "--forward and --backward are swapped (or --src and --tgt)") from None
            raise AlignmentFileError(f"{err}{extra}") from None


def run(args) -> List[Set[Link]]:
    texts = not (args.src or args.tgt)  # without --src/--tgt: a generate output's links against its own texts
    forward = read_alignments(args.forward, args.forward_base, base_flag="--forward-base", text_lengths=texts)
    if not forward.links:
        raise AlignmentFileError(f"{args.forward}: no sentences")
    if (args.src or args.tgt) and not (args.src and args.tgt):
        raise AlignmentFileError("--src and --tgt go together")
    backward = read_alignments(args.backward, args.backward_base, reverse=not args.no_reverse_backward,
                               sentences=len(forward.links), base_flag="--backward-base", text_lengths=texts)
    if len(backward.links) != len(forward.links):
        raise AlignmentFileError(f"{args.backward}: {len(backward.links)} sentences, but {args.forward} has "
                                 f"{len(forward.links)}")
    if not args.allow_hypothesis_links:
        check_aligns_reference(forward)
        check_aligns_reference(backward)
    check_pairing(forward, backward, reverse=not args.no_reverse_backward)
    if args.src or args.tgt:
        check_sentences(args, forward, backward)
    method = METHODS[args.method]
    return [method(f, b) for f, b in zip(forward.links, backward.links)]


def write(lines: List[str], path: str) -> None:
    """To stdout, or atomically to ``path`` (no half-written file on failure)."""
    text = "".join(line + "\n" for line in lines)
    if path == "-":
        sys.stdout.write(text)
        return
    if os.path.isdir(path):
        raise AlignmentFileError(f"--output {path}: is a directory")
    write_text(path, text)


def cli_main(argv=None) -> None:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends quietly
    args = get_parser().parse_args(argv)
    try:
        write([pharaoh_line(links) for links in run(args)], args.output)
    except (AlignmentFileError, OSError) as err:
        sys.exit(f"{PROG}: error: {err}")


if __name__ == "__main__":
    cli_main()
