"""Reproduce the ReLA paper's BLEU tables and Kobayashi et al.'s alignment table: one driver, one table of pairs.

    python examples/reproduce/recipe.py prepare  --pair ro-en --work work/ [--corpus DIR] [--workers N]
    python examples/reproduce/recipe.py train    --pair ro-en --work work/ --variant all --procs 4
    python examples/reproduce/recipe.py evaluate --pair ro-en --work work/ --variant all   # + summary
    python examples/reproduce/recipe.py summarize --work work/

Pairs and settings: ``pairs.py``.  Everything after ``--`` goes to fairseq-train (train) or
fairseq-generate (evaluate) unchanged, after the recipe's own options (so it overrides them).
prepare streams (fairseq_rela/corpus.py): no step holds a corpus in memory; encoding and binarising use
``--workers`` cores.  Every step can be rerun: finished work is skipped, interrupted work is redone (``Step``), other
options than a finished folder was made with are refused unless ``--force``.  SIGINT/SIGTERM stop
the running console script's whole process group; the recipe then exits with 128 + the signal.
See README.md in this folder.
"""
import argparse
import itertools
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pairs import EUROPARL_URL, PAIRS, VARIANTS, Pair  # noqa: E402

try:  # the copy the console scripts beside this python import (checked in main)
    import fairseq_rela
    from fairseq_rela import corpus
    from fairseq_rela.cli.files import write_json, write_text
except ImportError:
    fairseq_rela = None

PROG = "recipe.py"
BIN = Path(sys.executable).parent
MARKER = "step.json"  # written last inside a finished step's folder
GRACE_S = 30  # after a signal, how long a child may take to exit before its process group is killed


class RecipeError(Exception):
    """Bad input or state: one line, non-zero exit."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: the children are stopped, the recipe exits with 128 + the signal."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


# ---------------------------------------------------------------- text
def read_lines(path: Path) -> List[str]:
    """A small file's lines (split on \\n only): generate output, test references."""
    return list(corpus.lines(path))


def write_lines(path: Path, lines: List[str]) -> None:
    write_text(str(path), "".join(line + "\n" for line in lines))


def find(directory: Path, name: str) -> Path:
    """``directory/name`` or ``directory/name.gz``; both present is an error (which one is meant?)."""
    found = [cand for cand in (directory / name, directory / f"{name}.gz") if cand.is_file()]
    if len(found) == 2:
        raise RecipeError(f"{directory} holds both {name} and {name}.gz: remove (or rename) the one not to use")
    if not found:
        raise RecipeError(f"{directory / name}: no such corpus file (nor .gz)")
    return found[0]


def input_fingerprints(paths) -> Dict[str, dict]:
    """What the data step read, by resolved path: size and modification time of every file (a folder: of
    every file under it), so that an edited, replaced or touched input redoes the step."""
    out = {}
    for path in paths:
        path = Path(path).resolve()
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            st = f.stat()
            out[str(f)] = {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    return out


def changed_inputs(old: dict, new: dict) -> List[str]:
    """The files whose fingerprints differ between two :func:`input_fingerprints` (added, removed, edited)."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


# ---------------------------------------------------------------- sources
def sacrebleu_echo(test_set: str, pair: Pair, dest: Path) -> Tuple[Path, Path]:
    """``sacrebleu -t SET -l SRC-TGT --echo src`` (and ``ref``) into ``dest.src`` and ``dest.ref``.  Where
    sacrebleu's cache lacks the set and its server cannot be reached, one line at once (never a hang)."""
    import sacrebleu.dataset
    from sacrebleu.utils import SACREBLEU_DIR

    langpair = f"{pair.src}-{pair.tgt}"
    ds = sacrebleu.dataset.DATASETS[test_set]
    # sacrebleu's cache layout: SACREBLEU_DIR/SET/SET_.LANGPAIR.FIELD (every field present: no download)
    name = test_set.replace("/", "_")
    cached = all(os.path.exists(os.path.join(SACREBLEU_DIR, test_set, f"{name}.{langpair}.{f.replace(':', '-')}"))
                 for f in ds.fieldnames(langpair))
    why = None if cached else corpus.reachable(ds.data[0])
    if why:
        raise RecipeError(f"sacrebleu -t {test_set}: not in sacrebleu's cache ({SACREBLEU_DIR}) and {why}: "
                          "no internet? pass --corpus DIR")
    out = []
    for side in ("src", "ref"):
        path = Path(f"{dest}.{side}")
        with open(path, "w") as stdout:
            proc = run_child([str(BIN / "sacrebleu"), "-t", test_set, "-l", langpair, "--echo", side],
                             stdout=stdout, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise RecipeError(f"sacrebleu -t {test_set} --echo {side} failed (no internet? pass --corpus DIR): "
                              f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}")
        out.append(path)
    return out[0], out[1]


def download_europarl(args, work: Path) -> Tuple[Path, Path]:
    """Europarl v7 De-En from ``--europarl-url``: the archive in ``work/download`` (a broken download
    resumes), its two text files extracted (and the archive verified) in the step ``work/raw``."""
    url = args.europarl_url
    tgz = work / "download" / Path(url.split("?")[0]).name
    names = ("europarl-v7.de-en.de", "europarl-v7.de-en.en")
    step = Step(work / "raw", {"archive": tgz.name})
    if step.marker() is None:
        if not tgz.exists():
            why = corpus.reachable(url)
            if why:
                raise RecipeError(f"{url}: {why}: no internet? pass --corpus DIR (europarl-v7.de-en.de/.en)")
            corpus.download(url, tgz, log=lambda m: print(f"{PROG}: {m}", flush=True))
        step.run(lambda tmp: {"files": [p.name for p in corpus.extract(tgz, tmp, names)]}, {}, force=True)
    return step.dest / names[0], step.dest / names[1]


# ---------------------------------------------------------------- steps
@dataclass
class Step:
    """One output folder of the recipe, made whole or not at all.

    It is built in a hidden temporary folder beside it (cleared first) and renamed into place when whole,
    with ``step.json`` (options, inputs, report) written last inside it.  A finished step with the same
    options and inputs is skipped; other inputs (an earlier step was redone) redo it; other options are
    an error unless ``force``."""
    dest: Path
    options: dict

    @property
    def tmp(self) -> Path:
        return self.dest.parent / f".{self.dest.name}.partial"

    def marker(self) -> Optional[dict]:
        path = self.dest / MARKER
        return json.loads(path.read_text()) if path.is_file() else None

    def check(self, force: bool) -> None:
        """Refuse (one line) a finished folder made with other options, unless ``force``."""
        done = self.marker()
        if done is not None and done["options"] != self.options and not force:
            raise RecipeError(f"{self.dest} was made with other options ({differences(done['options'], self.options)})"
                              ": pass --force to redo it, or use another --work")

    def run(self, build: Callable[[Path], dict], inputs: dict, force: bool) -> dict:
        """The finished step's marker: ``build(tmp)`` (returning the report) unless done already."""
        self.check(force)
        done = self.marker()
        if done is not None and done["options"] == self.options and done["inputs"] == inputs:
            print(f"{PROG}: {self.dest}: done already", flush=True)
            return done
        old = self.dest.parent / f".{self.dest.name}.old"
        for leftover in (self.tmp, old):
            shutil.rmtree(leftover, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        print(f"{PROG}: {self.dest}: making", flush=True)
        start = time.time()
        try:
            report = build(self.tmp)
            record = {"options": self.options, "inputs": inputs, "report": report, "id": uuid.uuid4().hex,
                      "finished": time.ctime(), "seconds": round(time.time() - start, 1)}
            write_json(record, str(self.tmp / MARKER))
            if self.dest.exists():
                os.rename(self.dest, old)
            os.rename(self.tmp, self.dest)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
        return record


def differences(old: dict, new: dict) -> str:
    """``key old, now new`` for every option that differs (one level of nesting flattened)."""
    def flat(d):
        return {f"{k}.{k2}" if isinstance(v, dict) else k: v2 for k, v in d.items()
                for k2, v2 in (v.items() if isinstance(v, dict) else [(None, v)])}
    a, b = flat(old), flat(new)
    return "; ".join(f"{k} {a.get(k, '(unset)')}, now {b.get(k, '(unset)')}" for k in sorted(set(a) | set(b))
                     if a.get(k) != b.get(k))


def read_json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------- prepare
def prepare(args, pair: Pair) -> None:
    work = pair_dir(args)
    corpus_dir = Path(args.corpus).resolve() if args.corpus else None
    threads = corpus.workers(args.workers)
    gold = None
    if pair.paper == "kobayashi":
        rwth = Path(args.rwth) if args.rwth else None
        if rwth is None:
            raise RecipeError("--rwth DIR (or RWTH_GOLD_DIR) is needed: the RWTH gold set (test.de, test.en, "
                              "alignment.talp)")
        gold = {f: find(rwth, f) for f in ("test.de", "test.en", "alignment.talp")}
        files = ((find(corpus_dir, "europarl-v7.de-en.de"), find(corpus_dir, "europarl-v7.de-en.en")) if corpus_dir
                 else None)
    else:
        files = ({s: (find(corpus_dir, f"{s}.{pair.src}"), find(corpus_dir, f"{s}.{pair.tgt}"))
                  for s in ("train", "valid", "test")} if corpus_dir else None)
    try:  # the SentencePiece trainer is needed at the end: check now
        import sentencepiece  # noqa: F401
        if pair.paper == "kobayashi":
            import sacremoses  # noqa: F401
    except ImportError as err:
        raise RecipeError(f"{err.name} is not installed (bash scripts/install.sh installs it)")
    options = {"data": {"pair": pair.name, "corpus": str(corpus_dir) if corpus_dir else "download",
                        "max_train_pairs": args.max_train_pairs},
               "spm": {"vocab_size": pair.vocab_size if args.vocab_size is None else args.vocab_size,
                       "sentences": args.spm_sentences}}
    if pair.paper == "kobayashi":
        options["data"].update(rwth=str(Path(args.rwth).resolve()), valid_lines=args.valid_lines)
    elif corpus_dir is None and args.hf_dataset:
        options["data"]["hf_dataset"] = args.hf_dataset
    # what the data step reads, fingerprinted: an edited corpus (or gold, or local hub folder) redoes it
    read = [p for split in (files.values() if isinstance(files, dict) else [files or ()]) for p in split]
    read += list(gold.values()) if gold else []
    if corpus_dir is None and args.hf_dataset and Path(args.hf_dataset).is_dir():
        read.append(Path(args.hf_dataset))
    data_inputs = {"files": input_fingerprints(read)} if read else {}
    steps = [Step(work / name, options.get(name, {})) for name in ("data", "spm", "bin")]
    prepared = read_json(work / "prepared.json")
    changed = prepared is not None and prepared.get("options") != options
    if changed:  # every refusal before any work
        made = ("by an older recipe.py (no options recorded)" if "options" not in prepared
                else f"with other options ({differences(prepared['options'], options)})")
        if not args.force:
            raise RecipeError(f"{work} was prepared {made}: pass --force to redo what changed, or use another --work")
        trained = sorted(p.name for p in work.glob("ckpt-*") if p.is_dir())
        if trained:
            raise RecipeError(f"--force: {work} holds models trained on the old data ({', '.join(trained)}): "
                              "move them away first, or use another --work")
    for step in steps:
        step.check(args.force)
    done = steps[0].marker()
    if done is not None and done["options"] == options["data"] and done["inputs"] != data_inputs:
        if "files" in done["inputs"] and data_inputs:
            edited = changed_inputs(done["inputs"]["files"], data_inputs["files"])
            what = f"{edited[0]}{f' (and {len(edited) - 1} more)' if len(edited) > 1 else ''} changed since " \
                   f"{steps[0].dest} was made"
        else:
            what = f"{steps[0].dest} was made by an older recipe.py (its inputs not recorded)"
        trained = sorted(p.name for p in work.glob("ckpt-*") if p.is_dir())
        if trained:
            raise RecipeError(f"{what}, and {work} holds models trained on the old data ({', '.join(trained)}): "
                              "move them away first (or restore the input), or use another --work")
        print(f"{PROG}: note: {what}: preparing again", file=sys.stderr, flush=True)
        changed = prepared is not None
    work.mkdir(parents=True, exist_ok=True)
    if changed and (work / "prepared.json").exists():
        (work / "prepared.json").unlink()  # only a whole new preparation writes it again
    data = steps[0].run(lambda tmp: write_splits(args, pair, work, files, gold, tmp, threads), data_inputs,
                        args.force)
    counts = {s: data["report"][s] for s in ("train", "valid", "test")}
    spm = steps[1].run(lambda tmp: spm_encode(pair, work / "data", tmp, counts, options["spm"], threads),
                       {"data": data["id"]}, args.force)
    steps[2].run(lambda tmp: binarise(pair, work, tmp, counts, threads), {"spm": spm["id"]}, args.force)
    report = data["report"]
    record = {"pair": pair.name, "options": options, "pairs": report}
    if record != prepared:  # written last: a folder without it is not a finished one
        write_json(record, str(work / "prepared.json"))
    print(f"{PROG}: {pair.name} prepared in {work}: " + ", ".join(f"{k} {v}" for k, v in report.items()))


def write_splits(args, pair: Pair, work: Path, files, gold, dest: Path, threads: int) -> dict:
    """The cleaned train/valid/test text in ``dest``, written as a stream; the report (read, dropped, lines
    per split)."""
    if pair.paper == "kobayashi":
        return kobayashi_splits(pair, files or download_europarl(args, work), gold, dest, args, threads)
    if files is None:  # the internet path: Hugging Face for training, sacrebleu for the evaluation sets
        train = corpus.hf_pairs(args.hf_dataset or pair.hf_train[0], pair.hf_train[1], "train", pair.src, pair.tgt)
        files = {split: sacrebleu_echo(test_set, pair, dest / f".{split}")
                 for split, test_set in (("valid", pair.valid_set), ("test", pair.test_set))}
    else:
        train = corpus.parallel(*files["train"])
    report = {}
    counts: Dict[str, int] = {}
    keep = lambda s, t: corpus.keep_training_pair(s, t, max_ratio=pair.max_char_ratio)  # noqa: E731
    kept = corpus.filtered(((corpus.clean(s), corpus.clean(t)) for s, t in train), keep, counts)
    out = lambda split: (dest / f"{split}.{pair.src}", dest / f"{split}.{pair.tgt}")  # noqa: E731
    report["train"] = corpus.write_pairs(itertools.islice(kept, args.max_train_pairs), *out("train"))
    if report["train"] == 0:  # SentencePiece would fail on it after the data step looked finished
        ratio = f", or a length ratio over {pair.max_char_ratio}" if pair.max_char_ratio else ""
        raise RecipeError(f"no training pair left: {counts['read']} read, {counts['dropped']} dropped (an empty "
                          f"side or a side over 1500 characters{ratio})")
    # valid and test keep every pair (never filtered; line breaks inside a line become spaces)
    for split in ("valid", "test"):
        rows = ((corpus.clean(s), corpus.clean(t)) for s, t in corpus.parallel(*files[split]))
        report[split] = corpus.write_pairs(rows, *out(split))
        if report[split] == 0:
            raise RecipeError(f"the {split} set is empty ({', '.join(str(f) for f in files[split])})")
    for leftover in dest.glob(".*"):
        leftover.unlink()
    return {"train_read": counts["read"], "train_dropped": counts["dropped"], **report}


def moses_lower(rows: List[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """Moses-tokenised (no escaping), lowercased De-En pairs (one chunk, in a worker process)."""
    tok = moses_lower.tokenizers = getattr(moses_lower, "tokenizers", None) or _moses()
    return [tuple(tok[lang].tokenize(text, escape=False, return_str=True).lower() for lang, text in zip(("de", "en"), r))
            for r in rows]


def _moses():
    from sacremoses import MosesTokenizer

    return {lang: MosesTokenizer(lang=lang) for lang in ("de", "en")}


def kobayashi_splits(pair: Pair, files: Tuple[Path, Path], gold: Dict[str, Path], dest: Path, args, threads: int):
    gold_de, gold_en = read_lines(gold["test.de"]), read_lines(gold["test.en"])
    keys = {corpus.gold_key(s) for s in gold_de + gold_en}
    counts: Dict[str, int] = {}

    def keep(d, e):
        return bool(d and e) and corpus.gold_key(d) not in keys and corpus.gold_key(e) not in keys

    kept = corpus.filtered(((corpus.clean(d), corpus.clean(e)) for d, e in corpus.parallel(*files)), keep, counts)
    tokenised = corpus.ordered_map(moses_lower, corpus.chunks(kept, 2000), threads)
    n_valid, valid = args.valid_lines, []
    n_train = corpus.write_pairs(corpus.hold_back(itertools.chain.from_iterable(tokenised), n_valid, valid),
                                 dest / "train.de", dest / "train.en")
    if len(valid) < n_valid or n_train == 0:
        raise RecipeError(f"only {n_train + len(valid)} usable pairs: not more than --valid-lines {n_valid}")
    corpus.write_pairs(valid, dest / "valid.de", dest / "valid.en")
    # the gold set is Moses-tokenised already: lowercased only
    n_test = corpus.write_pairs(((corpus.clean(d).lower(), corpus.clean(e).lower()) for d, e in zip(gold_de, gold_en)),
                                dest / "test.de", dest / "test.en")
    return {"europarl_read": counts["read"], "removed_empty_or_rwth": counts["dropped"], "train": n_train,
            "valid": n_valid, "test": n_test}


# SentencePiece training runs in a child process, so that a signal stops it at once
SPM_TRAIN = "import json, sys, sentencepiece as spm; spm.SentencePieceTrainer.train(**json.loads(sys.argv[1]))"


def spm_encode(pair: Pair, data: Path, dest: Path, counts: Dict[str, int], spm_options: dict, threads: int) -> dict:
    """SentencePiece model(s) trained on ``data``'s training text, and every split encoded, in ``dest``."""
    import sentencepiece as spm

    models, train_s = {}, 0.0
    vocab_size = spm_options["vocab_size"]
    groups = [(pair.src, pair.tgt)] if pair.joint_vocab else [(pair.src,), (pair.tgt,)]
    for langs in groups:
        prefix = dest / ("spm" if pair.joint_vocab else f"spm.{langs[0]}")
        options = dict(
            input=[str(data / f"train.{lang}") for lang in langs], model_prefix=str(prefix), vocab_size=vocab_size,
            character_coverage=0.9995 if "zh" in langs else 1.0, model_type="unigram", input_sentence_size=spm_options["sentences"],
            shuffle_input_sentence=True, bos_id=-1, eos_id=-1, unk_id=0, pad_id=-1, minloglevel=2,
            hard_vocab_limit=False)
        start = time.time()
        call([sys.executable, "-c", SPM_TRAIN, json.dumps(options)], Path(f"{prefix}.log"), name="spm_train")
        train_s += time.time() - start
        for lang in langs:
            models[lang] = spm.SentencePieceProcessor(model_file=str(prefix) + ".model")
    start = time.time()
    for split in counts:  # in chunks, on every core (--workers)
        for lang in (pair.src, pair.tgt):
            corpus.encode_file(models[lang], data / f"{split}.{lang}", dest / f"{split}.spm.{lang}", threads)
    sizes = {lang: models[lang].get_piece_size() for lang in (pair.src, pair.tgt)}  # SentencePiece may make fewer
    return {"vocab_size": sizes[pair.src] if pair.joint_vocab else sizes, "vocab_size_asked": vocab_size,
            "workers": threads, "train_seconds": round(train_s, 1),
            "encode_seconds": round(time.time() - start, 1)}


def binarise(pair: Pair, work: Path, dest: Path, counts: Dict[str, int], threads: int) -> dict:
    """``fairseq-preprocess`` of ``work/spm`` into ``dest``, checked to hold every line."""
    encoded = work / "spm"
    cmd = [str(BIN / "fairseq-preprocess"), "--source-lang", pair.src, "--target-lang", pair.tgt,
           "--trainpref", str(encoded / "train.spm"), "--validpref", str(encoded / "valid.spm"),
           "--testpref", str(encoded / "test.spm"), "--destdir", str(dest), "--workers", str(threads)]
    cmd += ["--joined-dictionary"] if pair.joint_vocab else []
    call(cmd, work / "preprocess.log")
    from fairseq.data import indexed_dataset

    for split, n_rows in counts.items():  # never lose a pair: the binarised sets hold every line
        for lang in (pair.src, pair.tgt):
            n = len(indexed_dataset.make_dataset(str(dest / f"{split}.{pair.src}-{pair.tgt}.{lang}"), impl="mmap"))
            if n != n_rows:
                raise RecipeError(f"{dest}: {split}.{lang} holds {n} sentences, expected {n_rows}")
    return dict(counts)


# ---------------------------------------------------------------- train
def update_freq(pair: Pair, max_tokens: int, world: int) -> int:
    per_step = max_tokens * world
    if pair.tokens_per_update % per_step:
        ok = [g for g in range(1, 65) if pair.tokens_per_update % (max_tokens * g) == 0]
        raise RecipeError(f"{world} processes x --max-tokens {max_tokens} does not divide {pair.name}'s "
                          f"{pair.tokens_per_update} tokens per update (process counts that do: "
                          f"{', '.join(map(str, ok))}; or change --max-tokens)")
    return pair.tokens_per_update // per_step


def run_name(variant: str, seed: int) -> str:
    return f"{variant}-seed{seed}"


def train_command(args, pair: Pair, variant: str, seed: int) -> List[str]:
    work = pair_dir(args)
    world = args.procs * args.nodes
    max_tokens = pair.max_tokens if args.max_tokens is None else args.max_tokens
    launch = [str(BIN / "fairseq-rela-launch"), "--nproc-per-node", str(args.procs), "--nnodes", str(args.nodes),
              "--node-rank", str(args.node_rank)]
    if args.master_addr:
        launch += ["--master-addr", args.master_addr, "--master-port", str(args.master_port)]
    device = ["--cpu"] if args.cpu else ["--fp16"]
    return [*launch, *(["--cpu"] if args.cpu else []), "--",
            str(work / "bin"), "--user-dir", user_dir(), "--source-lang", pair.src, "--target-lang", pair.tgt,
            *pair.train_args, *VARIANTS[variant], *device, "--max-tokens", str(max_tokens),
            "--update-freq", str(update_freq(pair, max_tokens, world)), "--seed", str(seed),
            "--save-dir", str(work / f"ckpt-{run_name(variant, seed)}"), "--log-format", "simple",
            "--log-interval", "100", "--data-buffer-size", "0", *args.extra]  # see README, "fairseq traps"


def hardware(args) -> str:
    if not args.cpu:
        try:
            import torch

            if torch.cuda.is_available():
                return f"{args.nodes * args.procs} x {torch.cuda.get_device_name(0)}"
        except ImportError:
            pass
    return f"{args.nodes * args.procs} CPU process(es) on {platform.node()} ({os.cpu_count()} cores)"


def train(args, pair: Pair) -> None:
    work = pair_dir(args)
    if not args.dry_run and not (work / "prepared.json").exists():
        raise RecipeError(f"{work}: not prepared (run `{PROG} prepare --pair {pair.name} --work {args.work}` first)")
    runs = [(v, s) for v in variants(args, pair) for s in seeds(args, pair)]
    cmds = [(v, s, train_command(args, pair, v, s)) for v, s in runs]  # every check before the first run
    if not args.dry_run:
        for variant, seed, cmd in cmds:
            name = run_name(variant, seed)
            done = runs_of(work, name)
            if done and done[-1]["command"] != shlex.join(cmd) and not args.force:
                raise RecipeError(f"{work / f'ckpt-{name}'} was trained with another command (runs-{name}.json: "
                                  f"{command_differences(shlex.split(done[-1]['command']), cmd)}): pass --force to go "
                                  "on training it with this one, or leave it out (--variant, --seeds)")
    note = interval_note(pair, cmds[0][2])
    for variant, seed, cmd in cmds:
        name = run_name(variant, seed)
        done = [] if args.dry_run else runs_of(work, name)
        if done and done[-1].get("status", "complete") == "complete" and done[-1]["command"] == shlex.join(cmd):
            print(f"{PROG}: {pair.name} {name}: trained already (runs-{name}.json)", flush=True)
            continue
        if note:
            print(f"{PROG}: note: {note}", file=sys.stderr, flush=True)
            note = None
        print(f"{PROG}: training {pair.name} {name}: {shlex.join(cmd)}", flush=True)
        if args.dry_run:
            continue
        start, status = time.time(), "failed"
        try:  # fairseq-train resumes from checkpoint_last.pt by itself
            call(cmd, work / f"train-{name}.log", append=True)
            status = "complete"
        except Interrupted as sig:
            status = f"interrupted ({signal.Signals(sig.signum).name})"
            raise
        finally:
            log_run(work, name, {"command": shlex.join(cmd), "hardware": hardware(args), "status": status,
                                 "seconds": round(time.time() - start, 1), "finished": time.ctime()})


def option_value(cmd: List[str], name: str) -> Optional[str]:
    """The value fairseq sees for ``name`` in ``cmd`` (the last one given wins)."""
    value = None
    for i, arg in enumerate(cmd):
        if arg == name and i + 1 < len(cmd):
            value = cmd[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def command_differences(old: List[str], new: List[str]) -> str:
    """``--option old, now new`` for the options whose value differs between two commands."""
    def shown(cmd, name):
        if not any(a == name or a.startswith(name + "=") for a in cmd):
            return "(not given)"
        value = option_value(cmd, name)
        return "(given)" if value is None or value.startswith("--") else value

    names = sorted({a.split("=")[0] for a in old + new if a.startswith("--")})
    diff = [f"{n} {shown(old, n)}, now {shown(new, n)}" for n in names if shown(old, n) != shown(new, n)]
    return "; ".join(diff) or "the same options in another order"


def interval_note(pair: Pair, cmd: List[str]) -> Optional[str]:
    """A line when the run will leave fewer interval checkpoints than evaluate averages (a short run)."""
    if pair.average_last is None:
        return None
    try:
        max_update, interval = int(option_value(cmd, "--max-update") or 0), int(option_value(cmd, "--save-interval-updates") or 0)
    except ValueError:
        return None
    if max_update <= 0 or interval <= 0 or max_update // interval >= pair.average_last:
        return None
    n = max_update // interval
    uses = f"the average of those {n}" if n else "checkpoint_last.pt"
    return (f"--max-update {max_update} with --save-interval-updates {interval} leaves {n} interval checkpoint(s), "
            f"not {pair.average_last}: evaluate will use {uses} (and record it)")


def log_run(work: Path, name: str, record: dict) -> None:
    write_json(runs_of(work, name) + [record], str(work / f"runs-{name}.json"))


# ---------------------------------------------------------------- evaluate
def evaluate(args, pair: Pair) -> None:
    work = pair_dir(args)
    todo = [(v, s) for v in variants(args, pair) for s in seeds(args, pair)
            if (work / f"ckpt-{run_name(v, s)}").is_dir()]
    if not todo:
        raise RecipeError(f"{work}: no trained model for {args.variant} (run `{PROG} train` first)")
    if pair.paper == "kobayashi" and not args.rwth:
        raise RecipeError("--rwth DIR (or RWTH_GOLD_DIR) is needed for the alignment sweep")
    options = {"cpu": args.cpu, "extra": args.extra}
    if pair.paper == "kobayashi":
        options["rwth"] = str(Path(args.rwth).resolve())
    plans = []
    for variant, seed in todo:  # every refusal before the first evaluation
        name = run_name(variant, seed)
        step = Step(work / f"eval-{name}", options)
        step.check(args.force)
        plans.append((variant, seed, name, step, *checkpoints_to_evaluate(pair, work / f"ckpt-{name}")))
    for variant, seed, name, step, ckpts, note in plans:
        inputs = {"checkpoints": [fingerprint(p) for p in ckpts]}
        result = step.run(lambda tmp: evaluate_run(args, pair, variant, seed, ckpts, note, tmp, step.dest),
                          inputs, args.force)["report"]
        print(f"{PROG}: {pair.name} {name}: BLEU {result['bleu']:.1f} ({result['signature']}; "
              f"{result['checkpoint_used']})", flush=True)
    summarize(args)


def checkpoints_to_evaluate(pair: Pair, ckpt_dir: Path) -> Tuple[List[Path], Optional[str]]:
    """The checkpoints to evaluate (their average for the ReLA pairs) and, if not the recipe's, a line why."""
    if pair.average_last is None:  # best by validation BLEU
        best = ckpt_dir / "checkpoint_best.pt"
        if not best.is_file():
            raise RecipeError(f"{best}: no such checkpoint")
        return [best], None
    interval = sorted((int(m.group(1)), p) for p in ckpt_dir.iterdir()
                      if (m := re.match(r"checkpoint_\d+_(\d+)\.pt$", p.name)))
    chosen = [p for _, p in interval[-pair.average_last:]]
    if len(chosen) == pair.average_last:
        return chosen, None
    if chosen:
        return chosen, (f"{ckpt_dir} holds {len(chosen)} interval checkpoint(s), the recipe averages the last "
                        f"{pair.average_last}: averaging those {len(chosen)}")
    last = ckpt_dir / "checkpoint_last.pt"
    if not last.is_file():
        raise RecipeError(f"{ckpt_dir}: no interval checkpoint and no checkpoint_last.pt (has training run?)")
    return [last], (f"{ckpt_dir} holds no interval checkpoint (a run shorter than --save-interval-updates), the "
                    f"recipe averages the last {pair.average_last}: evaluating checkpoint_last.pt")


def fingerprint(path: Path) -> dict:
    st = path.stat()
    return {"name": path.name, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def evaluate_run(args, pair: Pair, variant: str, seed: int, ckpts: List[Path], note: Optional[str], out: Path,
                 dest: Path) -> dict:
    """BLEU (and for Europarl the alignment sweep) of one run, written to ``out``; paths in the result name
    ``dest``, where ``out`` is moved when whole."""
    work = pair_dir(args)
    name = run_name(variant, seed)
    if note:
        print(f"{PROG}: note: {note}", file=sys.stderr, flush=True)
    result = {"pair": pair.name, "variant": variant, "seed": seed, "run": name}
    if pair.average_last is None:
        ckpt, used = ckpts[0], f"{ckpts[0].name} (best validation BLEU)"
    elif ckpts[0].name == "checkpoint_last.pt":
        ckpt, used = ckpts[0], f"checkpoint_last.pt (no interval checkpoint; recipe: average of last {pair.average_last})"
    else:
        ckpt = out / f"checkpoint.avg{len(ckpts)}.pt"
        call([str(BIN / "fairseq-rela-average"), "--inputs", *map(str, ckpts), "--output", str(ckpt)],
             out / "average.log")
        used = f"average of last {len(ckpts)}" + ("" if len(ckpts) == pair.average_last
                                                 else f" (recipe: {pair.average_last})")
        result["averaged"] = [p.name for p in ckpts]
    result.update(checkpoint=str(ckpt), checkpoint_used=used)
    result.update(bleu(args, pair, work, ckpt, out))
    if pair.paper == "kobayashi":
        result["alignment"] = alignment_sweep(args, pair, work, ckpt, out)
    # the paths (checkpoint, commands) as they will be once ``out`` is moved to ``dest``
    result = json.loads(json.dumps(result).replace(json.dumps(str(out))[1:-1], json.dumps(str(dest))[1:-1]))
    write_json(result, str(out / "result.json"))
    return result


def bleu(args, pair: Pair, work: Path, ckpt: Path, out: Path) -> dict:
    import sacrebleu

    cmd = [str(BIN / "fairseq-generate"), str(work / "bin"), "--user-dir", user_dir(), "--path", str(ckpt),
           "--source-lang", pair.src, "--target-lang", pair.tgt, "--gen-subset", "test", "--beam", "4",
           "--lenpen", "0.6", "--required-batch-size-multiple", "1", "--post-process", "sentencepiece",
           "--max-tokens", "8000", *(["--cpu"] if args.cpu else ["--fp16"]), *args.extra]
    call(cmd, out / "generate.log", stdout=out / "generate.txt")
    hyps = {}
    for line in read_lines(out / "generate.txt"):
        if line.startswith("D-"):
            idx, _, text = line[2:].split("\t", 2)
            hyps[int(idx)] = text
    refs = read_lines(work / "data" / f"test.{pair.tgt}")
    if sorted(hyps) != list(range(len(refs))):
        raise RecipeError(f"{out / 'generate.txt'}: {len(hyps)} translations for {len(refs)} test sentences")
    hyp = [hyps[i] for i in range(len(refs))]
    write_lines(out / "hyp.detok", hyp)
    # Kobayashi's text is tokenised and lowercased: score it as it is; the WMT recipes are detokenised
    metric = sacrebleu.BLEU(tokenize="none" if pair.paper == "kobayashi" else ("zh" if pair.tgt == "zh" else "13a"))
    score = metric.corpus_score(hyp, [refs])
    return {"bleu": round(score.score, 2), "signature": str(metric.get_signature()), "generate": shlex.join(cmd),
            "test_sentences": len(refs)}


def alignment_sweep(args, pair: Pair, work: Path, ckpt: Path, out: Path) -> dict:
    sweep = out / "alignment"
    cmd = [str(BIN / "fairseq-rela-analyze"), str(work / "bin"), "--user-dir", user_dir(), "--path", str(ckpt),
           "--gen-subset", "test", "--source-lang", pair.src, "--target-lang", pair.tgt, "--gold-alignment",
           str(find(Path(args.rwth), "alignment.talp")), "--output-dir", str(sweep), "--plot-sentences", "0",
           "--max-tokens", "8000", "--no-progress-bar", *(["--cpu"] if args.cpu else [])]
    call(cmd, out / "analyze.log")
    res = json.loads((sweep / "alignment.json").read_text())
    per = {}
    for setting, layers in res["per_layer"].items():
        best = min(layers, key=lambda l: layers[l])
        per[setting] = {"best_layer": int(best) + 1, "best": round(100 * layers[best], 1),
                        "layer2": round(100 * layers["1"], 1) if "1" in layers else None}
    return {"per_setting": per, "command": shlex.join(cmd)}


# ---------------------------------------------------------------- summarize
def summarize(args) -> None:
    work = Path(args.work)
    results = [json.loads(p.read_text()) for p in sorted(work.glob("*/eval-*/result.json"))]
    if not results:
        raise RecipeError(f"{work}: no evaluated runs (run `{PROG} evaluate` first)")
    lines = ["# Results", "", "## BLEU (SacreBLEU, detokenised; Europarl: tokenised lowercase RWTH text)", "",
             "| pair | variant | seeds | ours | paper | training wall time | hardware | checkpoint |",
             "|---|---|---|---|---|---|---|---|"]
    groups: Dict[Tuple[str, str], List[dict]] = {}
    for r in results:
        groups.setdefault((r["pair"], r["variant"]), []).append(r)
    for (name, variant), rs in groups.items():
        pair = PAIRS[name]
        ours = sum(r["bleu"] for r in rs) / len(rs)
        paper = pair.published.get(variant) if pair.paper == "rela" else None
        runs = [rec for r in rs for rec in runs_of(work / name, r["run"])]
        wall = sum(rec["seconds"] for rec in runs)
        hw = sorted({rec["hardware"] for rec in runs})
        used = sorted({r.get("checkpoint_used", Path(r["checkpoint"]).name) for r in rs})
        lines.append(f"| {name} | {variant} | {len(rs)} | {ours:.1f} | {'—' if paper is None else f'{paper:.1f}'} "
                     f"| {wall / 3600:.2f} h | {'; '.join(hw) or '?'} | {'; '.join(used)} |")
    align = [(k, rs) for k, rs in groups.items() if "alignment" in rs[0]]
    for (name, variant), rs in align:
        pair = PAIRS[name]
        lines += ["", f"## AER (%) on the RWTH gold set: {name} {variant}, mean of {len(rs)} seed(s)", "",
                  "| setting | ours, best layer (counted from 1, as the paper) | ours, layer 2 | paper (layer 2, 5-seed mean) |", "|---|---|---|---|"]
        for setting in ("weights-AWO", "weights-AWI", "norms-AWO", "norms-AWI"):
            per = [r["alignment"]["per_setting"][setting] for r in rs if setting in r["alignment"]["per_setting"]]
            if not per:
                continue
            best = sum(p["best"] for p in per) / len(per)
            layers = ",".join(str(p["best_layer"]) for p in per)
            l2 = [p["layer2"] for p in per if p["layer2"] is not None]
            l2s = f"{sum(l2) / len(l2):.1f}" if l2 else "—"
            lines.append(f"| {setting} | {best:.1f} (layer {layers}) | {l2s} | {pair.published[setting]:.1f} |")
    lines += ["", "## Commands", ""]
    for r in results:
        for rec in runs_of(work / r["pair"], r["run"]):
            status = rec.get("status", "complete")
            lines.append(f"- {r['pair']} {r['run']} train ({rec['seconds'] / 3600:.2f} h, {rec['hardware']}"
                         f"{'' if status == 'complete' else ', ' + status}): `{rec['command']}`")
        lines.append(f"- {r['pair']} {r['run']} decode: `{r['generate']}`; BLEU signature `{r['signature']}`")
    text = "\n".join(lines) + "\n"
    write_lines(work / "summary.md", text.rstrip("\n").split("\n"))
    print(text)


def runs_of(work: Path, name: str) -> List[dict]:
    path = work / f"runs-{name}.json"
    return json.loads(path.read_text()) if path.exists() else []


# ---------------------------------------------------------------- plumbing
class Signals:
    """SIGINT/SIGTERM: sent on to every running child's process group, then ``Interrupted`` in the recipe.

    A signal that arrives while a child is being started (``hold``) is raised once it is registered, so
    no child is ever started unseen."""

    def __init__(self):
        self.children: List[subprocess.Popen] = []
        self.signalled: set = set()
        self.signum: Optional[int] = None
        self.hold = False

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self.handle)

    def handle(self, signum, frame) -> None:
        first = self.signum is None
        self.signum = self.signum or signum
        for proc in self.children:
            self.forward(proc, signum)
        if first and not self.hold:
            raise Interrupted(signum)

    def forward(self, proc: subprocess.Popen, signum: int) -> None:
        self.signalled.add(proc.pid)
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    def start(self, cmd: List[str], **popen) -> subprocess.Popen:
        """``cmd`` in a process group of its own (its pid), registered; ``Interrupted`` if a signal came."""
        self.hold = True
        try:
            proc = subprocess.Popen(cmd, start_new_session=True, **popen)
            self.children.append(proc)
        finally:
            self.hold = False
        if self.signum is not None:
            if proc.pid not in self.signalled:
                self.forward(proc, self.signum)
            self.stop(proc)
            raise Interrupted(self.signum)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        """Wait (at most GRACE_S) for a signalled child to end, then kill what is left of its process group."""
        try:
            proc.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # grandchildren whose parent died (a launcher's ranks)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        self.children.remove(proc)


SIGNALS = Signals()


def run_child(cmd: List[str], **popen) -> subprocess.CompletedProcess:
    """``subprocess.run`` whose child a signal to the recipe stops (with its whole process group)."""
    proc = SIGNALS.start(cmd, **popen)
    try:
        out, err = proc.communicate()
    except Interrupted:
        SIGNALS.stop(proc)
        raise
    SIGNALS.children.remove(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def call(cmd: List[str], log: Path, append: bool = False, stdout: Optional[Path] = None,
         name: Optional[str] = None) -> None:
    """Run a console script, its output to ``log`` (stdout to ``stdout`` if given); one line if it fails."""
    with open(log, "a" if append else "w") as err:
        if stdout is not None:
            with open(stdout, "w") as out:
                proc = run_child(cmd, stdout=out, stderr=err)
        else:
            proc = run_child(cmd, stdout=err, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["?"]
        raise RecipeError(f"{name or Path(cmd[0]).name} failed (status {proc.returncode}, log {log}): {tail[0][:300]}")


def user_dir() -> str:
    """``--user-dir`` for the console scripts: the fairseq_rela they import (the one beside this python),
    whichever checkout the recipe runs from; fairseq refuses a second copy ("not globally unique")."""
    used = Path(fairseq_rela.__file__).resolve().parent
    here = Path(__file__).resolve().parents[2] / "fairseq_rela"
    if here.is_dir() and here != used and not getattr(user_dir, "noted", False):
        user_dir.noted = True
        print(f"{PROG}: note: the console scripts import {used}, not this checkout's {here}: using that one",
              file=sys.stderr, flush=True)
    return str(used)


def pair_dir(args) -> Path:
    return Path(args.work) / args.pair


def variants(args, pair: Pair) -> List[str]:
    return list(pair.variants) if args.variant == "all" else [args.variant]


def seeds(args, pair: Pair) -> List[int]:
    return list(pair.seeds) if args.seeds is None else args.seeds


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 1")
    return value


def port(text: str) -> int:
    """An argparse type: a TCP port, 1..65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: must be <= 65535")
    return value


def seed_list(text: str) -> List[int]:
    try:
        out = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a comma-separated list of integers")
    return out


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="step", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--work", default="work/reproduce", help="working folder (one subfolder per pair)")
    for step in ("prepare", "train", "evaluate"):
        s = sub.add_parser(step, parents=[common])
        s.add_argument("--force", action="store_true",
                       help="redo finished work made with other options (default: refuse; same options: skip)")
        s.add_argument("--pair", required=True, choices=sorted(PAIRS), help="language pair (pairs.py)")
        s.add_argument("--rwth", default=os.environ.get("RWTH_GOLD_DIR"),
                       help="RWTH gold folder: test.de, test.en, alignment.talp (europarl-de-en; env RWTH_GOLD_DIR)")
        if step == "prepare":
            s.add_argument("--corpus", default=os.environ.get("RECIPE_CORPUS"),
                           help="local raw text instead of downloading (env RECIPE_CORPUS); see README")
            s.add_argument("--vocab-size", type=positive_int, help="SentencePiece size (default: the paper's)")
            s.add_argument("--spm-sentences", type=positive_int, default=10_000_000,
                           help="SentencePiece trains on a random sample of at most N sentences (10,000,000; its "
                           "memory grows with N: see README)")
            s.add_argument("--valid-lines", type=positive_int, default=1000,
                           help="europarl: last N lines validate (1000)")
            s.add_argument("--max-train-pairs", type=positive_int, help="keep the first N training pairs (tests)")
            s.add_argument("--workers", type=positive_int, help="processes/threads for tokenising, SentencePiece "
                           "encoding and fairseq-preprocess (default: every core)")
            s.add_argument("--hf-dataset", help="Hugging Face dataset: hub name or a local folder in the hub's "
                           "layout (default: the pair's, pairs.py)")
            s.add_argument("--europarl-url", default=EUROPARL_URL, help=f"Europarl v7 De-En archive ({EUROPARL_URL})")
            continue
        s.add_argument("--variant", required=True, choices=[*VARIANTS, "all"], help="attention variant, or all")
        s.add_argument("--seeds", type=seed_list, help="comma-separated seeds (default: the paper's)")
        s.add_argument("--cpu", action="store_true", help="CPU processes (no --fp16)")
        s.add_argument("extra", nargs="*", help="after --: more fairseq options (override the recipe's)")
        if step == "train":
            s.add_argument("--procs", type=positive_int, default=1, help="GPUs (or CPU processes) per node")
            s.add_argument("--nodes", type=positive_int, default=1)
            s.add_argument("--node-rank", type=int, default=0)
            s.add_argument("--master-addr")
            s.add_argument("--master-port", type=port, default=29500)
            s.add_argument("--max-tokens", type=positive_int, help="per process and batch (default: the paper's)")
            s.add_argument("--dry-run", action="store_true", help="print the training commands only")
    sub.add_parser("summarize", parents=[common])
    return p


def main(argv=None) -> None:
    parser = get_parser()
    args = parser.parse_args(argv)
    if fairseq_rela is None:
        sys.exit(f"{PROG}: error: fairseq_rela is not importable by {sys.executable}: run the recipe with the python "
                 "of the environment it is installed in (bash scripts/install.sh)")
    SIGNALS.install()
    try:
        if args.step == "summarize":
            summarize(args)
            return
        pair = PAIRS[args.pair]
        if args.step != "prepare" and args.variant != "all" and args.variant not in pair.variants:
            parser.error(f"--variant {args.variant}: not a variant of {pair.name}")
        if args.step == "train" and (args.procs < 1 or args.nodes < 1):
            parser.error("--procs and --nodes must be >= 1")
        {"prepare": prepare, "train": train, "evaluate": evaluate}[args.step](args, pair)
    except (RecipeError, corpus.CorpusError, OSError) as err:
        sys.exit(f"{PROG}: error: {err}")
    except Interrupted as sig:
        print(f"{PROG}: interrupted by {signal.Signals(sig.signum).name}: children stopped, unfinished steps left "
              "unmarked (rerun to resume)", file=sys.stderr)
        sys.exit(128 + sig.signum)


if __name__ == "__main__":
    main()
