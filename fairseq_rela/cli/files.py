"""Every file the command-line tools write goes through here: written whole or not at all.

Each writer writes a temporary file beside the target and renames it into place, with the
permissions ``open()`` would have given (``0666 & ~umask``), so a crash or a full disk never leaves
a half-written file that looks complete.
"""
import json
import os
import tempfile
from typing import Callable


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str, write: Callable[[str], None], suffix: str = ".tmp") -> None:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str, text: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)

    write_atomic(path, write)


def write_json(obj: dict, path: str) -> None:
    write_text(path, json.dumps(obj, indent=1, default=float))


def save_figure(fig, path: str) -> None:
    """Save a matplotlib figure (110 dpi, tight) and close it."""
    from fairseq_rela.analysis.plots import pyplot

    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"), suffix=".png")
    pyplot().close(fig)
