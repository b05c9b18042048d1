"""fairseq-rela-launch: run ``fairseq-train`` on 1..N processes per node, CPU or GPU, one node or several.

    fairseq-rela-launch --nproc-per-node 4 -- DATA --user-dir fairseq_rela --arch ... --max-tokens 4096
    fairseq-rela-launch --nproc-per-node 2 --cpu -- DATA ...                       # 2 CPU processes (gloo)
    fairseq-rela-launch --nnodes 2 --node-rank R --master-addr HOST --master-port 29500 --nproc-per-node 8 -- DATA ...

Everything after ``--`` goes to ``fairseq-train`` unchanged.  The launcher starts one process per rank
(world size = nodes x processes per node), each with ``--distributed-world-size W --distributed-rank R
--distributed-no-spawn --distributed-init-method tcp://HOST:PORT``:

- GPU: ``--device-id LOCAL_RANK``, fairseq's default backend (NCCL) and DDP backend;
- CPU (``--cpu``, here or among the fairseq arguments): ``--distributed-backend gloo --ddp-backend legacy_ddp``
  (fairseq's default DDP backend passes ``device_ids`` and fails on CPU).

One process gives a plain ``fairseq-train`` run.  The launcher refuses to run under ``torchrun`` (which
would start it once per rank, and ``torchrun fairseq-train`` without a world size starts independent
duplicate runs writing to one save directory) and refuses fairseq arguments that it sets itself.  If one
rank fails, the others are stopped and the launcher exits with that rank's status.
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List

PROG = "fairseq-rela-launch"
OWN_OPTIONS = ("--distributed-world-size", "--distributed-rank", "--distributed-init-method", "--distributed-no-spawn",
               "--distributed-backend", "--distributed-port", "--device-id", "--distributed-num-procs")
TORCHRUN_ENV = ("LOCAL_RANK", "TORCHELASTIC_RUN_ID", "GROUP_RANK")


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
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_commands(args, train_args: List[str]) -> List[List[str]]:
    """One command per rank of this node."""
    program = args.program or str(Path(sys.executable).parent / "fairseq-train")
    cpu = args.cpu or "--cpu" in train_args
    extra = ["--cpu"] if args.cpu and "--cpu" not in train_args else []
    world = args.nnodes * args.nproc_per_node
    if world == 1:
        return [[program, *train_args, *extra]]
    init = f"tcp://{args.master_addr}:{args.master_port}"
    cmds = []
    for local in range(args.nproc_per_node):
        rank = args.node_rank * args.nproc_per_node + local
        dist = ["--distributed-world-size", str(world), "--distributed-rank", str(rank), "--distributed-no-spawn",
                "--distributed-init-method", init]
        dist += ["--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp"] if cpu else ["--device-id", str(local)]
        cmds.append([program, *train_args, *extra, *dist])
    return cmds


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
    if not cpu and args.nproc_per_node > 1 and not args.dry_run:
        import torch

        if torch.cuda.device_count() < args.nproc_per_node:
            parser.error(f"--nproc-per-node {args.nproc_per_node}: this node has {torch.cuda.device_count()} GPUs "
                         "(add --cpu for CPU processes)")
    if args.program is None and not (Path(sys.executable).parent / "fairseq-train").exists() and not args.dry_run:
        parser.error(f"fairseq-train not found beside {sys.executable}; pass --program")


def run(cmds: List[List[str]]) -> int:
    """Start every rank; if one fails, stop the others. Returns the first non-zero status (or 0)."""
    procs = [subprocess.Popen(c) for c in cmds]
    status = 0
    try:
        while procs:
            for p in list(procs):
                rc = p.poll()
                if rc is None:
                    continue
                procs.remove(p)
                if rc != 0 and status == 0:
                    status = rc
                    print(f"{PROG}: error: rank process {p.pid} exited with status {rc}; stopping the others",
                          file=sys.stderr)
                    for q in procs:
                        q.send_signal(signal.SIGTERM)
            time.sleep(0.2)
    except KeyboardInterrupt:
        for q in procs:
            q.send_signal(signal.SIGINT)
        for q in procs:
            q.wait()
        return 130
    return status


def cli_main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, train_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = get_parser()
    args = parser.parse_args(own)
    check(parser, args, train_args)
    if args.nnodes == 1:
        args.master_addr = args.master_addr or "127.0.0.1"
        args.master_port = args.master_port or free_port()
    cmds = rank_commands(args, train_args)
    if args.dry_run:
        for c in cmds:
            print(" ".join(shlex_quote(a) for a in c))
        return
    sys.exit(run(cmds))


def shlex_quote(a: str) -> str:
    import shlex

    return shlex.quote(a)


if __name__ == "__main__":
    cli_main()
