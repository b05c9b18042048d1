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


def need_tcmalloc():
    """The e2e tests need tcmalloc (scripts/install.sh installs it); FAIRSEQ_RELA_NO_TCMALLOC=1 skips them on a
    machine that cannot have it, with the reason."""
    if malloc.find_library() is None:
        if os.environ.get("FAIRSEQ_RELA_NO_TCMALLOC") == "1":
            pytest.skip("tcmalloc not installed and FAIRSEQ_RELA_NO_TCMALLOC=1")
        pytest.fail(f"tcmalloc is not installed: {INSTALL}, or set FAIRSEQ_RELA_NO_TCMALLOC=1")


@pytest.mark.unit
def test_choose_follows_malloc_and_uses_a_preloaded_tcmalloc(monkeypatch, tmp_path):
    monkeypatch.setattr(malloc, "find_library", lambda names=malloc.NAMES: "/opt/lib/libtcmalloc_minimal.so.4")
    found = malloc.choose({})
    assert (found.name, found.preload) == ("tcmalloc", "/opt/lib/libtcmalloc_minimal.so.4")
    assert malloc.shell(found, {"LD_PRELOAD": "/x/libfoo.so"}) == \
        "export LD_PRELOAD='/opt/lib/libtcmalloc_minimal.so.4 /x/libfoo.so'\nexport FAIRSEQ_RELA_MALLOC=tcmalloc\n"
    assert malloc.choose({"MALLOC": "glibc"}) == malloc.Allocator("glibc", None, "MALLOC=glibc")
    assert malloc.shell(malloc.choose({"MALLOC": "glibc"}), {}) == "export FAIRSEQ_RELA_MALLOC=glibc\n"
    own = tmp_path / "libtcmalloc.so.4"
    own.write_bytes(b"")
    env = {"LD_PRELOAD": f"/a/libx.so:{own}"}
    kept = malloc.choose(env)  # the user's own tcmalloc is used, first in the list
    assert (kept.preload, kept.why) == (str(own), "already in LD_PRELOAD")
    assert malloc.shell(kept, env) == f"export LD_PRELOAD='{own} /a/libx.so'\nexport FAIRSEQ_RELA_MALLOC=tcmalloc\n"
    glibc = {**env, "MALLOC": "glibc"}  # MALLOC=glibc takes an inherited tcmalloc out
    assert malloc.shell(malloc.choose(glibc), glibc) == "export LD_PRELOAD=/a/libx.so\nexport FAIRSEQ_RELA_MALLOC=glibc\n"
    alone = {"LD_PRELOAD": str(own), "MALLOC": "glibc"}
    assert malloc.shell(malloc.choose(alone), alone) == "unset LD_PRELOAD\nexport FAIRSEQ_RELA_MALLOC=glibc\n"
    right = {"LD_PRELOAD": "/opt/lib/libtcmalloc_minimal.so.4"}  # already as it should be: LD_PRELOAD untouched
    assert malloc.shell(malloc.choose(right), right) == "export FAIRSEQ_RELA_MALLOC=tcmalloc\n"
    gone = {"LD_PRELOAD": "/nonexistent/libtcmalloc.so.4"}  # ld.so would ignore it: not counted, and dropped
    assert malloc.choose(gone).preload == "/opt/lib/libtcmalloc_minimal.so.4"
    assert malloc.ld_preload(malloc.choose(gone), gone) == "/opt/lib/libtcmalloc_minimal.so.4"
    with pytest.raises(ValueError, match="MALLOC='tc'"):
        malloc.choose({"MALLOC": "tc"})
    monkeypatch.setattr(malloc, "find_library", lambda names=malloc.NAMES: None)
    missing = malloc.choose({})
    assert missing.name == "glibc" and missing.preload is None and "libtcmalloc-minimal4" in missing.why


@pytest.mark.unit
def test_find_library_takes_this_machines_entry_of_the_loader_cache_then_the_usual_folders(tmp_path, monkeypatch):
    lib, lib32 = tmp_path / "lib", tmp_path / "lib32"
    for d in (lib, lib32):
        d.mkdir()
        (d / "libtcmalloc.so.4").write_bytes(b"")
    cache = (f"\tlibtcmalloc.so.4 (libc6) => {lib32}/libtcmalloc.so.4\n"  # another architecture's copy, listed first
             f"\tlibtcmalloc.so.4 (libc6,x86-64) => {lib}/libtcmalloc.so.4\n\tlibgone.so.1 (libc6,x86-64) => {tmp_path}/no\n")
    monkeypatch.setattr(malloc.platform, "machine", lambda: "x86_64")
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
    need_tcmalloc()
    proc = _shell(MAPS)
    assert proc.returncode == 0 and "libtcmalloc" in proc.stdout and proc.stderr == "", proc.stderr
    proc = _shell(MAPS, MALLOC="glibc")
    assert proc.returncode == 0 and "libtcmalloc" not in proc.stdout and proc.stderr == ""
    proc = _shell(f"{sys.executable} -m fairseq_rela.cli.malloc --shell", MALLOC="jemalloc")
    assert proc.returncode == 2 and proc.stdout == "" and \
        proc.stderr.strip().split("\n") == ["fairseq_rela.cli.malloc: error: MALLOC='jemalloc': not one of tcmalloc, glibc"]


@pytest.mark.e2e
def test_launcher_cpu_ranks_get_tcmalloc(tmp_path):
    need_tcmalloc()
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
    need_tcmalloc()
    logs = {}
    for name in ("tcmalloc", "glibc"):
        train = [str(BIN / "fairseq-train"), str(toy_data / "bin"), "--user-dir", USER_DIR, *TRAIN_ARGS,
                 "--max-update", "12", "--log-interval", "3", "--log-format", "simple", "--no-save",
                 "--data-buffer-size", "0", "--disable-validation"]
        check = {"tcmalloc": 'case "$LD_PRELOAD" in *libtcmalloc*) ;; *) exit 9 ;; esac',
                 "glibc": 'case "$LD_PRELOAD" in *libtcmalloc*) exit 9 ;; esac'}[name]
        proc = _shell(f'eval "$({sys.executable} -m fairseq_rela.cli.malloc --shell)" && '
                      f'[ "$FAIRSEQ_RELA_MALLOC" = {name} ] && {check} && exec ' + " ".join(f"'{a}'" for a in train),
                      MALLOC=name)
        assert proc.returncode == 0, proc.stderr[-2000:]
        logs[name] = [re.sub(r", (wps|ups|wpb|bsz|wall|train_wall|gb_free|num_updates|lr|loss_scale|clip)=[^,]*", "",
                             line.split("| train_inner |")[1]) for line in proc.stdout.split("\n") + proc.stderr.split("\n")
                      if "| train_inner |" in line]
    assert len(logs["glibc"]) == 4 and all("gnorm=" in line for line in logs["glibc"]), logs
    assert logs["tcmalloc"] == logs["glibc"]
