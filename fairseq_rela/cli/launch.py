"""fairseq-rela-launch: run ``fairseq-train`` on 1..N processes per node, CPU or GPU, one node or several.

    fairseq-rela-launch --nproc-per-node 4 -- DATA --user-dir fairseq_rela --arch ... --max-tokens 4096
    fairseq-rela-launch --nproc-per-node 2 --cpu -- DATA ...                       # 2 CPU processes (gloo)
    fairseq-rela-launch --nnodes 2 --node-rank R --master-addr HOST --master-port 29500 --nproc-per-node 8 -- DATA ...

Everything after ``--`` goes to ``fairseq-train`` unchanged.  A thin layer on torch's own launcher
(``torch.distributed.run``, i.e. torchrun's agent, through its API): it starts one process per rank
(world size = nodes x processes per node) as :mod:`fairseq_rela.cli.rank`, which becomes ``fairseq-train``
with ``--distributed-world-size W --distributed-rank R --distributed-no-spawn --distributed-init-method env://``
(:func:`fairseq_rela.cli.rank.rank_command`):

- GPU: ``--device-id LOCAL_RANK``, fairseq's default backend (NCCL) and DDP backend;
- CPU (``--cpu``, here or among the fairseq arguments): ``--distributed-backend gloo --ddp-backend legacy_ddp``
  (fairseq's default DDP backend passes ``device_ids`` and fails on CPU), and tcmalloc preloaded in every rank
  where it is installed (:mod:`fairseq_rela.cli.malloc`: faster CPU training, the same logged losses;
  ``MALLOC=glibc`` keeps glibc's malloc).

One process is a plain ``fairseq-train`` run with ``--distributed-world-size 1``.  One node rendezvouses
on a port torch picks (torchrun ``--standalone``) unless ``--master-port`` is given; several nodes use
torchrun's static rendezvous at ``--master-addr:--master-port`` with ``--node-rank``.  The launcher refuses
to run under ``torchrun`` (which would start it once per rank, and ``torchrun fairseq-train`` without a world
size starts independent duplicate runs writing to one save directory) and refuses fairseq arguments that it
sets itself.

Processes (torch's agent): each rank runs in its own process group.  If one rank fails, the others are
stopped and the launcher exits with that rank's status (a rank killed by signal N: 128+N).  SIGTERM, SIGINT,
SIGHUP or SIGQUIT to the launcher is forwarded to every rank's process group (SIGKILL after
``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` seconds, here 10 by default), and the launcher exits 128+signal (before the
ranks start, during the rendezvous, the signal ends the launcher itself at once).  A launcher
killed outright (SIGKILL) takes its ranks with it (:func:`fairseq_rela.cli.rank.die_with_parent`).
"""
import argparse
import os
import shlex
import signal
import sys
import uuid
from pathlib import Path
from typing import List

from fairseq_rela.cli.malloc import choose, ld_preload
from fairseq_rela.cli.rank import rank_command

PROG = "fairseq-rela-launch"
OWN_OPTIONS = ("--distributed-world-size", "--distributed-rank", "--distributed-init-method", "--distributed-no-spawn",
               "--distributed-backend", "--distributed-port", "--device-id", "--distributed-num-procs")
TORCHRUN_ENV = ("LOCAL_RANK", "TORCHELASTIC_RUN_ID", "GROUP_RANK")
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
SHUTDOWN_TIMEOUT = 10  # s from a forwarded signal to SIGKILL (torch's 30 equals schedulers' grace: too late)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Launch fairseq-train on 1..N processes per node, CPU or GPU.",
                                usage=f"{PROG} [options] -- FAIRSEQ_TRAIN_ARGS...")
    p.add_argument("--nproc-per-node", type=int, default=1, help="processes on this node (GPUs, or CPU processes)")
    p.add_argument("--nnodes", type=int, default=1, help="number of nodes (default 1)")
    p.add_argument("--node-rank", type=int, default=0, help="this node's index, 0..nnodes-1")
    p.add_argument("--master-addr", default=None, help="address of node 0 (default 127.0.0.1 on one node)")
    p.add_argument("--master-port", type=int, default=0, help="free TCP port on node 0 (one node: 0 = pick one)")
    p.add_argument("--cpu", action="store_true", help="CPU processes (gloo); also implied by --cpu in the train args")
    p.add_argument("--program", default=None, help="training console script (default: fairseq-train beside python)")
    p.add_argument("--dry-run", action="store_true", help="print each rank's command, run nothing")
    return p


def train_command(args, train_args: List[str]) -> List[str]:
    """``fairseq-train`` (or ``--program``) and its arguments, the same on every rank."""
    program = args.program or str(Path(sys.executable).parent / "fairseq-train")
    extra = ["--cpu"] if args.cpu and "--cpu" not in train_args else []
    return [program, *train_args, *extra]


def rank_commands(args, train_args: List[str]) -> List[List[str]]:
    """What each rank of this node runs (torch's agent numbers ranks node by node, as here)."""
    program, *rest = train_command(args, train_args)
    world = args.nnodes * args.nproc_per_node
    return [rank_command(program, rest, args.node_rank * args.nproc_per_node + local, world, local)
            for local in range(args.nproc_per_node)]


def check(parser, args, train_args: List[str]) -> None:
    """Every refusal, before anything starts."""
    if any(k in os.environ for k in TORCHRUN_ENV):
        parser.error("running under torchrun/torch.distributed.launch: start fairseq-rela-launch once per node "
                     "instead (it starts one process per rank itself)")
    if not train_args:
        parser.error("no fairseq-train arguments (put them after --)")
    own = [a for a in train_args if a.split("=")[0] in OWN_OPTIONS]
    if own:
        parser.error(f"{own[0]}: set by the launcher; give --nproc-per-node/--nnodes/--node-rank/--master-* instead")
    cpu = args.cpu or "--cpu" in train_args
    if cpu and any(a.split("=")[0] == "--ddp-backend" for a in train_args) and args.nproc_per_node * args.nnodes > 1:
        parser.error("--ddp-backend: the launcher uses legacy_ddp on CPU (the default backend fails there)")
    if args.nproc_per_node < 1 or args.nnodes < 1:
        parser.error("--nproc-per-node and --nnodes must be >= 1")
    if not 0 <= args.node_rank < args.nnodes:
        parser.error(f"--node-rank {args.node_rank}: must be in 0..{args.nnodes - 1}")
    if args.nnodes > 1 and (not args.master_addr or not args.master_port):
        parser.error("several nodes need --master-addr and --master-port (node 0's address and a free port)")
    if not 0 <= args.master_port < 65536:
        parser.error(f"--master-port {args.master_port}: must be in 0..65535")
    grace = os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(SHUTDOWN_TIMEOUT))
    if not grace.isdigit():
        parser.error(f"TORCH_ELASTIC_SHUTDOWN_TIMEOUT={grace!r}: must be a whole number of seconds")
    try:
        choose()
    except ValueError as err:
        parser.error(str(err))
    if not cpu and args.nproc_per_node > 1 and not args.dry_run:
        import torch

        if torch.cuda.device_count() < args.nproc_per_node:
            parser.error(f"--nproc-per-node {args.nproc_per_node}: this node has {torch.cuda.device_count()} GPUs "
                         "(add --cpu for CPU processes)")
    program = train_command(args, train_args)[0]
    if not args.dry_run and not (os.path.isfile(program) and os.access(program, os.X_OK)):
        parser.error(f"--program {program}: not an executable file" if args.program else
                     f"fairseq-train not found beside {sys.executable}; pass --program")


def preload(args, train_args: List[str]) -> str:
    """The ``LD_PRELOAD`` the ranks get: for a CPU run, :func:`~fairseq_rela.cli.malloc.ld_preload` of the
    allocator ``MALLOC`` asks for (tcmalloc where installed); on GPUs ``LD_PRELOAD`` as it is."""
    if not (args.cpu or "--cpu" in train_args):
        return os.environ.get("LD_PRELOAD", "")
    alloc = choose()  # MALLOC was checked in check()
    if alloc.name == "glibc" and os.environ.get("MALLOC", "") != "glibc":
        print(f"{PROG}: note: CPU ranks keep glibc's malloc: {alloc.why}", file=sys.stderr)
    return ld_preload(alloc)


def launch_config(args):
    """torchrun's configuration for these options: ``--standalone`` on one node without ``--master-port``,
    else the static rendezvous at node 0 (no restarts: a failed rank stops the run)."""
    from torch.distributed.launcher.api import LaunchConfig

    if args.nnodes == 1 and not args.master_port:
        rdzv = dict(rdzv_backend="c10d", rdzv_endpoint="localhost:0", rdzv_configs={}, run_id=str(uuid.uuid4().int))
    else:  # every node must name the same run (torchrun's default id)
        rdzv = dict(rdzv_backend="static", rdzv_endpoint=f"{args.master_addr or '127.0.0.1'}:{args.master_port}",
                    rdzv_configs={"rank": args.node_rank}, run_id="none")
    grace = int(os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", SHUTDOWN_TIMEOUT))
    return LaunchConfig(min_nodes=args.nnodes, max_nodes=args.nnodes, nproc_per_node=args.nproc_per_node,
                        max_restarts=0, shutdown_timeout=grace,
                        signals_to_handle=",".join(s.name for s in FORWARDED), **rdzv)


def exit_status(exitcode: int) -> int:
    """The launcher's status for a rank's exit code: 128+N for a rank killed by signal N (exit code -N)."""
    return 128 - exitcode if exitcode < 0 else exitcode


def describe(exitcode: int) -> str:
    """``was killed by SIGKILL`` (exit code -9), ``exited with status 1``."""
    if exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else f"signal {-exitcode}"
        return f"was killed by {name}"
    return f"exited with status {exitcode}"


def signals_end_the_launcher() -> None:
    """Until torch's agent starts the ranks (installing its forwarding handlers first), a signal ends the launcher
    at once: there is nothing to forward yet, and the rendezvous waits inside C++, where no Python handler runs."""
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_DFL)


def run(args, train_args: List[str]) -> int:
    """Run every rank of this node under torch's agent; the launcher's exit status."""
    from torch.distributed import DistError
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import RendezvousError
    from torch.distributed.launcher.api import elastic_launch

    config = launch_config(args)
    ranks_preload = preload(args, train_args)  # the ranks' environment: torch's agent passes the launcher's on
    if ranks_preload:
        os.environ["LD_PRELOAD"] = ranks_preload
    else:
        os.environ.pop("LD_PRELOAD", None)
    signals_end_the_launcher()
    entry = ["-m", "fairseq_rela.cli.rank", *train_command(args, train_args)]
    try:
        elastic_launch(config, sys.executable)(*entry)
    except SignalException as e:  # torch's agent has sent it to every rank (SIGKILL after the shutdown timeout)
        print(f"{PROG}: {e.sigval.name}: forwarded to every rank, all stopped", file=sys.stderr)
        return 128 + e.sigval
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()  # the first seen (the others were then stopped, or failed after)
        print(f"{PROG}: error: rank {rank} (pid {failure.pid}) {describe(failure.exitcode)}; the other ranks were "
              "stopped", file=sys.stderr)
        return exit_status(failure.exitcode)
    except (DistError, RendezvousError) as e:  # port in use, nodes missing: nothing started
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"{PROG}: error: rendezvous at {config.rdzv_endpoint} failed: {reason}", file=sys.stderr)
        return 1
    finally:
        signals_end_the_launcher()  # the ranks have ended
    return 0


def cli_main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, train_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = get_parser()
    args = parser.parse_args(own)
    check(parser, args, train_args)
    if args.dry_run:
        world = args.nnodes * args.nproc_per_node
        master = f"MASTER_ADDR={args.master_addr} MASTER_PORT={args.master_port} " if args.master_port else ""
        ranks_preload = preload(args, train_args)
        env = f"LD_PRELOAD={shlex.quote(ranks_preload)} " if ranks_preload != os.environ.get("LD_PRELOAD", "") else ""
        for local, cmd in enumerate(rank_commands(args, train_args)):
            rank = args.node_rank * args.nproc_per_node + local
            print(f"{master}RANK={rank} LOCAL_RANK={local} WORLD_SIZE={world} {env}{shlex.join(cmd)}")
        return
    sys.exit(run(args, train_args))


if __name__ == "__main__":
    cli_main()
