"""fairseq-rela-launch (cli/launch.py) and the per-rank entry it starts under torch's agent (cli/rank.py):
refused options; each rank's command (dry run = what the ranks really run); exit statuses (a rank killed by
signal N: 128+N); a signal to the launcher reaches every rank, and no rank outlives the launcher."""
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from fairseq_rela.cli.launch import describe, exit_status
from fairseq_rela.cli.rank import main as rank_main
from fairseq_rela.cli.rank import rank_command, rank_from_env
from tests.helpers import BIN, TRAIN_ARGS, USER_DIR, run_cli

LAUNCH = str(BIN / "fairseq-rela-launch")

# A stand-in for fairseq-train (--program): prints its rank, pid and arguments; with first argument "die", rank 1
# kills itself by SIGKILL; else it waits (exec: the rank's pid is the sleep).
STAND_IN = """#!/bin/sh
echo "rank $RANK pid $$: $*"
if [ "$1" = die ] && [ "$RANK" = 1 ]; then sleep 1; kill -KILL $$; fi
exec sleep 600
"""


# ------------------------------------------------------------------ the rank's command and status (unit)
@pytest.mark.unit
def test_rank_command_cpu_gpu_and_one_process():
    dist = ["--distributed-world-size", "4", "--distributed-rank", "3", "--distributed-no-spawn",
            "--distributed-init-method", "env://"]
    assert rank_command("ft", ["D", "--cpu"], 3, 4, 1) == \
        ["ft", "D", "--cpu", *dist, "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp"]
    assert rank_command("ft", ["D"], 3, 4, 1) == ["ft", "D", *dist, "--device-id", "1"]
    assert rank_command("ft", ["D", "--cpu"], 0, 1, 0) == ["ft", "D", "--cpu", "--distributed-world-size", "1"]


@pytest.mark.unit
def test_rank_entry_needs_the_launchers_environment(monkeypatch):
    assert rank_from_env({"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0"}) == (2, 4, 0)
    with pytest.raises(ValueError, match="LOCAL_RANK"):
        rank_from_env({"RANK": "2", "WORLD_SIZE": "4"})
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(SystemExit) as exc:
        rank_main(["fairseq-train", "DATA"])
    assert str(exc.value).startswith("fairseq-rela-rank: error: RANK, LOCAL_RANK, WORLD_SIZE not set")


@pytest.mark.unit
def test_a_rank_killed_by_signal_n_gives_128_plus_n():
    assert [exit_status(c) for c in (0, 1, 2, -signal.SIGKILL, -signal.SIGTERM)] == [0, 1, 2, 137, 143]
    assert describe(-signal.SIGKILL) == "was killed by SIGKILL" and describe(2) == "exited with status 2"
    assert exit_status(-signal.SIGHUP) == 129 and describe(-signal.SIGHUP) == "was killed by SIGHUP"  # signal 1
    assert exit_status(255) == 255 and describe(255) == "exited with status 255"


@pytest.mark.unit
@pytest.mark.parametrize("nnodes,node_rank,ok", [(1, 0, True), (1, 1, False), (2, 1, True), (2, 2, False),
                                                 (2, -1, False)])
def test_node_rank_must_be_below_nnodes(nnodes, node_rank, ok, capsys):
    """Issue 36: --node-rank N of --nnodes N (one past the last node) is refused before anything starts."""
    from fairseq_rela.cli.launch import cli_main

    argv = ["--nnodes", str(nnodes), "--node-rank", str(node_rank), "--master-addr", "127.0.0.1", "--master-port",
            "29500", "--cpu", "--dry-run", "--", "DATA"]
    if ok:
        cli_main(argv)
        assert capsys.readouterr().out.count("fairseq-train") == 1
    else:
        with pytest.raises(SystemExit) as exit_:
            cli_main(argv)
        assert exit_.value.code == 2
        assert f"--node-rank {node_rank}: must be in 0..{nnodes - 1}" in capsys.readouterr().err


# ------------------------------------------------------------------ options and plan (e2e)
@pytest.mark.e2e
def test_launcher_refuses_duplicate_and_own_options(toy_data, tmp_path):
    env_before = dict(os.environ)
    try:
        os.environ["LOCAL_RANK"] = "0"  # as under torchrun
        proc = run_cli("fairseq-rela-launch", "--nproc-per-node", "2", "--cpu", "--", toy_data / "bin", check=False)
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    assert proc.returncode != 0 and "torchrun" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("fairseq-rela-launch", "--nproc-per-node", "2", "--cpu", "--", toy_data / "bin",
                   "--distributed-world-size", "2", check=False)
    assert proc.returncode != 0 and "--distributed-world-size: set by the launcher" in proc.stderr
    proc = run_cli("fairseq-rela-launch", "--nnodes", "2", "--cpu", "--", toy_data / "bin", check=False)
    assert proc.returncode != 0 and "--master-addr" in proc.stderr
    proc = run_cli("fairseq-rela-launch", "--program", tmp_path, "--cpu", "--", "DATA", check=False)
    assert proc.returncode == 2 and "not an executable file" in proc.stderr and "Traceback" not in proc.stderr
    # dry run: a two-node CPU plan gives global ranks 2,3 on node 1, env:// at node 0
    out = run_cli("fairseq-rela-launch", "--nnodes", "2", "--node-rank", "1", "--nproc-per-node", "2",
                  "--master-addr", "10.0.0.1", "--master-port", "29500", "--dry-run", "--", "DATA", "--cpu").stdout
    lines = out.strip().split("\n")
    assert len(lines) == 2
    for local, line in enumerate(lines):
        assert line.startswith(f"MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 RANK={2 + local} LOCAL_RANK={local} ")
        assert f"--distributed-rank {2 + local}" in line and "--distributed-world-size 4" in line
        assert "--distributed-init-method env://" in line and "--ddp-backend legacy_ddp" in line and "gloo" in line
    gpu = run_cli("fairseq-rela-launch", "--nproc-per-node", "2", "--dry-run", "--", "DATA").stdout.strip().split("\n")
    assert [("--device-id 0" in gpu[0]), ("--device-id 1" in gpu[1])] == [True, True]
    assert all("legacy_ddp" not in g and "gloo" not in g for g in gpu)


@pytest.mark.e2e
@pytest.mark.parametrize("nproc", [1, 2])
def test_ranks_run_what_the_dry_run_prints(nproc):
    """Through torch's agent and the rank entry, each rank execs exactly the dry run's command."""
    common = ["--nproc-per-node", str(nproc), "--cpu", "--program", "/bin/echo", "--", "DATA", "--seed", "3"]
    plan = run_cli("fairseq-rela-launch", "--dry-run", *common).stdout.strip().split("\n")
    ran = run_cli("fairseq-rela-launch", *common).stdout.strip().split("\n")
    assert len(plan) == nproc
    # "RANK=r LOCAL_RANK=l WORLD_SIZE=w /bin/echo ARGS" (dry run) against "ARGS" (echoed by each rank)
    assert sorted(ran) == sorted(line.split(" /bin/echo ", 1)[1] for line in plan)


# ------------------------------------------------------------------ processes (e2e)
def _processes():
    """{pid: (ppid, pgid, state)} of every process, read from /proc (zombies are not running)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # ended meanwhile
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            table[int(entry.name)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def _family(launcher: int):
    """The launcher's ranks (its children) and the process groups they lead (with their data-loader workers)."""
    table = _processes()
    ranks = {pid for pid, (ppid, _, _) in table.items() if ppid == launcher}
    return ranks, {pid for pid in ranks if table[pid][1] == pid}


def _survivors(ranks, groups):
    return {pid for pid, (_, pgid, state) in _processes().items() if (pid in ranks or pgid in groups) and state != "Z"}


def _wait_for(predicate, timeout, what):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.2)


class Launched:
    """A launcher started in the background (stdout/stderr to files); on exit, kills (SIGKILL) whatever of its
    ranks' process groups is left, so that a failing test leaves no orphans behind."""

    def __init__(self, tmp_path: Path, *argv: str):
        self.out, self.err = tmp_path / "launch.out", tmp_path / "launch.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([LAUNCH, *map(str, argv)], stdout=out, stderr=err,
                                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
        self.ranks, self.groups = set(), set()

    def wait_for_ranks(self, n: int, ready: str, timeout: float = 600):
        """Wait until ``n`` ranks run and ``ready`` is in the launcher's output; remember their pids."""
        def up():
            assert self.proc.poll() is None, f"launcher ended ({self.proc.returncode}): {self.err.read_text()[-3000:]}"
            self.ranks, self.groups = _family(self.proc.pid)
            return len(self.ranks) == n and ready in self.out.read_text()
        _wait_for(up, timeout, f"{n} ranks and {ready!r}")

    def stand_in_pids(self) -> dict:
        """{"rank R": pid} from the stand-in's "rank R pid P: ARGS" lines."""
        lines = [line for line in self.out.read_text().split("\n") if line.startswith("rank ")]
        return {rank: int(pid) for rank, pid in (line.split(": ")[0].split(" pid ") for line in lines)}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in _survivors(self.ranks | set(self.stand_in_pids().values()), self.groups):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.e2e
def test_sigterm_stops_a_two_rank_training_and_exits_143(toy_data, tmp_path):
    """A real 2-rank CPU training: SIGTERM to the launcher reaches both ranks (and their data-loader workers),
    none survives, the launcher exits 143 within the shutdown grace."""
    args = [a for a in TRAIN_ARGS if a != "--cpu"]
    with Launched(tmp_path, "--nproc-per-node", "2", "--cpu", "--", toy_data / "bin", "--user-dir", USER_DIR, *args,
                  "--max-update", "100000", "--save-dir", tmp_path / "ckpt", "--data-buffer-size", "0") as run:
        run.wait_for_ranks(2, "begin training epoch 1")  # logged by rank 0 after both ranks joined
        time.sleep(2)  # mid-epoch
        assert run.ranks <= _survivors(run.ranks, run.groups)
        run.proc.send_signal(signal.SIGTERM)
        run.proc.wait(timeout=60)  # fairseq dies on SIGTERM; SIGKILL would come after 10 s
        assert run.proc.returncode == 143, run.err.read_text()[-3000:]
        _wait_for(lambda: not _survivors(run.ranks, run.groups), 10, "no rank process left")
        assert run.err.read_text().strip().splitlines()[-1] == \
            "fairseq-rela-launch: SIGTERM: forwarded to every rank, all stopped"


@pytest.mark.e2e
def test_a_rank_killed_by_sigkill_stops_the_others_and_exits_137(tmp_path):
    stand_in = tmp_path / "train.sh"
    stand_in.write_text(STAND_IN)
    stand_in.chmod(0o755)
    with Launched(tmp_path, "--nproc-per-node", "2", "--cpu", "--program", stand_in, "--", "die") as run:
        run.proc.wait(timeout=120)
        assert run.proc.returncode == 137, run.err.read_text()[-3000:]
        pids = run.stand_in_pids()
        assert set(pids) == {"rank 0", "rank 1"}
        line = run.err.read_text().strip().splitlines()[-1]
        assert line == f"fairseq-rela-launch: error: rank 1 (pid {pids['rank 1']}) was killed by SIGKILL; the " \
                       "other ranks were stopped"
        _wait_for(lambda: not _survivors(set(pids.values()), set(pids.values())), 10, "rank 0 stopped")


@pytest.mark.e2e
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_no_rank_outlives_the_launcher(tmp_path, sig):
    """SIGINT is forwarded (exit 130); a launcher killed outright takes its ranks with it (PR_SET_PDEATHSIG)."""
    stand_in = tmp_path / "train.sh"
    stand_in.write_text(STAND_IN)
    stand_in.chmod(0o755)
    with Launched(tmp_path, "--nproc-per-node", "2", "--cpu", "--program", stand_in, "--", "wait") as run:
        run.wait_for_ranks(2, "rank 1 pid", timeout=120)
        _wait_for(lambda: "rank 0 pid" in run.out.read_text(), 30, "rank 0")
        run.proc.send_signal(sig)
        run.proc.wait(timeout=60)
        assert run.proc.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL)
        _wait_for(lambda: not _survivors(run.ranks, run.groups), 10, "no rank process left")


# ------------------------------------------------------------------ several nodes (e2e)
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    """Whether a socket listens on ``port`` (/proc/net/tcp: hex port, state 0A), without connecting to it."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if int(local.rsplit(":", 1)[1], 16) == port and state == "0A":
                return True
    return False


@pytest.mark.e2e
def test_two_nodes_rendezvous_and_number_their_ranks():
    """Two launchers on one host as nodes 0 and 1 (torchrun's static rendezvous at --master-addr:--master-port)."""
    port = str(_free_port())
    common = ["--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", port, "--nproc-per-node", "1", "--cpu",
              "--program", "/bin/echo", "--", "DATA"]
    nodes = [subprocess.Popen([LAUNCH, "--node-rank", str(n), *common], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for n in (1, 0)][::-1]
    try:
        outs = [node.communicate(timeout=120) for node in nodes]  # both nodes, or neither, get past the rendezvous
    finally:
        for node in nodes:
            node.kill()
    for rank, (node, (out, err)) in enumerate(zip(nodes, outs)):
        assert node.returncode == 0, err[-3000:]
        assert out.strip().startswith(f"DATA --cpu --distributed-world-size 2 --distributed-rank {rank} "), out


@pytest.mark.e2e
def test_sigterm_while_waiting_for_the_other_nodes_ends_the_launcher():
    """No rank has started yet: the rendezvous waits in C++, where only the default action of a signal works."""
    port = _free_port()
    proc = subprocess.Popen([LAUNCH, "--nnodes", "2", "--node-rank", "0", "--master-addr", "127.0.0.1",
                             "--master-port", str(port), "--cpu", "--program", "/bin/echo", "--", "DATA"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _listening(port) or proc.poll() is not None, 120, "node 0's rendezvous store")
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert not _family(proc.pid)[0]  # no rank yet
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGTERM
    finally:
        proc.kill()
