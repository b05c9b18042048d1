"""Reading text files line by line, the same way everywhere: split on ``\\n`` only.

Python's ``str.splitlines()`` also breaks on U+0085, U+2028 and others, which some WMT files contain
inside sentences (``newssyscomb2009.de``): pairing by line would silently shift.  Every reader of
parallel text, links and gold alignments here goes through :func:`read_lines`.
"""
from typing import Iterable, List, Tuple


class AlignmentFileError(ValueError):
    """A problem in an input file, reported as ``FILE:LINE: problem``."""


def read_lines(path: str) -> List[str]:
    """The lines of a UTF-8 text file (a leading BOM dropped, ``\\r\\n`` accepted, split on ``\\n``
    only); a byte that is not UTF-8 is reported with the file, line and column."""
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    raw = data.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    lines = []
    for n, line in enumerate(raw, 1):
        try:
            lines.append(line.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as err:
            raise AlignmentFileError(f"{path}:{n}: not UTF-8 text (byte {line[err.start]:#04x} "
                                     f"at column {err.start + 1})") from None
    return lines


def pharaoh_line(links: Iterable[Tuple[int, int]]) -> str:
    """One Pharaoh line: ``src-tgt`` pairs, sorted, space-separated (no newline)."""
    return " ".join(f"{s}-{t}" for s, t in sorted(links))
