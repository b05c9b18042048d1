"""fairseq-rela-launch (cli/launch.py): duplicate and own options are refused; the dry-run plan of ranks,
devices and backends."""
import pytest

from tests.helpers import run_cli

pytestmark = pytest.mark.e2e


def test_launcher_refuses_duplicate_and_own_options(toy_data, tmp_path):
    import os

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
    # dry run: a two-node CPU plan gives global ranks 2,3 on node 1
    out = run_cli("fairseq-rela-launch", "--nnodes", "2", "--node-rank", "1", "--nproc-per-node", "2",
                  "--master-addr", "10.0.0.1", "--master-port", "29500", "--dry-run", "--", "DATA", "--cpu").stdout
    lines = out.strip().split("\n")
    assert len(lines) == 2
    for local, line in enumerate(lines):
        assert f"--distributed-rank {2 + local}" in line and "--distributed-world-size 4" in line
        assert "tcp://10.0.0.1:29500" in line and "--ddp-backend legacy_ddp" in line and "gloo" in line
    gpu = run_cli("fairseq-rela-launch", "--nproc-per-node", "2", "--dry-run", "--", "DATA").stdout.strip().split("\n")
    assert [("--device-id 0" in gpu[0]), ("--device-id 1" in gpu[1])] == [True, True]
    assert all("legacy_ddp" not in g and "gloo" not in g for g in gpu)
