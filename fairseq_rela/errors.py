"""The one format of option errors, shared by the model, the tasks and the torch-free tools.

    --rela-norm: unknown value 'rsm'; choose one of rms, layer, none

Every option is checked once, where it is parsed, and a bad value raises :class:`OptionError`; the
command-line entry points turn it into one ``PROG: error: ...`` line and a non-zero exit.
"""
import os
import sys
from typing import Iterable, Optional


class OptionError(ValueError):
    """A bad option value; ``str(err)`` is the whole one-line message."""

    @classmethod
    def unknown(cls, flag: str, value, allowed: Iterable[str], what: str = "choose one of") -> "OptionError":
        return cls(f"{flag}: unknown value {value!r}; {what} {', '.join(allowed)}")


class StockCliError(SystemExit):
    """``PROG: error: message`` and exit 1, raised where a stock fairseq command line runs our code and offers
    no seam to turn an exception into that line (architecture functions while it parses options, the model's
    ``load_state_dict``).  A ``SystemExit`` so the stock CLIs print one line, not a traceback; library callers
    catch it by this name and read ``message``."""

    def __init__(self, message: str, prog: Optional[str] = None):
        self.message, self.prog = message, prog or os.path.basename(sys.argv[0]) or "fairseq"
        super().__init__(f"{self.prog}: error: {message}")

    def __reduce__(self):  # copy and pickle rebuild it from its parts, not from the finished line
        return type(self), (self.message, self.prog)


def check_choice(flag: str, value: str, allowed: Iterable[str]) -> str:
    """``value`` if it is one of ``allowed``, else :class:`OptionError`."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise OptionError.unknown(flag, value, allowed)
    return value
