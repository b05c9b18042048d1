"""fairseq_rela.cli.malloc: which allocator a CPU training gets (tcmalloc where the loader finds it, ``MALLOC=glibc``
to keep glibc's), the export line scripts eval, that the line really loads tcmalloc into a child, that the
launcher's CPU ranks get it, and that a tcmalloc-preloaded fairseq-train logs glibc's numbers."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq_rela.cli import malloc
from tests.helpers import BIN, TRAIN_ARGS, USER_DIR

INSTALL = "scripts/install.sh installs libtcmalloc-minimal4 (Debian/Ubuntu, as root)"


@pytest.mark.unit
def test_choose_follows_malloc_and_keeps_a_preloaded_tcmalloc(monkeypatch):
    monkeypatch.setattr(malloc, "find_library", lambda names=malloc.NAMES: "/opt/lib/libtcmalloc_minimal.so.4")
    found = malloc.choose({})
    assert (found.name, found.preload) == ("tcmalloc", "/opt/lib/libtcmalloc_minimal.so.4")
    assert malloc.shell(found, {"LD_PRELOAD": "/x/libfoo.so"}) == \
        "export LD_PRELOAD='/opt/lib/libtcmalloc_minimal.so.4 /x/libfoo.so'\n"
    assert malloc.choose({"MALLOC": "glibc"}) == malloc.Allocator("glibc", None, "MALLOC=glibc")
    assert malloc.shell(malloc.choose({"MALLOC": "glibc"}), {}) == ""
    kept = malloc.choose({"LD_PRELOAD": "/a/libx.so:/b/libtcmalloc.so.4"})  # the user's own tcmalloc stays
    assert (kept.preload, kept.why) == ("/b/libtcmalloc.so.4", "already in LD_PRELOAD")
    assert malloc.shell(kept, {"LD_PRELOAD": "/a/libx.so:/b/libtcmalloc.so.4"}) == \
        "export LD_PRELOAD='/b/libtcmalloc.so.4 /a/libx.so'\n"
    with pytest.raises(ValueError, match="MALLOC='tc'"):
        malloc.choose({"MALLOC": "tc"})
    monkeypatch.setattr(malloc, "find_library", lambda names=malloc.NAMES: None)
    missing = malloc.choose({})
    assert missing.name == "glibc" and missing.preload is None and "libtcmalloc-minimal4" in missing.why


@pytest.mark.unit
def test_find_library_takes_the_loader_cache_then_the_usual_folders(tmp_path, monkeypatch):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "libtcmalloc.so.4").write_bytes(b"")
    cache = f"\tlibtcmalloc.so.4 (libc6,x86-64) => {lib}/libtcmalloc.so.4\n\tlibgone.so.1 (libc6) => {tmp_path}/no\n"
    monkeypatch.setattr(malloc.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, cache, ""))
    assert malloc.find_library() == f"{lib}/libtcmalloc.so.4"
    assert malloc.find_library(("libgone.so.1",)) is None  # listed, but the file is not there
    monkeypatch.setattr(malloc.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(FileNotFoundError("ldconfig")))
    monkeypatch.setattr(malloc, "DIRS", (str(tmp_path / "none"), str(lib)))
    assert malloc.find_library() == f"{lib}/libtcmalloc.so.4"
    monkeypatch.setenv("CONDA_PREFIX", str(tmp_path / "conda"))
    (tmp_path / "conda" / "lib").mkdir(parents=True)
    (tmp_path / "conda" / "lib" / "libtcmalloc_minimal.so.4").write_bytes(b"")
    assert malloc.find_library() == f"{tmp_path}/conda/lib/libtcmalloc_minimal.so.4"  # the first name wins
    monkeypatch.setattr(malloc, "DIRS", ())
    monkeypatch.delenv("CONDA_PREFIX")
    assert malloc.find_library() is None


def _shell(script: str, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC")}
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env={**clean, **env},
                          cwd=Path(__file__).resolve().parents[1])


MAPS = f'eval "$({sys.executable} -m fairseq_rela.cli.malloc --shell)" && {sys.executable} -c ' \
       '"print(open(\'/proc/self/maps\').read())"'


@pytest.mark.e2e
def test_the_export_line_loads_tcmalloc_into_a_child_and_malloc_glibc_does_not():
    assert malloc.find_library() is not None, f"tcmalloc is not installed: {INSTALL}"
    proc = _shell(MAPS)
    assert proc.returncode == 0 and "libtcmalloc" in proc.stdout and proc.stderr == "", proc.stderr
    proc = _shell(MAPS, MALLOC="glibc")
    assert proc.returncode == 0 and "libtcmalloc" not in proc.stdout and proc.stderr == ""
    proc = _shell(f"{sys.executable} -m fairseq_rela.cli.malloc --shell", MALLOC="jemalloc")
    assert proc.returncode == 2 and proc.stdout == "" and \
        proc.stderr.strip().split("\n") == ["fairseq_rela.cli.malloc: error: MALLOC='jemalloc': not one of tcmalloc, glibc"]


@pytest.mark.e2e
def test_launcher_cpu_ranks_get_tcmalloc(tmp_path):
    assert malloc.find_library() is not None, f"tcmalloc is not installed: {INSTALL}"
    program = tmp_path / "show-preload"
    program.write_text("#!/bin/sh\necho \"preload=$LD_PRELOAD\"\n")
    program.chmod(0o755)
    def launch(*own, cpu=True):
        return " ".join([str(BIN / "fairseq-rela-launch"), "--nproc-per-node", "2", "--program", str(program), *own,
                         "--", "DATA", *(["--cpu"] if cpu else [])])

    ranks = _shell(launch()).stdout.strip().split("\n")
    assert len(ranks) == 2 and all(re.fullmatch(r"preload=\S*/libtcmalloc[_a-z]*\.so\.4", r) for r in ranks), ranks
    plan = _shell(launch("--dry-run")).stdout
    assert plan.count(" LD_PRELOAD=") == 2 and "libtcmalloc" in plan
    assert _shell(launch(), MALLOC="glibc").stdout.strip().split("\n") == ["preload="] * 2
    assert "LD_PRELOAD" not in _shell(launch("--dry-run", cpu=False)).stdout  # GPU ranks: left as they are
    proc = _shell(launch(), MALLOC="x")
    assert proc.returncode == 2 and "MALLOC='x': not one of tcmalloc, glibc" in proc.stderr


@pytest.mark.e2e
def test_fairseq_train_under_tcmalloc_logs_the_numbers_of_glibc(toy_data, tmp_path):
    """The allocator may change the speed, never a number: every logged loss, nll_loss and gnorm is the same."""
    assert malloc.find_library() is not None, f"tcmalloc is not installed: {INSTALL}"
    logs = {}
    for name in ("tcmalloc", "glibc"):
        train = [str(BIN / "fairseq-train"), str(toy_data / "bin"), "--user-dir", USER_DIR, *TRAIN_ARGS,
                 "--max-update", "12", "--log-interval", "3", "--log-format", "simple", "--no-save",
                 "--data-buffer-size", "0", "--disable-validation"]
        proc = _shell(f'eval "$({sys.executable} -m fairseq_rela.cli.malloc --shell)" && exec '
                      + " ".join(f"'{a}'" for a in train), MALLOC=name)
        assert proc.returncode == 0, proc.stderr[-2000:]
        logs[name] = [re.sub(r", (wps|ups|wpb|bsz|wall|train_wall|gb_free|num_updates|lr|loss_scale|clip)=[^,]*", "",
                             line.split("| train_inner |")[1]) for line in proc.stdout.split("\n") + proc.stderr.split("\n")
                      if "| train_inner |" in line]
    assert len(logs["glibc"]) == 4 and all("gnorm=" in line for line in logs["glibc"]), logs
    assert logs["tcmalloc"] == logs["glibc"]
