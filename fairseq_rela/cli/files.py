"""Every file the command-line tools write goes through here: written whole or not at all.

Each writer writes a temporary file beside the target and renames it into place, with the
permissions ``open()`` would have given (``0666 & ~umask``), so a crash or a full disk never leaves
a half-written file that looks complete.  A write that fails (a full disk, no permission) raises
:class:`WriteError`, an OSError whose message names the file, for the tools' one ``error:`` line; an
existing target that is not a regular file (a device such as ``/dev/full``, a FIFO) is never replaced.
"""
import json
import os
import stat
import tempfile
from typing import BinaryIO, Callable


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class WriteError(OSError):
    """A file could not be written; ``str(err)`` is one line naming it (``PATH: cannot write (REASON)``)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: cannot write ({reason})")
        self.path, self.reason = path, reason


def _os_error(err: BaseException):
    """The OSError behind ``err``, if any: ``err`` itself or one it was raised from or while handling
    (``torch.save`` turns a full disk into a RuntimeError raised while handling the OSError)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def write_atomic(path: str, write: Callable[[str], None], suffix: str = ".tmp") -> None:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``; an OSError on
    the way becomes a :class:`WriteError` (the temporary file removed)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise WriteError(path, "exists and is not a regular file; it is not replaced")
    except FileNotFoundError:
        pass
    except WriteError:
        raise
    except OSError as err:
        raise WriteError(path, err.strerror or str(err)) from err
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=suffix)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        cause = _os_error(err) if isinstance(err, Exception) else None
        if cause is not None and not isinstance(err, WriteError):
            raise WriteError(path, cause.strerror or str(cause)) from err
        raise


def write_binary(path: str, write: Callable[[BinaryIO], None]) -> None:
    """:func:`write_atomic` through an open binary file (so that a full disk is an OSError, ENOSPC, where
    writers given a path, like ``torch.save``, raise an unclear RuntimeError)."""
    def to_file(tmp):
        with open(tmp, "wb") as f:
            write(f)

    write_atomic(path, to_file)


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
