"""One rank of ``fairseq-rela-launch``: the entry point that torch's launcher starts once per process.

    python -m fairseq_rela.cli.rank PROGRAM FAIRSEQ_TRAIN_ARGS...

It reads the rank that ``torch.distributed.run`` gives it (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``;
``MASTER_ADDR``/``MASTER_PORT`` are read by ``env://``) and replaces itself (``exec``, same process) with
``PROGRAM`` (``fairseq-train``) and the distributed flags fairseq needs, so that the process torch's
launcher signals and watches is the training itself.  On Linux the rank also asks the kernel for SIGTERM
when the launcher dies, even by SIGKILL (``PR_SET_PDEATHSIG``, kept across ``exec``): no rank outlives it.
"""
import ctypes
import os
import signal
import sys
from typing import List, Mapping

PROG = "fairseq-rela-rank"
RANK_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


def rank_command(program: str, train_args: List[str], rank: int, world: int, local_rank: int) -> List[str]:
    """The training command of one rank (``--cpu`` among ``train_args``: gloo and legacy_ddp).

    One process gets ``--distributed-world-size 1`` (fairseq's default is every visible GPU); more get
    ``env://`` with the world size and rank given (without them fairseq mistakes torchrun's environment for
    its own launch mode and, on CPU, divides by ``torch.cuda.device_count()``).
    """
    cmd = [program, *train_args]
    if world == 1:
        return [*cmd, "--distributed-world-size", "1"]
    cmd += ["--distributed-world-size", str(world), "--distributed-rank", str(rank), "--distributed-no-spawn",
            "--distributed-init-method", "env://"]
    if "--cpu" in train_args:
        return [*cmd, "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp"]
    return [*cmd, "--device-id", str(local_rank)]


def rank_from_env(environ: Mapping[str, str]) -> tuple:
    """``(rank, world, local_rank)`` from torch's launcher's environment; ValueError if it is not there."""
    missing = [k for k in RANK_ENV if k not in environ]
    if missing:
        raise ValueError(f"{', '.join(missing)} not set: this entry point is started by fairseq-rela-launch")
    return int(environ["RANK"]), int(environ["WORLD_SIZE"]), int(environ["LOCAL_RANK"])


def die_with_parent(parent: int) -> None:
    """SIGTERM to this process (and what it execs) when ``parent`` ends; at once if it already has."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the launcher died before the request: no signal will come
            os.kill(os.getpid(), signal.SIGTERM)


def main(argv=None) -> None:
    parent = os.getppid()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        sys.exit(f"{PROG}: error: usage: python -m fairseq_rela.cli.rank PROGRAM FAIRSEQ_TRAIN_ARGS...")
    try:
        rank, world, local_rank = rank_from_env(os.environ)
    except ValueError as e:
        sys.exit(f"{PROG}: error: {e}")
    cmd = rank_command(argv[0], argv[1:], rank, world, local_rank)
    die_with_parent(parent)
    sys.stdout.flush()
    try:
        os.execv(cmd[0], cmd)
    except OSError as e:
        sys.exit(f"{PROG}: error: {cmd[0]}: {e.strerror}")


if __name__ == "__main__":
    main()
