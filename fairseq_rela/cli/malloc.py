"""The CPU allocator for training: tcmalloc preloaded in place of glibc's malloc.

glibc's malloc serves every block above its mmap threshold (32 MiB at most on 64-bit) with a fresh ``mmap``
and gives it back at ``free``.  A 4,096-token batch's logits (4,096 x 8,008 floats, 131 MB), their
log-probabilities and gradients are such blocks: each update maps them, the kernel faults them in page by
page (zero-filled) and unmaps them again.  On the 2-core VM a training process then spends about a fifth of
its time in the kernel.  tcmalloc keeps freed memory for reuse: more updates per second, the same numbers
(``examples/benchmark/train/malloc``).  An allocator can only be chosen before a process starts, so this
module tells a script what to export:

    eval "$(python -m fairseq_rela.cli.malloc --shell)"    # in a script, before fairseq-train
    python -m fairseq_rela.cli.malloc                        # which allocator, and why

``MALLOC`` picks: unset or ``tcmalloc``, tcmalloc where the loader finds it (``libtcmalloc_minimal.so.4`` or
``libtcmalloc.so.4``; Debian's ``libtcmalloc-minimal4``), else glibc's with one note on stderr; ``glibc``,
glibc's.  An ``LD_PRELOAD`` that already names a tcmalloc is kept as it is.
"""
import argparse
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

PROG = "fairseq_rela.cli.malloc"
NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
CHOICES = ("tcmalloc", "glibc")


@dataclass(frozen=True)
class Allocator:
    name: str  # "tcmalloc" or "glibc"
    preload: Optional[str]  # the library to preload (None: glibc's malloc, nothing to preload)
    why: str


def find_library(names=NAMES) -> Optional[str]:
    """The path of the first of ``names`` the dynamic loader would find (``ldconfig -p``, then the usual folders
    and ``$CONDA_PREFIX/lib``), or None."""
    try:
        cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        cache = ""
    for name in names:
        for line in cache.split("\n"):
            if line.strip().startswith(name + " ") and "=>" in line:
                path = line.split("=>", 1)[1].strip()
                if Path(path).is_file():
                    return path
    dirs = DIRS + ((os.path.join(os.environ["CONDA_PREFIX"], "lib"),) if os.environ.get("CONDA_PREFIX") else ())
    for name in names:
        for d in dirs:
            if (Path(d) / name).is_file():
                return str(Path(d) / name)
    return None


def choose(env: Optional[Dict[str, str]] = None) -> Allocator:
    """The allocator ``MALLOC`` asks for and this machine has; ValueError for an unknown ``MALLOC``."""
    env = os.environ if env is None else env
    want = env.get("MALLOC", "") or "tcmalloc"
    if want not in CHOICES:
        raise ValueError(f"MALLOC={want!r}: not one of {', '.join(CHOICES)}")
    if want == "glibc":
        return Allocator("glibc", None, "MALLOC=glibc")
    preloaded = [p for p in env.get("LD_PRELOAD", "").replace(":", " ").split() if "tcmalloc" in Path(p).name]
    if preloaded:
        return Allocator("tcmalloc", preloaded[0], "already in LD_PRELOAD")
    path = find_library()
    if path is None:
        return Allocator("glibc", None, "tcmalloc not found (Debian/Ubuntu: apt-get install libtcmalloc-minimal4; "
                                        "scripts/install.sh installs it where it can): CPU training runs slower")
    return Allocator("tcmalloc", path, f"found {path}")


def shell(alloc: Allocator, env: Optional[Dict[str, str]] = None) -> str:
    """The ``export`` line that puts ``alloc`` in ``LD_PRELOAD`` (kept entries stay after it); empty for glibc."""
    env = os.environ if env is None else env
    if alloc.preload is None:
        return ""
    kept = [p for p in env.get("LD_PRELOAD", "").replace(":", " ").split() if p != alloc.preload]
    return f"export LD_PRELOAD={shlex.quote(' '.join([alloc.preload] + kept))}\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n")[0])
    p.add_argument("--shell", action="store_true", help="print the export line for a script to eval (nothing for "
                   "glibc), and the choice as a note on stderr where tcmalloc is missing")
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
