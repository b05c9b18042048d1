#!/usr/bin/env python
"""CPU training under each memory allocator: real ``fairseq-train`` processes, side by side, one per core.

Each pair runs glibc's malloc and one other allocator at the same time, one torch thread each, pinned to
cores 0 and 1 (swapped every round), on the Multi30k recipe of ``examples/replication/multi30k.sh`` (3+3
layers, 128/512, 4,096 tokens a batch, seed 1): ``--updates`` updates, no validation, no checkpoint.  A
process's time per update is the mean over fairseq's ``train_inner`` intervals after the first of
``wpb / wps`` (words per batch over words per second, both logged to a tenth); a pair's ratio is glibc's time
over the other's, so the two see the same machine.  ``glibc-2`` (glibc again) is the noise floor.  Each
process's system time and minor page faults come from ``wait4``, and its memory map is read while it runs
(the preloaded library must be there).  Every logged loss, nll_loss and gnorm must equal glibc's in the same
pair (the allocator may not change them), else the run fails.

Allocators: ``tcmalloc`` and ``jemalloc`` by ``LD_PRELOAD`` (Debian: ``libtcmalloc-minimal4``,
``libjemalloc2``); ``thp``: glibc with PyTorch's ``THP_MEM_ALLOC_ENABLE=1`` (transparent huge pages for blocks
of 2 MiB and more, where ``/sys/kernel/mm/transparent_hugepage/enabled`` allows them); ``glibc-tuned``: glibc
with ``GLIBC_TUNABLES`` that forbid ``mmap`` and trimming (``mmap_max=0``, ``trim_threshold`` 64 GiB).

    python scripts/benchmark_malloc.py --data work/multi30k/bin --output-dir examples/benchmark/train/malloc
    python scripts/benchmark_malloc.py --render examples/benchmark/train/malloc/malloc.json   # the table again
"""
import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from statistics import median
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fairseq_rela.cli.files import WriteError, write_json, write_text  # noqa: E402
from fairseq_rela.cli.malloc import find_library  # noqa: E402

PROG = "benchmark_malloc.py"
PRELOADS = {"tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"), "jemalloc": ("libjemalloc.so.2",)}
INSTALL = {"tcmalloc": "libtcmalloc-minimal4", "jemalloc": "libjemalloc2"}
TUNED = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
KNOWN = ("tcmalloc", "jemalloc", "thp", "glibc-tuned", "glibc-2")
RECIPE = ["--task", "translation_rela", "--attention-activation", "softmax", "--arch", "rela_transformer",
          "--encoder-layers", "3", "--decoder-layers", "3", "--encoder-embed-dim", "128", "--decoder-embed-dim", "128",
          "--encoder-ffn-embed-dim", "512", "--decoder-ffn-embed-dim", "512", "--encoder-attention-heads", "4",
          "--decoder-attention-heads", "4", "--share-all-embeddings", "--optimizer", "adam", "--adam-betas",
          "(0.9,0.98)", "--lr", "1e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "400", "--dropout", "0.2",
          "--attention-dropout", "0.1", "--weight-decay", "0.0001", "--criterion", "label_smoothed_cross_entropy",
          "--label-smoothing", "0.1", "--max-tokens", "4096", "--seed", "1", "--cpu", "--no-save",
          "--disable-validation", "--log-format", "simple", "--no-progress-bar"]
INNER = re.compile(r"\| train_inner \| epoch \d+:\s+(\d+) / \d+ (.*)$")
NUMBERS = ("loss", "nll_loss", "gnorm")
MAPS_AFTER = 3.0  # s after the start when a process's memory map is read (the loader has long finished)
children: List[int] = []  # pids of the running fairseq-train processes


class BenchError(Exception):
    """A failed measurement: one line for the user."""


def environment(name: str, paths: Dict[str, str]) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", "THP_MEM_ALLOC_ENABLE", "MALLOC", "GLIBC_TUNABLES")}
    env["OMP_NUM_THREADS"] = "1"
    if name in PRELOADS:
        env["LD_PRELOAD"] = paths[name]
    elif name == "thp":
        env["THP_MEM_ALLOC_ENABLE"] = "1"
    elif name == "glibc-tuned":
        env["GLIBC_TUNABLES"] = TUNED
    return env


def parse(log: str) -> dict:
    """fairseq's ``train_inner`` lines: seconds per update (``wpb / wps``) after the first interval, and the
    logged numbers."""
    rows = []
    for line in log.split("\n"):
        m = INNER.search(line)
        if m:
            fields = dict(kv.split("=", 1) for kv in m.group(2).split(", ") if "=" in kv)
            rows.append((int(m.group(1)), fields))
    if len(rows) < 2:
        raise BenchError(f"fewer than two train_inner lines (log ends: {log.strip()[-300:]!r})")
    try:
        per_update = [float(f["wpb"]) / float(f["wps"]) for _, f in rows[1:]]
    except (KeyError, ValueError, ZeroDivisionError) as err:
        raise BenchError(f"a train_inner line without wpb/wps ({err})")
    return {"seconds_per_update": sum(per_update) / len(per_update),
            "numbers": [[u] + [f.get(k) for k in NUMBERS] for u, f in rows]}


def _reap(pid: int, timeout: float = 10.0) -> None:
    """End a child's process group (SIGTERM, then SIGKILL) and collect it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:
                return
            time.sleep(0.1)


def spawn(argv: List[str], env: Dict[str, str], log) -> int:
    """Start ``argv`` in its own session with ``log`` as stdout and stderr and no signal blocked; signals are
    held back here until the child is in ``children``, so stop() never misses one."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
    try:
        path = argv[0] if os.sep in argv[0] else subprocess.run(["which", argv[0]], capture_output=True,
                                                               text=True).stdout.strip()
        pid = os.posix_spawn(path, argv, env, file_actions=[(os.POSIX_SPAWN_DUP2, log.fileno(), 1),
                                                            (os.POSIX_SPAWN_DUP2, log.fileno(), 2)],
                             setsid=True, setsigmask=())
        children.append(pid)
        return pid
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def run_pair(names, cores, args, paths, folder: Path) -> List[dict]:
    """Both allocators at once, one per core; each process's parsed log, wait4 usage and mapped allocator."""
    cmd = [args.program, args.data, "--user-dir", str(REPO / "fairseq_rela"), *RECIPE,
           "--max-update", str(args.updates), "--log-interval", str(args.interval)]
    procs = []
    try:
        for name, core in zip(names, cores):
            log = open(folder / f"{name}-{len(list(folder.iterdir()))}.log", "w")
            procs.append((name, core, spawn(["taskset", "-c", str(core)] + cmd,
                                             environment("glibc" if name == "glibc-2" else name, paths), log), log))
        time.sleep(MAPS_AFTER)
        mapped = {}
        for name, _, pid, _ in procs:
            try:
                maps = Path(f"/proc/{pid}/maps").read_text()
            except OSError:
                maps = ""
            mapped[name] = sorted({Path(line.split()[-1]).name for line in maps.split("\n")
                                   if re.search(r"lib(tc|je)malloc", line)})
        out = []
        for name, core, pid, log in procs:
            _, status, usage = os.wait4(pid, 0)
            children.remove(pid)
            code = os.waitstatus_to_exitcode(status)
            log.close()
            text = Path(log.name).read_text(errors="replace")
            if code != 0:
                raise BenchError(f"{name}: fairseq-train exited {code} ({Path(log.name).name}: {text.strip()[-300:]!r})")
            want = Path(paths[name]).resolve().name if name in PRELOADS else None  # maps name the file itself
            if mapped[name] != ([want] if want else []):
                raise BenchError(f"{name}: the process mapped {mapped[name] or 'no tcmalloc/jemalloc'}, not "
                                 f"{want or 'glibc alone'}")
            out.append({"allocator": name, "core": core, **parse(text), "system_seconds": round(usage.ru_stime, 2),
                        "user_seconds": round(usage.ru_utime, 2), "minor_faults": usage.ru_minflt,
                        "mapped": mapped[name]})
        return out
    finally:
        for _, _, pid, log in procs:
            if pid in children:
                _reap(pid)
                children.remove(pid)
            log.close()


def stop(signum, _frame):
    for pid in list(children):
        _reap(pid)
    sys.exit(128 + signum)


def identical(pairs: List[dict]) -> bool:
    return all(x["glibc"]["numbers"] == x["other"]["numbers"] for x in pairs)


def render(result: dict) -> str:
    """``malloc.txt`` from ``malloc.json``'s content."""
    lines = [result["header"], f"command: {result['command']}",
             f"fairseq-train, multi30k.sh's recipe (softmax, 3+3 layers 128/512, --max-tokens 4096, seed 1), "
             f"{result['updates']} updates; time per update: wpb/wps of fairseq's intervals after the first "
             f"{result['interval']} updates; each allocator side by side with glibc (its own pair's glibc in the "
             f"glibc columns), cores swapped each round; glibc-2: glibc against itself (noise floor)", "",
             f"{'allocator':<12} {'speed vs glibc':>15} {'rounds':>20} {'s/update':>9} {'glibc s/update':>15} "
             f"{'sys share':>10} {'glibc sys':>10} {'minor faults':>13} {'glibc faults':>13}"]
    for a, s in result["summary"].items():
        lines.append(f"{a:<12} {s['ratio_median']:>14.3f}x {' '.join(f'{x:.3f}' for x in s['ratios']):>20} "
                     f"{s['seconds_per_update']:>9.3f} {s['glibc_seconds_per_update']:>15.3f} {s['system_share']:>10.1%} "
                     f"{s['glibc_system_share']:>10.1%} {round(s['minor_faults']):>13,} {round(s['glibc_minor_faults']):>13,}")
    same = identical(result["pairs"])
    lines += ["", f"logged loss, nll_loss and gnorm at every logged update, each allocator against its pair's glibc: "
                  f"{'identical' if same else 'DIFFERENT'}"]
    return "\n".join(lines) + "\n"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().split("\n"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--data", help="binarised Multi30k (prepare_multi30k.py's bin folder)")
    p.add_argument("--allocators", default=",".join(KNOWN), help=f"against glibc, any of {', '.join(KNOWN)}")
    p.add_argument("--rounds", type=int, default=2, help="pairs per allocator (cores swapped each round)")
    p.add_argument("--updates", type=int, default=40)
    p.add_argument("--interval", type=int, default=10, help="fairseq's --log-interval")
    p.add_argument("--program", default=str(Path(sys.executable).parent / "fairseq-train"), help=argparse.SUPPRESS)
    p.add_argument("--output-dir", type=Path)
    p.add_argument("--render", type=Path, metavar="JSON", help="write malloc.txt beside a malloc.json again from it "
                   "(no measurement)")
    args = p.parse_args(argv)
    if args.render is not None:
        try:
            text = render(json.loads(args.render.read_text()))
            write_text(str(args.render.with_name("malloc.txt")), text)
        except (OSError, ValueError, KeyError, TypeError, WriteError) as err:
            sys.exit(f"{PROG}: error: --render {args.render}: {type(err).__name__}: {err}")
        print(text, end="")
        return
    names = [a for a in args.allocators.split(",") if a]
    problems = [] if names else ["--allocators: give at least one"]
    problems += [f"unknown allocator {a!r}" for a in names if a not in KNOWN]
    if args.data is None or args.output_dir is None:
        problems.append("--data and --output-dir are needed (or --render JSON)")
    paths = {}
    for a in names:
        if a in PRELOADS:
            paths[a] = find_library(PRELOADS[a])
            if paths[a] is None:
                problems.append(f"{a} not found ({' or '.join(PRELOADS[a])}; Debian: apt-get install {INSTALL[a]})")
    if args.data is not None and (not list(Path(args.data).glob("dict.*.txt"))
                                  or not list(Path(args.data).glob("train.*.bin"))):
        problems.append(f"--data {args.data}: not a binarised parallel corpus (e.g. prepare_multi30k.py's bin)")
    if args.rounds < 1 or args.updates < 2 * args.interval or args.interval < 1:
        problems.append("--rounds >= 1, --interval >= 1 and --updates >= 2 x --interval")
    if (os.cpu_count() or 1) < 2 or subprocess.run(["which", "taskset"], capture_output=True).returncode != 0:
        problems.append("needs 2 cores and taskset (util-linux)")
    if not os.access(args.program, os.X_OK):
        problems.append(f"{args.program}: not found (fairseq-train beside this python)")
    if problems:
        sys.exit(f"{PROG}: error: {'; '.join(problems)}")
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, stop)
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    load = os.getloadavg()[0]
    started, t0 = datetime.now(timezone.utc), time.time()
    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for a in names:
                cores = (0, 1) if r % 2 == 0 else (1, 0)
                try:
                    glibc, other = run_pair(("glibc", a), cores, args, paths, Path(tmp))
                except BenchError as err:
                    sys.exit(f"{PROG}: error: {err}")
                pair = {"round": r + 1, "allocator": a, "glibc": glibc, "other": other,
                        "ratio": glibc["seconds_per_update"] / other["seconds_per_update"]}
                if not identical([pair]):
                    sys.exit(f"{PROG}: error: {a} logged other numbers than glibc ({other['numbers'][:2]} vs "
                             f"{glibc['numbers'][:2]}): an allocator may not change them")
                pairs.append(pair)
                print(f"round {r + 1} {a}: {pair['ratio']:.3f}x glibc", flush=True)
    import torch

    summary = {}
    for a in names:
        mine = [x for x in pairs if x["allocator"] == a]

        def share(side):
            return median(x[side]["system_seconds"] / max(x[side]["system_seconds"] + x[side]["user_seconds"], 1e-9)
                          for x in mine)

        summary[a] = {"ratio_median": median(x["ratio"] for x in mine), "ratios": [round(x["ratio"], 3) for x in mine],
                      "seconds_per_update": median(x["other"]["seconds_per_update"] for x in mine),
                      "glibc_seconds_per_update": median(x["glibc"]["seconds_per_update"] for x in mine),
                      "system_share": share("other"), "glibc_system_share": share("glibc"),
                      "minor_faults": median(x["other"]["minor_faults"] for x in mine),
                      "glibc_minor_faults": median(x["glibc"]["minor_faults"] for x in mine)}
    wall = time.time() - t0
    head = (f"{started:%Y-%m-%dT%H:%M:%S%z}  {cpu_model()}, {os.cpu_count()} cores, load average {load:.2f} at the "
            f"start  1 torch thread a process  torch {torch.__version__}  glibc {platform.libc_ver()[1]}  "
            f"THP {thp.read_text().strip() if thp.is_file() else 'n/a'}  wall {wall:.0f} s")
    result = {"date": started.isoformat(), "wall_seconds": round(wall), "header": head, "load_average_at_start": load,
              "cpu": cpu_model(), "command": f"{PROG} {' '.join(sys.argv[1:] if argv is None else argv)}",
              "updates": args.updates, "interval": args.interval, "summary": summary, "pairs": pairs, "library": paths}
    text = render(result)
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        write_text(str(args.output_dir / "malloc.txt"), text)
        write_json(result, str(args.output_dir / "malloc.json"))
    except (WriteError, OSError) as err:
        sys.exit(f"{PROG}: error: {err}")
    print(text, end="")


if __name__ == "__main__":
    main()
