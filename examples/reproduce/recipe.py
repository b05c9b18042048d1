"""Reproduce the ReLA paper's BLEU tables and Kobayashi et al.'s alignment table: one driver, one table of pairs.

    python examples/reproduce/recipe.py prepare  --pair ro-en --work work/ [--corpus DIR]
    python examples/reproduce/recipe.py train    --pair ro-en --work work/ --variant all --procs 4
    python examples/reproduce/recipe.py evaluate --pair ro-en --work work/ --variant all   # + summary
    python examples/reproduce/recipe.py summarize --work work/

Pairs and settings: ``pairs.py``.  Everything after ``--`` goes to fairseq-train (train) or
fairseq-generate (evaluate) unchanged, after the recipe's own options (so it overrides them).
See README.md in this folder.
"""
import argparse
import gzip
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
import unicodedata
from pathlib import Path
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pairs import EUROPARL_URL, PAIRS, VARIANTS, Pair  # noqa: E402

PROG = "recipe.py"
BIN = Path(sys.executable).parent
USER_DIR = str(Path(__file__).resolve().parents[2] / "fairseq_rela")
# characters some readers take for line ends (str.splitlines, universal newlines): a space in our files
_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


class RecipeError(Exception):
    """Bad input or state: one line, non-zero exit."""


# ---------------------------------------------------------------- text
def read_lines(path: Path) -> List[str]:
    """Lines split on \\n only (U+0085 and friends stay inside their line), .gz or plain."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="\n") as f:
            return [line[:-1] if line.endswith("\n") else line for line in f]
    except UnicodeDecodeError as err:
        raise RecipeError(f"{path}: not UTF-8 ({err.reason} at byte {err.start})")


def clean(line: str) -> str:
    return " ".join(_BREAKS.sub(" ", line).split())


def gold_key(line: str) -> str:
    """Case, spacing and punctuation ignored (as for removing RWTH sentences from training)."""
    return "".join(c for c in line.lower() if unicodedata.category(c)[0] in "LN")


def write_lines(path: Path, lines: List[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)


def find(directory: Path, name: str) -> Path:
    for cand in (directory / name, directory / f"{name}.gz"):
        if cand.is_file():
            return cand
    raise RecipeError(f"{directory / name}: no such corpus file (nor .gz)")


def pairs_of(src: Path, tgt: Path) -> List[Tuple[str, str]]:
    a, b = read_lines(src), read_lines(tgt)
    if len(a) != len(b):
        raise RecipeError(f"{src} has {len(a)} lines, {tgt} has {len(b)}: not parallel")
    return list(zip(a, b))


# ---------------------------------------------------------------- sources
def sacrebleu_echo(test_set: str, pair: Pair, side: str) -> List[str]:
    proc = subprocess.run([str(BIN / "sacrebleu"), "-t", test_set, "-l", f"{pair.src}-{pair.tgt}", "--echo", side],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RecipeError(f"sacrebleu -t {test_set} --echo {side} failed (no internet? pass --corpus DIR): "
                          f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return proc.stdout.split("\n")[:-1]


def download_rela(pair: Pair) -> Dict[str, List[Tuple[str, str]]]:
    try:
        import datasets
    except ImportError:
        raise RecipeError("the internet path needs the `datasets` package (pip install datasets) or pass --corpus DIR")
    name, config = pair.hf_train
    rows = datasets.load_dataset(name, config, split="train")
    train = [(r["translation"][pair.src], r["translation"][pair.tgt]) for r in rows]
    out = {"train": train}
    for split, test_set in (("valid", pair.valid_set), ("test", pair.test_set)):
        out[split] = list(zip(sacrebleu_echo(test_set, pair, "src"), sacrebleu_echo(test_set, pair, "ref")))
    return out


def download_europarl(raw: Path) -> Path:
    import tarfile
    import urllib.request

    raw.mkdir(parents=True, exist_ok=True)
    tgz = raw / "de-en.tgz"
    if not tgz.exists():
        print(f"downloading {EUROPARL_URL}")
        urllib.request.urlretrieve(EUROPARL_URL, raw / "de-en.tgz.part")
        os.replace(raw / "de-en.tgz.part", tgz)
    with tarfile.open(tgz) as tar:
        tar.extractall(raw, filter="data")
    return raw


# ---------------------------------------------------------------- prepare
def prepare(args, pair: Pair) -> None:
    work = pair_dir(args)
    corpus = Path(args.corpus) if args.corpus else None
    if pair.paper == "kobayashi":
        rwth = Path(args.rwth) if args.rwth else None
        if rwth is None:
            raise RecipeError("--rwth DIR (or RWTH_GOLD_DIR) is needed: the RWTH gold set (test.de, test.en, "
                              "alignment.talp)")
        gold = {f: find(rwth, f) for f in ("test.de", "test.en", "alignment.talp")}
        if corpus is not None:
            files = (find(corpus, "europarl-v7.de-en.de"), find(corpus, "europarl-v7.de-en.en"))
        splits = None
    elif corpus is not None:
        files = {s: (find(corpus, f"{s}.{pair.src}"), find(corpus, f"{s}.{pair.tgt}")) for s in ("train", "valid", "test")}
    try:  # the SentencePiece trainer is needed at the end: check now
        import sentencepiece  # noqa: F401
        if pair.paper == "kobayashi":
            import sacremoses  # noqa: F401
    except ImportError as err:
        raise RecipeError(f"{err.name} is not installed (bash scripts/install.sh installs it)")
    work.mkdir(parents=True, exist_ok=True)
    (work / "prepared.json").unlink(missing_ok=True)
    data = work / "data"
    data.mkdir(exist_ok=True)
    report = {}
    if pair.paper == "kobayashi":
        if corpus is None:
            raw = download_europarl(work / "raw")
            files = (raw / "europarl-v7.de-en.de", raw / "europarl-v7.de-en.en")
        splits, report = kobayashi_splits(pair, pairs_of(*files), gold, args)
    else:
        raw_splits = ({s: pairs_of(*f) for s, f in files.items()} if corpus is not None else download_rela(pair))
        splits, report = rela_splits(pair, raw_splits, args)
    for split, rows in splits.items():
        for i, lang in enumerate((pair.src, pair.tgt)):
            write_lines(data / f"{split}.{lang}", [r[i] for r in rows])
    spm_encode(pair, data, splits, args.vocab_size or pair.vocab_size)
    binarise(pair, work, splits)
    report.update({s: len(rows) for s, rows in splits.items()})
    (work / "prepared.json").write_text(json.dumps({"pair": pair.name, "pairs": report}, indent=1))
    print(f"{PROG}: {pair.name} prepared in {work}: " + ", ".join(f"{k} {v}" for k, v in report.items()))


def rela_splits(pair: Pair, raw: Dict[str, List[Tuple[str, str]]], args):
    train = []
    for s, t in raw["train"]:
        s, t = clean(s), clean(t)
        if not s or not t or max(len(s), len(t)) > 1500:
            continue
        if pair.max_char_ratio and max(len(s), len(t)) > pair.max_char_ratio * min(len(s), len(t)):
            continue
        train.append((s, t))
    if args.max_train_pairs:
        train = train[: args.max_train_pairs]
    # valid and test keep every pair (never filtered; line breaks inside a line become spaces)
    splits = {"train": train, **{s: [(clean(a), clean(b)) for a, b in raw[s]] for s in ("valid", "test")}}
    return splits, {"train_read": len(raw["train"]), "train_dropped": len(raw["train"]) - len(train)}


def kobayashi_splits(pair: Pair, rows: List[Tuple[str, str]], gold: Dict[str, Path], args):
    from sacremoses import MosesTokenizer

    gold_de, gold_en = read_lines(gold["test.de"]), read_lines(gold["test.en"])
    keys = {gold_key(s) for s in gold_de + gold_en}
    kept = [(clean(d), clean(e)) for d, e in rows]
    kept = [(d, e) for d, e in kept if d and e and gold_key(d) not in keys and gold_key(e) not in keys]
    n_valid = args.valid_lines
    if len(kept) <= n_valid:
        raise RecipeError(f"only {len(kept)} usable pairs: fewer than --valid-lines {n_valid}")
    tok = {lang: MosesTokenizer(lang=lang) for lang in ("de", "en")}

    def moses(text, lang):
        return tok[lang].tokenize(text, escape=False, return_str=True).lower()

    kept = [(moses(d, "de"), moses(e, "en")) for d, e in kept]
    splits = {"train": kept[:-n_valid], "valid": kept[-n_valid:],
              # the gold set is Moses-tokenised already: lowercased only
              "test": [(clean(d).lower(), clean(e).lower()) for d, e in zip(gold_de, gold_en)]}
    return splits, {"europarl_read": len(rows), "removed_empty_or_rwth": len(rows) - len(kept)}


def spm_encode(pair: Pair, data: Path, splits, vocab_size: int) -> None:
    import sentencepiece as spm

    models = {}
    groups = [(pair.src, pair.tgt)] if pair.joint_vocab else [(pair.src,), (pair.tgt,)]
    for langs in groups:
        prefix = data / ("spm" if pair.joint_vocab else f"spm.{langs[0]}")
        spm.SentencePieceTrainer.train(
            input=[str(data / f"train.{lang}") for lang in langs], model_prefix=str(prefix), vocab_size=vocab_size,
            character_coverage=0.9995 if "zh" in langs else 1.0, model_type="unigram", input_sentence_size=10_000_000,
            shuffle_input_sentence=True, bos_id=-1, eos_id=-1, unk_id=0, pad_id=-1, minloglevel=2,
            hard_vocab_limit=False)
        for lang in langs:
            models[lang] = spm.SentencePieceProcessor(model_file=str(prefix) + ".model")
    for split, rows in splits.items():
        for lang in (pair.src, pair.tgt):
            lines = read_lines(data / f"{split}.{lang}")
            write_lines(data / f"{split}.spm.{lang}", [" ".join(models[lang].encode(x, out_type=str)) for x in lines])


def binarise(pair: Pair, work: Path, splits) -> None:
    data, dest = work / "data", work / "bin"
    cmd = [str(BIN / "fairseq-preprocess"), "--source-lang", pair.src, "--target-lang", pair.tgt,
           "--trainpref", str(data / "train.spm"), "--validpref", str(data / "valid.spm"),
           "--testpref", str(data / "test.spm"), "--destdir", str(dest), "--workers", "2"]
    cmd += ["--joined-dictionary"] if pair.joint_vocab else []
    call(cmd, work / "preprocess.log")
    from fairseq.data import indexed_dataset

    for split, rows in splits.items():  # never lose a pair: the binarised sets hold every line
        for lang in (pair.src, pair.tgt):
            n = len(indexed_dataset.make_dataset(str(dest / f"{split}.{pair.src}-{pair.tgt}.{lang}"), impl="mmap"))
            if n != len(rows):
                raise RecipeError(f"{dest}: {split}.{lang} holds {n} sentences, expected {len(rows)}")


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
    max_tokens = args.max_tokens or pair.max_tokens
    launch = [str(BIN / "fairseq-rela-launch"), "--nproc-per-node", str(args.procs), "--nnodes", str(args.nodes),
              "--node-rank", str(args.node_rank)]
    if args.master_addr:
        launch += ["--master-addr", args.master_addr, "--master-port", str(args.master_port)]
    device = ["--cpu"] if args.cpu else ["--fp16"]
    return [*launch, *(["--cpu"] if args.cpu else []), "--",
            str(work / "bin"), "--user-dir", USER_DIR, "--source-lang", pair.src, "--target-lang", pair.tgt,
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
    for variant, seed, cmd in cmds:
        name = run_name(variant, seed)
        print(f"{PROG}: training {pair.name} {name}: {shlex.join(cmd)}", flush=True)
        if args.dry_run:
            continue
        start = time.time()
        call(cmd, work / f"train-{name}.log", append=True)
        log_run(work / f"runs-{name}.json", {"command": shlex.join(cmd), "hardware": hardware(args),
                                            "seconds": round(time.time() - start, 1), "finished": time.ctime()})


def log_run(path: Path, record: dict) -> None:
    runs = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps(runs + [record], indent=1))


# ---------------------------------------------------------------- evaluate
def evaluate(args, pair: Pair) -> None:
    work = pair_dir(args)
    todo = [(v, s) for v in variants(args, pair) for s in seeds(args, pair)
            if (work / f"ckpt-{run_name(v, s)}").is_dir()]
    if not todo:
        raise RecipeError(f"{work}: no trained model for {args.variant} (run `{PROG} train` first)")
    if pair.paper == "kobayashi" and not args.rwth:
        raise RecipeError("--rwth DIR (or RWTH_GOLD_DIR) is needed for the alignment sweep")
    for variant, seed in todo:
        name = run_name(variant, seed)
        out = work / f"eval-{name}"
        out.mkdir(exist_ok=True)
        result = {"pair": pair.name, "variant": variant, "seed": seed, "run": name}
        ckpt_dir = work / f"ckpt-{name}"
        if pair.paper == "rela":  # average of the last 5 interval checkpoints
            ckpt = ckpt_dir / "checkpoint.avg5.pt"
            call([str(BIN / "fairseq-rela-average"), "--inputs", str(ckpt_dir), "--last", "5", "--output", str(ckpt)],
                 out / "average.log")
        else:  # best by validation BLEU
            ckpt = ckpt_dir / "checkpoint_best.pt"
            if not ckpt.exists():
                raise RecipeError(f"{ckpt}: no such checkpoint")
        result["checkpoint"] = str(ckpt)
        result.update(bleu(args, pair, work, ckpt, out))
        if pair.paper == "kobayashi":
            result["alignment"] = alignment_sweep(args, pair, work, ckpt, out)
        (out / "result.json").write_text(json.dumps(result, indent=1))
        print(f"{PROG}: {pair.name} {name}: BLEU {result['bleu']:.1f} ({result['signature']})", flush=True)
    summarize(args)


def bleu(args, pair: Pair, work: Path, ckpt: Path, out: Path) -> dict:
    import sacrebleu

    cmd = [str(BIN / "fairseq-generate"), str(work / "bin"), "--user-dir", USER_DIR, "--path", str(ckpt),
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
    cmd = [str(BIN / "fairseq-rela-analyze"), str(work / "bin"), "--user-dir", USER_DIR, "--path", str(ckpt),
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
             "| pair | variant | seeds | ours | paper | training wall time | hardware |", "|---|---|---|---|---|---|---|"]
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
        lines.append(f"| {name} | {variant} | {len(rs)} | {ours:.1f} | {'—' if paper is None else f'{paper:.1f}'} "
                     f"| {wall / 3600:.2f} h | {'; '.join(hw) or '?'} |")
    align = [(k, rs) for k, rs in groups.items() if "alignment" in rs[0]]
    for (name, variant), rs in align:
        pair = PAIRS[name]
        lines += ["", f"## AER (%) on the RWTH gold set: {name} {variant}, mean of {len(rs)} seed(s)", "",
                  "| setting | ours, best layer | ours, layer 2 | paper (layer 2, 5-seed mean) |", "|---|---|---|---|"]
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
            lines.append(f"- {r['pair']} {r['run']} train ({rec['seconds'] / 3600:.2f} h, {rec['hardware']}): "
                         f"`{rec['command']}`")
        lines.append(f"- {r['pair']} {r['run']} decode: `{r['generate']}`; BLEU signature `{r['signature']}`")
    text = "\n".join(lines) + "\n"
    write_lines(work / "summary.md", text.rstrip("\n").split("\n"))
    print(text)


def runs_of(work: Path, name: str) -> List[dict]:
    path = work / f"runs-{name}.json"
    return json.loads(path.read_text()) if path.exists() else []


# ---------------------------------------------------------------- plumbing
def call(cmd: List[str], log: Path, append: bool = False, stdout: Optional[Path] = None) -> None:
    """Run a console script, its output to ``log`` (stdout to ``stdout`` if given); one line if it fails."""
    with open(log, "a" if append else "w") as err:
        if stdout is not None:
            with open(stdout, "w") as out:
                proc = subprocess.run(cmd, stdout=out, stderr=err)
        else:
            proc = subprocess.run(cmd, stdout=err, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["?"]
        raise RecipeError(f"{Path(cmd[0]).name} failed (status {proc.returncode}, log {log}): {tail[0][:300]}")


def pair_dir(args) -> Path:
    return Path(args.work) / args.pair


def variants(args, pair: Pair) -> List[str]:
    return list(pair.variants) if args.variant == "all" else [args.variant]


def seeds(args, pair: Pair) -> List[int]:
    return list(pair.seeds) if args.seeds is None else args.seeds


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
        s.add_argument("--pair", required=True, choices=sorted(PAIRS), help="language pair (pairs.py)")
        s.add_argument("--rwth", default=os.environ.get("RWTH_GOLD_DIR"),
                       help="RWTH gold folder: test.de, test.en, alignment.talp (europarl-de-en; env RWTH_GOLD_DIR)")
        if step == "prepare":
            s.add_argument("--corpus", default=os.environ.get("RECIPE_CORPUS"),
                           help="local raw text instead of downloading (env RECIPE_CORPUS); see README")
            s.add_argument("--vocab-size", type=int, help="SentencePiece size (default: the paper's)")
            s.add_argument("--valid-lines", type=int, default=1000, help="europarl: last N lines validate (1000)")
            s.add_argument("--max-train-pairs", type=int, help="keep the first N training pairs (tests)")
            continue
        s.add_argument("--variant", required=True, choices=[*VARIANTS, "all"], help="attention variant, or all")
        s.add_argument("--seeds", type=seed_list, help="comma-separated seeds (default: the paper's)")
        s.add_argument("--cpu", action="store_true", help="CPU processes (no --fp16)")
        s.add_argument("extra", nargs="*", help="after --: more fairseq options (override the recipe's)")
        if step == "train":
            s.add_argument("--procs", type=int, default=1, help="GPUs (or CPU processes) per node")
            s.add_argument("--nodes", type=int, default=1)
            s.add_argument("--node-rank", type=int, default=0)
            s.add_argument("--master-addr")
            s.add_argument("--master-port", type=int, default=29500)
            s.add_argument("--max-tokens", type=int, help="per process and batch (default: the paper's)")
            s.add_argument("--dry-run", action="store_true", help="print the training commands only")
    sub.add_parser("summarize", parents=[common])
    return p


def main(argv=None) -> None:
    parser = get_parser()
    args = parser.parse_args(argv)
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
    except (RecipeError, OSError) as err:
        sys.exit(f"{PROG}: error: {err}")


if __name__ == "__main__":
    main()
