"""The one format of option errors, shared by the model, the tasks and the torch-free tools.

    --rela-norm: unknown value 'rsm'; choose one of rms, layer, none

Every option is checked once, where it is parsed, and a bad value raises :class:`OptionError`; the
command-line entry points turn it into one ``PROG: error: ...`` line and a non-zero exit.
"""
from typing import Iterable


class OptionError(ValueError):
    """A bad option value; ``str(err)`` is the whole one-line message."""

    @classmethod
    def unknown(cls, flag: str, value, allowed: Iterable[str], what: str = "choose one of") -> "OptionError":
        return cls(f"{flag}: unknown value {value!r}; {what} {', '.join(allowed)}")


def check_choice(flag: str, value: str, allowed: Iterable[str]) -> str:
    """``value`` if it is one of ``allowed``, else :class:`OptionError`."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise OptionError.unknown(flag, value, allowed)
    return value
