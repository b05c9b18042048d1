"""Benchmark `recipe.py prepare` on synthetic parallel corpora: peak RSS and lines/s of each step.

    python scripts/benchmark_prepare.py --pairs 500000 4000000 --out examples/reproduce/benchmark-prepare

For each size a synthetic corpus (Zipf-distributed made-up words, log-normal sentence lengths with the
mean and spread of WMT news, about 23 words / 140 characters a side) is written, then the real recipe
(``prepare --pair ro-en --corpus DIR``) runs on it.  The process tree (the recipe, spm_train,
fairseq-preprocess and their workers) is sampled every 0.2 s from /proc: the peak of its summed RSS per
step (shared pages of forked workers are counted in each, so this is an upper bound).  Step times come
from each step's ``step.json``.  Writes ``results.json`` and ``results.md`` (with the projection of each
pair's wall time on a 32-core machine) into ``--out``.  Not a test: it takes minutes to hours.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "examples" / "reproduce" / "recipe.py"
# training pairs of each recipe (WMT14 En-De 4.5M, En-Fr 40.8M, WMT18 En-Fi 3.3M, Zh-En 25M (news commentary,
# UN, CWMT), WMT16 Ro-En 0.6M; Europarl v7 De-En 1.9M): the published sizes of the training sets
PAIR_SIZES = {"en-de": 4.5e6, "en-fr": 40.8e6, "en-fi": 3.3e6, "zh-en": 25e6, "ro-en": 0.61e6, "europarl-de-en": 1.92e6}
SPM_SAMPLE = 10_000_000  # sentences SentencePiece trains on at most (recipe.py, input_sentence_size)


def synthetic(out: Path, n: int, seed: int = 1) -> None:
    """``train/valid/test.{ro,en}``: n training pairs, 3,000 validation and test pairs."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzäöüşţ"))
    vocab = {}
    for lang in ("ro", "en"):
        lengths = rng.integers(2, 11, 50_000)
        vocab[lang] = np.array(["".join(rng.choice(letters, k)) for k in lengths], dtype=object)
    for split, size in (("train", n), ("valid", 3000), ("test", 3000)):
        files = {lang: open(out / f"{split}.{lang}", "w", encoding="utf-8") for lang in ("ro", "en")}
        done = 0
        while done < size:
            block = min(100_000, size - done)
            words = np.clip(rng.lognormal(3.0, 0.55, block), 1, 150).astype(int)  # mean ~23 words
            for lang, f in files.items():
                ratio = rng.normal(1.0, 0.1, block).clip(0.5, 1.5)
                ids = (rng.zipf(1.3, int((words * 1.6).sum())) - 1) % len(vocab[lang])
                pos = 0
                rows = []
                for k in (words * ratio).astype(int).clip(1):
                    rows.append(" ".join(vocab[lang][ids[pos:pos + k]]) + ".")
                    pos += k
                f.write("\n".join(rows) + "\n")
            done += block
        for f in files.values():
            f.close()


def tree_rss(root: int) -> int:
    """Summed RSS (bytes) of ``root`` and every descendant."""
    children, rss = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/statm") as f:
                rss[int(d)] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def run_prepare(corpus_dir: Path, work: Path, workers: int, vocab: int, spm_sentences: int) -> dict:
    cmd = [sys.executable, str(RECIPE), "prepare", "--pair", "ro-en", "--work", str(work), "--corpus",
           str(corpus_dir), "--vocab-size", str(vocab), "--workers", str(workers), "--spm-sentences", str(spm_sentences)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = {"step": "start", "peak": {}}

    def sample():
        while proc.poll() is None:
            step = state["step"]
            state["peak"][step] = max(state["peak"].get(step, 0), tree_rss(proc.pid))
            time.sleep(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    log = []
    for line in proc.stdout:
        log.append(line)
        if line.rstrip().endswith(": making"):
            print(f"  {state['step']} done, peak tree RSS {state['peak'].get(state['step'], 0) / 2**20:.0f} MiB; "
                  f"{line.strip()} ({time.ctime()})", flush=True)
            state["step"] = Path(line.split(": ")[1]).name
    proc.wait()
    thread.join()
    if proc.returncode != 0:
        sys.exit(f"benchmark_prepare.py: error: recipe.py prepare failed ({proc.returncode}):\n{''.join(log[-20:])}")
    pdir = work / "ro-en"
    marks = {s: json.loads((pdir / s / "step.json").read_text()) for s in ("data", "spm", "bin")}
    counts = marks["data"]["report"]
    lines = 2 * (counts["train_read"] + counts["valid"] + counts["test"])
    out = {}
    for step in ("data", "spm", "bin"):
        secs = marks[step]["seconds"]
        out[step] = {"seconds": secs, "peak_rss_mib": round(state["peak"].get(step, 0) / 2**20),
                     "lines_per_s": round(lines / secs) if secs else None}
    spm = marks["spm"]["report"]
    out["spm"].update(train_seconds=spm["train_seconds"], encode_seconds=spm["encode_seconds"],
                      encode_lines_per_s=round(lines / spm["encode_seconds"]) if spm["encode_seconds"] else None,
                      train_sentences=min(2 * counts["train"], spm_sentences))
    out["lines"] = lines
    return out


def projection(results: dict, workers: int, cores: int = 32) -> dict:
    """Hours per pair on ``cores`` cores from the largest run: the data step is one process (no speed-up),
    SentencePiece encoding and fairseq-preprocess scale with the cores, spm_train scales with the sample
    (at most SPM_SAMPLE sentences) and runs its own 16 threads (no speed-up assumed)."""
    big = results[max(results, key=int)]
    lines = big["lines"]
    data_rate = lines / big["data"]["seconds"]
    enc_rate = big["spm"]["encode_lines_per_s"] / workers
    bin_rate = lines / big["bin"]["seconds"] / workers
    train_per_sentence = big["spm"]["train_seconds"] / big["spm"]["train_sentences"]
    out = {}
    for name, n in PAIR_SIZES.items():
        lines_n = 2 * n
        secs = (lines_n / data_rate + min(lines_n, SPM_SAMPLE) * train_per_sentence
                + lines_n / (enc_rate * cores) + lines_n / (bin_rate * cores))
        out[name] = round(secs / 3600, 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=int, nargs="+", default=[500_000, 4_000_000])
    p.add_argument("--work", default="/tmp/benchmark-prepare", help="scratch folder (corpora, work)")
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--spm-sentences", type=int, default=1_000_000,
                   help="recipe.py --spm-sentences: the same bounded sample for every size (1,000,000)")
    p.add_argument("--out", default=str(REPO / "examples" / "reproduce" / "benchmark-prepare"))
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text())["runs"] if path.exists() else {}
    for n in args.pairs:
        scratch = Path(args.work) / str(n)
        subprocess.run(["rm", "-rf", str(scratch)], check=True)
        start = time.time()
        synthetic(scratch / "corpus", n)
        print(f"{n} pairs written in {time.time() - start:.0f} s", flush=True)
        results[str(n)] = run_prepare(scratch / "corpus", scratch / "work", args.workers, args.vocab_size,
                                      args.spm_sentences)
        print(json.dumps(results[str(n)]), flush=True)
        subprocess.run(["rm", "-rf", str(scratch)], check=True)
    machine = (f"{platform.node()}: {os.cpu_count()} cores, {args.workers} workers, SentencePiece sample "
               f"{args.spm_sentences:,} sentences; shared with other jobs (lines/s: lower bounds)")
    record = {"machine": machine, "workers": args.workers, "runs": results,
              "projected_hours_32_cores": projection(results, args.workers)}
    path.write_text(json.dumps(record, indent=1) + "\n")
    rows = ["| pairs | step | seconds | peak RSS (MiB) | lines/s |", "|---|---|---|---|---|"]
    for n, r in sorted(results.items(), key=lambda kv: int(kv[0])):
        for step in ("data", "spm", "bin"):
            rows.append(f"| {int(n):,} | {step} | {r[step]['seconds']} | {r[step]['peak_rss_mib']} | "
                        f"{r[step]['lines_per_s']:,} |")
        rows.append(f"| {int(n):,} | spm: train / encode | {r['spm']['train_seconds']} / {r['spm']['encode_seconds']} "
                    f"| | encode {r['spm']['encode_lines_per_s']:,} |")
    proj = ["| pair | projected hours (32 cores) |", "|---|---|"]
    proj += [f"| {k} | {v} |" for k, v in record["projected_hours_32_cores"].items()]
    (out / "results.md").write_text(f"# prepare benchmark\n\n{machine}\n\n" + "\n".join(rows) + "\n\n"
                                    + "\n".join(proj) + "\n")
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
