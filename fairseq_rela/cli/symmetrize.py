"""fairseq-rela-symmetrize: one alignment from the two translation directions' alignments.

    fairseq-rela-symmetrize --forward de-en.gen --backward en-de.gen [--method grow-diag-final-and]
                            [--src test.de --tgt test.en] [--output sym.align]

``--forward`` holds source-target links (e.g. De→En attention alignments), ``--backward`` the other
direction's (En→De: its links are target-source and are reversed).  Each is a fairseq-generate output
(its ``A-ID`` lines, by id; of a ``--nbest`` output the best hypothesis) or a Pharaoh file.  Writes
0-based Pharaoh lines (source-target) to stdout or ``--output``.  Bad input is one ``error:`` line.
Needs no torch code: it reads text and writes text.
"""
import argparse
import os
import signal
import sys
from typing import List, Set

from fairseq_rela.alignment.aer import AlignmentFileError, Link, check_lengths, read_hypothesis, read_lengths
from fairseq_rela.alignment.io import pharaoh_line
from fairseq_rela.alignment.symmetrize import METHODS
from fairseq_rela.cli.files import write_text

PROG = "fairseq-rela-symmetrize"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Symmetrise two directional word alignments.")
    p.add_argument("--forward", required=True, help="source-target links: fairseq-generate output or Pharaoh")
    p.add_argument("--backward", required=True,
                   help="the reverse direction's links (target-source, reversed here): fairseq-generate output or Pharaoh")
    p.add_argument("--method", choices=sorted(METHODS), default="grow-diag-final-and",
                   help="symmetrisation heuristic (default grow-diag-final-and)")
    p.add_argument("--forward-base", type=int, choices=[0, 1], default=0, help="index base of --forward (default 0)")
    p.add_argument("--backward-base", type=int, choices=[0, 1], default=0, help="index base of --backward (default 0)")
    p.add_argument("--no-reverse-backward", action="store_true",
                   help="--backward links are already source-target: do not reverse them")
    p.add_argument("--src", help="source sentences (words), to check link indices against lengths")
    p.add_argument("--tgt", help="target sentences (words), to check link indices against lengths")
    p.add_argument("--output", "-o", default="-", help="output file (default: stdout)")
    return p


def run(args) -> List[Set[Link]]:
    forward = read_hypothesis(args.forward, args.forward_base)
    if not forward:
        raise AlignmentFileError(f"{args.forward}: no sentences")
    backward = read_hypothesis(args.backward, args.backward_base, reverse=not args.no_reverse_backward,
                               sentences=len(forward))
    if len(backward) != len(forward):
        raise AlignmentFileError(f"{args.backward}: {len(backward)} sentences, but {args.forward} has {len(forward)}")
    if args.src or args.tgt:
        if not (args.src and args.tgt):
            raise AlignmentFileError("--src and --tgt go together")
        lengths = []
        for path in (args.src, args.tgt):
            lens = read_lengths(path)
            if len(lens) != len(forward):
                raise AlignmentFileError(f"{path}: {len(lens)} sentences, but {args.forward} has {len(forward)}")
            lengths.append(lens)
        check_lengths(forward, args.forward, *lengths)
        hint = "" if args.no_reverse_backward else " (after reversing it)"
        try:
            check_lengths(backward, args.backward, *lengths)
        except AlignmentFileError as err:
            raise AlignmentFileError(f"{err}{hint}") from None
    method = METHODS[args.method]
    return [method(f, b) for f, b in zip(forward, backward)]


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
