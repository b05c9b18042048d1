"""The CPU allocator a training process starts with: tcmalloc preloaded in place of glibc's malloc.

glibc's malloc maps and unmaps large blocks (the logits and their gradients) at every update; tcmalloc
reuses them: more updates per second, the same logged losses (``examples/benchmark/train/README.md``).  An
allocator is chosen before a process starts, so this module tells a script or launcher what to export:

    eval "$(python -m fairseq_rela.cli.malloc --shell)"    # in a script, before fairseq-train
    python -m fairseq_rela.cli.malloc                        # which allocator, and why

``MALLOC`` picks: unset or ``tcmalloc``, tcmalloc where the loader finds it (``libtcmalloc_minimal.so.4`` or
``libtcmalloc.so.4``; Debian's ``libtcmalloc-minimal4``), else glibc's with one note on stderr; ``glibc``,
glibc's (a tcmalloc inherited in ``LD_PRELOAD`` is taken out).  A tcmalloc already in ``LD_PRELOAD`` is used.
"""
import argparse
import os
import platform
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Mapping, Optional

PROG = "fairseq_rela.cli.malloc"
NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
CHOICES = ("tcmalloc", "glibc")
ABI = {"x86_64": "x86-64", "aarch64": "AArch64"}  # the tag ldconfig -p gives this machine's libraries


@dataclass(frozen=True)
class Allocator:
    name: str  # "tcmalloc" or "glibc"
    preload: Optional[str]  # the library to preload (None: glibc's malloc, nothing to preload)
    why: str


def find_library(names=NAMES) -> Optional[str]:
    """The path of the first of ``names`` the dynamic loader would find for this machine (``ldconfig -p``, then
    the usual folders and ``$CONDA_PREFIX/lib``), or None."""
    try:
        cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        cache = ""
    abi = ABI.get(platform.machine())
    for name in names:
        for line in cache.split("\n"):
            entry, _, path = line.strip().partition(" => ")
            if entry.split(" ")[0] == name and (abi is None or abi in entry) and Path(path).is_file():
                return path
    dirs = DIRS + ((os.path.join(os.environ["CONDA_PREFIX"], "lib"),) if os.environ.get("CONDA_PREFIX") else ())
    for name in names:
        for d in dirs:
            if (Path(d) / name).is_file():
                return str(Path(d) / name)
    return None


def _entries(env: Mapping[str, str]) -> List[str]:
    return env.get("LD_PRELOAD", "").replace(":", " ").split()


def _is_tcmalloc(path: str) -> bool:
    return Path(path).name.startswith("libtcmalloc")


def choose(env: Optional[Mapping[str, str]] = None) -> Allocator:
    """The allocator ``MALLOC`` asks for and this machine has; ValueError for an unknown ``MALLOC``."""
    env = os.environ if env is None else env
    want = env.get("MALLOC", "") or "tcmalloc"
    if want not in CHOICES:
        raise ValueError(f"MALLOC={want!r}: not one of {', '.join(CHOICES)}")
    if want == "glibc":
        return Allocator("glibc", None, "MALLOC=glibc")
    preloaded = [p for p in _entries(env) if _is_tcmalloc(p) and Path(p).is_file()]
    if preloaded:
        return Allocator("tcmalloc", preloaded[0], "already in LD_PRELOAD")
    path = find_library()
    if path is None:
        return Allocator("glibc", None, "tcmalloc not found (Debian/Ubuntu: apt-get install libtcmalloc-minimal4; "
                                        "scripts/install.sh installs it where it can): CPU training runs slower")
    return Allocator("tcmalloc", path, f"found {path}")


def ld_preload(alloc: Allocator, env: Optional[Mapping[str, str]] = None) -> str:
    """``LD_PRELOAD`` for a process that should run ``alloc``: its library first, then the other entries it
    held; for glibc, those entries without any tcmalloc."""
    env = os.environ if env is None else env
    others = [p for p in _entries(env) if not _is_tcmalloc(p)]
    return " ".join(([alloc.preload] if alloc.preload else []) + others)


def shell(alloc: Allocator, env: Optional[Mapping[str, str]] = None) -> str:
    """The line a script evals: ``export LD_PRELOAD=…`` (``unset LD_PRELOAD`` where nothing is left), and
    ``FAIRSEQ_RELA_MALLOC`` set to the allocator's name; nothing changes ``LD_PRELOAD`` where it is right."""
    env = os.environ if env is None else env
    value = ld_preload(alloc, env)
    if value == env.get("LD_PRELOAD", ""):
        line = ""
    else:
        line = f"export LD_PRELOAD={shlex.quote(value)}\n" if value else "unset LD_PRELOAD\n"
    return line + f"export FAIRSEQ_RELA_MALLOC={alloc.name}\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n")[0])
    p.add_argument("--shell", action="store_true", help="print the lines for a script to eval, and a note on "
                   "stderr where tcmalloc is missing")
    args = p.parse_args(argv)
    try:
        alloc = choose()
    except ValueError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    if args.shell:
        if alloc.name == "glibc" and os.environ.get("MALLOC", "") != "glibc":
            print(f"{PROG}: note: glibc's malloc: {alloc.why}", file=sys.stderr)
        sys.stdout.write(shell(alloc))
    else:
        print(f"{alloc.name}: {alloc.why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
