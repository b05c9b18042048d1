"""Summarise the Multi30k seeds (issue 35): several training seeds per attention variant at one recipe.

Reads each model folder as ``multi30k.sh`` leaves it (``de-en-VARIANT/`` with ``train.log``, ``times.txt``,
``gen-test.txt`` or ``.gz``, ``analysis/stats.json`` and ``analysis/stats.txt``; a folder holding such
folders, e.g. ``work/m30k-seeds/seed2``, stands for all of them), and with ``--committed`` a run folder of
``summarize_multi30k.py`` whose checkpoints and translations are gone (its ``results.json`` gives BLEU and the
attention statistics; no sentence-level statistics), and with ``--summary`` a folder this script wrote before,
whose runs enter again from its per-run folders (``test2016.hyp.en``, ``train.log``) and its ``results.json``
(attention statistics, validation curve, pieces), so the summary can be rebuilt, or grown by new seeds, from the
repository alone. Variant and seed come from the fairseq options in each
``train.log``, and every run must have the recipe of the first (all options but seed, save_dir and the
attention options; a resumed run's earlier pieces may differ in max_epoch and patience only).

Writes into ``--out``: per run ``VARIANT-seedN/`` (``test2016.hyp.en``: the detokenised hypotheses in test
order, ``train.log``, ``stats.txt``, ``times.txt``), ``results.md``, ``curves.png`` (validation perplexity by
update, and over the same seed's softmax) and, last, ``results.json`` (every run, with its validation curve; the
pieces ``seeds.sh`` logged (``--pieces``), with their wall times;
per variant mean and standard deviation over seeds; each variant against softmax: Welch's t-interval of the
difference of seed means, the pigeonhole bootstrap over seeds x sentences, Clark et al. (2011)'s stratified
approximate randomisation, and each seed's paired bootstrap against the same seed's softmax).  Statistics:
``fairseq_rela.seeds``.  Bad input is one ``error:`` line before any work.

    python examples/replication/summarize_seeds.py work/m30k-seeds/seed2 work/m30k-seeds/seed3 \\
        --committed examples/replication/runs/2026-11-24-cpu-multi30k-54ep --pieces work/m30k-seeds/pieces.log \\
        --out examples/replication/runs/2026-12-07-cpu-multi30k-seeds
    # a fourth seed added to that summary (or, with no run folders, the summary rebuilt from the repository)
    python examples/replication/summarize_seeds.py work/m30k-seeds/seed4 \\
        --summary examples/replication/runs/2026-12-07-cpu-multi30k-seeds --pieces work/m30k-seeds/pieces.log \\
        --out examples/replication/runs/2026-12-07-cpu-multi30k-seeds
"""
import argparse
import ast
import gzip
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from summarize import ORDER, fmt, generation, parse_train_log, translated  # noqa: E402
from summarize_multi30k import stop_reason, training_seconds, valid_curve  # noqa: E402

PROG = "summarize_seeds.py"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_REFS = Path(os.environ.get("FAIRSEQ_RELA_DATA", REPO.parent / "shared" / "data")) / "multi30k" / \
    "test_2016_flickr.en.gz"
NOT_RECIPE = {"seed", "save_dir", "attention_activation", "rela_variant"}  # what may differ between runs
PIECE_ONLY = {"max_epoch", "patience"}  # what an earlier piece of a resumed run may have had otherwise
KINDS = ("cross", "encoder_self", "decoder_self")
ATTENTION = ("sparsity", "null_rate", "head_jsd")


class InputError(Exception):
    """Bad input: one line for the user."""


@dataclass
class Run:
    variant: str
    seed: int
    folder: str
    source: str  # "run" (multi30k.sh's folder) or "committed" (a summarised run folder without translations)
    epochs: int
    stopped: Optional[str]
    best_updates: Optional[int]
    valid_ppl: Optional[float]  # at the best checkpoint (the lowest validation loss)
    train_seconds: Optional[int]
    decode_seconds: Optional[int]
    bleu: Optional[float] = None
    chrf: Optional[float] = None
    bleu_p_vs_softmax: Optional[float] = None  # paired bootstrap against the same seed's softmax
    bleu_ci95_vs_softmax: Optional[float] = None  # this run's own BLEU 95% half-width in that bootstrap
    hypotheses: Optional[str] = None  # the committed file, relative to --out
    valid_curve: List[List[float]] = field(default_factory=list)  # [update, validation ppl] per validation
    attention: Dict[str, Dict[str, Dict[str, Optional[float]]]] = field(default_factory=dict)
    options: dict = field(default_factory=dict, repr=False)
    hyps: Optional[List[str]] = field(default=None, repr=False)
    files: Optional[str] = field(default=None, repr=False)  # --summary: its per-run folder (train.log, stats.txt)
    bleu_recorded: Optional[float] = field(default=None, repr=False)  # --summary: the BLEU its results.json gives


def fairseq_options(text: str) -> List[dict]:
    """The model options (``Namespace(...)``) that ``fairseq-train`` logs at each start, one dict per piece."""
    pieces = []
    for line in text.split("\n"):
        if "| fairseq_cli.train | {" not in line or "'model': Namespace(" not in line:
            continue
        inner = line.split("'model': Namespace(", 1)[1]
        call = None
        for end in range(len(inner)):  # the Namespace's closing parenthesis: the first prefix that parses
            if inner[end] == ")" and inner[end + 1:end + 10].startswith(", 'task'"):
                call = inner[:end]
                break
        if call is None:
            raise InputError("a fairseq-train options line without its Namespace(...)")
        node = ast.parse(f"f({call})", mode="eval").body
        pieces.append({k.arg: ast.literal_eval(k.value) for k in node.keywords})
    return pieces


def variant_of(options: dict) -> str:
    act = options.get("attention_activation", "softmax")
    return f"rela-{options.get('rela_variant')}" if act == "rela" else act


def _times(folder: Path) -> dict:
    times = {}
    if (folder / "times.txt").is_file():
        for line in (folder / "times.txt").read_text().split("\n"):
            if line.strip():
                key, value = line.split(maxsplit=1)
                times[key] = value  # a resumed run appends: the last value counts
    return times


def _attention(stats: dict, mean_key: bool) -> dict:
    out = {}
    for kind, layers in stats.items():
        out[kind] = {layer: {name: s.get(f"{name}_mean" if mean_key and name != "head_jsd" else name)
                             for name in ATTENTION} for layer, s in layers.items()}
    return out


def _training(folder: Path, text: str) -> dict:
    log = parse_train_log(text)
    curve = valid_curve(log)
    times = _times(folder)
    best = int(times["best_updates"]) if times.get("best_updates", "None") != "None" else None
    at_best = dict(curve).get(best) if best is not None else None
    epochs = [int(line.split("| valid | epoch")[1].split("|")[0]) for line in text.split("\n") if "| valid | epoch" in line]
    return {"epochs": max(epochs) if epochs else 0, "stopped": stop_reason(folder), "best_updates": best,
            "valid_curve": [[u, p] for u, p in curve],
            "valid_ppl": at_best, "train_seconds": training_seconds(folder),
            "decode_seconds": int(times["decode_test_seconds"]) if "decode_test_seconds" in times else None}


def _read_log(folder: Path):
    text = (folder / "train.log").read_text(encoding="utf-8", errors="replace")
    try:
        pieces = fairseq_options(text)
    except (InputError, SyntaxError, ValueError) as err:
        raise InputError(f"{folder}/train.log: cannot read fairseq's options ({err})")
    if not pieces:
        raise InputError(f"{folder}/train.log: no fairseq-train options line (not a fairseq-train log)")
    variant, name = variant_of(pieces[-1]), folder.name
    if name.startswith("de-en-") and name[len("de-en-"):] != variant:
        raise InputError(f"{folder}: the folder says {name[len('de-en-'):]}, its train.log trains {variant}")
    return text, pieces, variant


def load_run(folder: Path, n_refs: int) -> Run:
    """One model folder of ``multi30k.sh``, finished and evaluated; InputError otherwise."""
    missing = [n for n in ("train.log", "times.txt", "analysis/stats.json", "analysis/stats.txt")
               if not (folder / n).is_file()]
    if not generation(folder, "gen-test.txt").is_file():
        missing.append("gen-test.txt")
    if missing:
        raise InputError(f"{folder}: missing {', '.join(missing)} (not finished: multi30k.sh writes them)")
    text, pieces, variant = _read_log(folder)
    if not (folder / "trained").is_file() or stop_reason(folder) is None:
        raise InputError(f"{folder}: training not finished (no 'trained' marker or the last piece did not end)")
    training = _training(folder, text)
    if training["best_updates"] is None or training["decode_seconds"] is None:
        raise InputError(f"{folder}/times.txt: no best_updates or decode_test_seconds (evaluation not finished)")
    found = translated(generation(folder, "gen-test.txt"))
    if sorted(found) != list(range(n_refs)):
        raise InputError(f"{folder}: {len(found)} translations (ids {min(found, default='-')}..{max(found, default='-')}) "
                         f"for {n_refs} references")
    try:
        stats = json.loads((folder / "analysis" / "stats.json").read_text())
    except ValueError as err:
        raise InputError(f"{folder}/analysis/stats.json: not JSON ({err})")
    if not isinstance(stats, dict) or not stats.get("attention"):
        raise InputError(f"{folder}/analysis/stats.json: no attention statistics (fairseq-rela-analyze writes them)")
    return Run(variant=variant, seed=int(pieces[-1]["seed"]), folder=str(folder), source="run", **training,
               attention=_attention(stats.get("attention", {}), mean_key=True), options=pieces,
               hyps=[found[i] for i in range(n_refs)])


def load_committed(run: Path, variants) -> List[Run]:
    """The models of a committed ``summarize_multi30k.py`` folder (``results.json``, ``de-en-V/train.log``,
    ``times.txt``, ``stats.txt``): no translations, so BLEU and attention come from its results.json."""
    if not (run / "results.json").is_file():
        raise InputError(f"--committed {run}: no results.json (summarize_multi30k.py writes it)")
    try:
        rows = json.loads((run / "results.json").read_text())
        rows = {r["variant"]: r for r in rows}
    except (ValueError, TypeError, KeyError):
        raise InputError(f"--committed {run}/results.json: not summarize_multi30k.py's list of variants")
    out = []
    for variant in variants:
        folder = run / f"de-en-{variant}"
        missing = [n for n in ("train.log", "times.txt", "stats.txt") if not (folder / n).is_file()]
        if variant not in rows or missing:
            raise InputError(f"--committed {run}: no {variant} model ({', '.join(missing) or 'not in results.json'})")
        text, pieces, found = _read_log(folder)
        if stop_reason(folder) is None:
            raise InputError(f"--committed {folder}: training not finished")
        row = rows[variant]
        out.append(Run(variant=variant, seed=int(pieces[-1]["seed"]), folder=str(folder), source="committed",
                       **_training(folder, text), bleu=row.get("bleu"), bleu_p_vs_softmax=row.get("bleu_p_vs_softmax"),
                       bleu_ci95_vs_softmax=row.get("bleu_ci95") if variant != "softmax" else None,
                       attention=row.get("attention") or {}, options=pieces))
    return out


SUMMARY_FIELDS = ("variant", "seed", "folder", "source", "epochs", "stopped", "best_updates", "valid_ppl",
                  "train_seconds", "decode_seconds", "bleu", "hypotheses", "valid_curve", "attention")


PIECE_FIELDS = ("log", "variant", "seed", "start", "end", "outcome", "seconds")


def load_summary(out: Path, n_refs: int):
    """The runs and pieces of a folder this script wrote (``results.json``, ``VARIANT-seedN/``): translations from
    each ``test2016.hyp.en`` (scored again), the training figures read again from each ``train.log`` and
    ``times.txt`` (and refused where they differ from the recorded ones), the attention statistics and pieces as
    recorded; runs that had no translations (``committed``) keep their recorded BLEU and paired-bootstrap figures."""
    try:
        data = json.loads((out / "results.json").read_text())
        rows, pieces = data["runs"], data.get("pieces") or []
        if not isinstance(rows, list) or not all(isinstance(r, dict) and set(SUMMARY_FIELDS) <= set(r)
                                                 and isinstance(r["seed"], int) and isinstance(r["variant"], str)
                                                 for r in rows):
            raise TypeError
        if not isinstance(pieces, list) or not all(isinstance(x, dict) and set(PIECE_FIELDS) <= set(x) for x in pieces):
            raise TypeError
    except FileNotFoundError:
        raise InputError(f"--summary {out}: no results.json (summarize_seeds.py writes it)")
    except (ValueError, TypeError, KeyError):
        raise InputError(f"--summary {out}/results.json: not summarize_seeds.py's (a 'runs' list with "
                         f"{', '.join(SUMMARY_FIELDS)}, an integer seed; 'pieces' with {', '.join(PIECE_FIELDS)})")
    runs = []
    for row in rows:
        d = out / f"{row['variant']}-seed{row['seed']}"
        missing = [n for n in ("train.log", "times.txt", "stats.txt") if not (d / n).is_file()]
        if row["hypotheses"] not in (None, f"{d.name}/test2016.hyp.en"):
            raise InputError(f"--summary {out}/results.json: {row['variant']} seed {row['seed']}'s hypotheses are "
                             f"{row['hypotheses']!r}, not {d.name}/test2016.hyp.en")
        if row["hypotheses"] is not None and not (out / row["hypotheses"]).is_file():
            missing.append("test2016.hyp.en")
        if missing:
            raise InputError(f"--summary {d}: missing {', '.join(missing)}")
        text, options, variant = _read_log(d)
        if (variant, int(options[-1]["seed"])) != (row["variant"], row["seed"]):
            raise InputError(f"--summary {d}/train.log: trains {variant} seed {options[-1]['seed']}, "
                             f"results.json says {row['variant']} seed {row['seed']}")
        training = _training(d, text)
        changed = [k for k in training if training[k] != row.get(k)]
        if changed:
            raise InputError(f"--summary {d}: its train.log and times.txt give other {', '.join(changed)} than "
                             f"results.json records (the files or the record changed)")
        hyps = None
        if row["hypotheses"] is not None:
            hyps = (out / row["hypotheses"]).read_text(encoding="utf-8").split("\n")
            if hyps[-1] != "" or len(hyps) - 1 != n_refs:
                raise InputError(f"--summary {out / row['hypotheses']}: {len(hyps) - (hyps[-1] == '')} lines for "
                                 f"{n_refs} references")
            hyps = hyps[:-1]
        recorded = {}
        if hyps is None:  # no translations: the recorded figures are all there is
            recorded = dict(bleu=row["bleu"], chrf=row.get("chrf"), bleu_p_vs_softmax=row.get("bleu_p_vs_softmax"),
                            bleu_ci95_vs_softmax=row.get("bleu_ci95_vs_softmax"))
        runs.append(Run(variant=variant, seed=row["seed"], folder=row["folder"], source=row["source"], **training,
                        attention=row["attention"], options=options, hyps=hyps, files=str(d),
                        bleu_recorded=row["bleu"], **recorded))
    return runs, pieces


def check_rescored(runs: List[Run]) -> None:
    """A --summary run's hypotheses must give the BLEU its results.json recorded (else the file or the references
    changed since)."""
    for r in runs:
        if r.files is not None and r.hyps is not None and r.bleu_recorded is not None \
                and abs(r.bleu - r.bleu_recorded) > 0.005:
            raise InputError(f"--summary {r.files}: its test2016.hyp.en scores BLEU {r.bleu:.2f} against --refs, "
                             f"results.json recorded {r.bleu_recorded:.2f} (the file or the references changed)")


def check_recipe(runs: List[Run]) -> None:
    """Every run trains the first run's recipe; each (variant, seed) once."""
    seen = {}
    for r in runs:
        piece_seeds = sorted({p.get("seed") for p in r.options}, key=str)
        if len(piece_seeds) > 1:
            raise InputError(f"{r.folder}: its pieces trained with seeds {', '.join(map(str, piece_seeds))} (one run, one seed)")
        key = (r.variant, r.seed)
        if key in seen:
            raise InputError(f"{r.variant} seed {r.seed} listed twice: {seen[key]} and {r.folder}")
        seen[key] = r.folder
    ref = runs[0]
    base = {k: v for k, v in ref.options[-1].items() if k not in NOT_RECIPE}
    for r in runs:
        for i, piece in enumerate(r.options):
            skip = NOT_RECIPE | (PIECE_ONLY if i < len(r.options) - 1 else set())
            for k in sorted((set(base) | set(piece)) - skip):
                if piece.get(k) != base.get(k):
                    where = f"piece {i + 1} of {len(r.options)}" if len(r.options) > 1 else "its train.log"
                    raise InputError(f"{r.folder}: not the recipe of {ref.folder}: {k}={piece.get(k)!r} in {where} "
                                     f"(there {base.get(k)!r})")


def expand(paths: List[Path]) -> List[Path]:
    """Model folders: a folder with a train.log, or each de-en-*/ below one."""
    out = []
    for p in paths:
        if (p / "train.log").is_file():
            out.append(p)
        elif p.is_dir() and sorted(p.glob("de-en-*/train.log")):
            out.extend(sorted(f.parent for f in p.glob("de-en-*/train.log")))
        else:
            raise InputError(f"{p}: no train.log and no de-en-*/train.log below it")
    return out


def read_refs(path: Path) -> List[str]:
    if not path.is_file():
        raise InputError(f"--refs {path}: no such file (Multi30k's test_2016_flickr.en.gz in ../shared/data)")
    with (gzip.open if path.suffix == ".gz" else open)(path, "rt", encoding="utf-8", newline="\n") as f:
        return [line.rstrip("\n") for line in f]  # as they are: sacrebleu REFS -i HYP rescores the same


UTC = "%Y-%m-%dT%H:%M:%SZ"  # seeds.sh's times (date -u +%FT%TZ)


def _utc(text: str) -> datetime:
    return datetime.strptime(text, UTC)


def _log_lines(path: Path):
    """``(time, line)`` of every timestamped line of a fairseq ``train.log`` (fairseq logs the machine's clock,
    UTC here, as ``seeds.sh`` does)."""
    out = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").split("\n"):
            try:
                out.append((datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S"), line))
            except ValueError:
                continue
    return out


def read_pieces(paths: List[Path]) -> List[dict]:
    """The pieces ``seeds.sh`` logged (``TIME start V seed S (host H, pid P)``, then ``TIME done|stopped|failed
    V seed S``; ``skip`` lines, for models finished before, are no piece): one row per start, with its end and
    wall time, and from the run's ``train.log`` (``WORK/seedS/de-en-V``) the epochs the piece finished.  A start
    with no end line (running, or killed without its trap) is timed to its last ``train.log`` line before the
    same model's next start: a lower bound (``seconds_at_least``)."""
    rows, open_ = [], {}
    for path in paths:
        if not path.is_file():
            raise InputError(f"--pieces {path}: no such file (seeds.sh writes WORK/pieces.log)")
        for n, line in enumerate(path.read_text().split("\n"), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 5 or parts[1] not in ("start", "done", "stopped", "failed", "skip") or parts[3] != "seed":
                raise InputError(f"{path}:{n}: not a seeds.sh line: {line!r}")
            try:
                when = _utc(parts[0])
            except ValueError:
                raise InputError(f"{path}:{n}: not a seeds.sh time: {parts[0]!r}")
            key = (str(path), parts[2], parts[4])
            if parts[1] == "start":
                row = {"log": str(path), "variant": parts[2], "seed": int(parts[4]), "start": parts[0], "end": None,
                       "outcome": "no end logged", "seconds": None, "host": " ".join(parts[5:]).strip("()"),
                       "epochs": None, "last_log": None, "seconds_at_least": None}
                rows.append(row)
                open_[key] = (row, when)
            elif parts[1] != "skip" and key in open_:
                row, began = open_.pop(key)
                row.update(end=parts[0], outcome=" ".join(parts[1:2] + parts[5:]),
                           seconds=int((when - began).total_seconds()))
    for i, row in enumerate(rows):
        _epochs_of(row, rows[i + 1:])
    return rows


def _epochs_of(row: dict, later: List[dict]) -> None:
    """Fill ``epochs`` ([first, last] finished in the piece, or [] for none) and, for a piece with no end line,
    ``last_log`` and ``seconds_at_least``, from the model's train.log (left None where there is none)."""
    log = Path(row["log"]).parent / f"seed{row['seed']}" / f"de-en-{row['variant']}" / "train.log"
    lines = _log_lines(log)
    if not lines:
        return
    same = [r for r in later if (r["log"], r["variant"], r["seed"]) == (row["log"], row["variant"], row["seed"])]
    begin = _utc(row["start"])
    until = _utc(row["end"]) if row["end"] else (_utc(same[0]["start"]) if same else datetime.max)
    mine = [(t, line) for t, line in lines if begin <= t <= until]
    epochs = [int(m.group(1)) for _, line in mine for m in [re.search(r"end of epoch (\d+) ", line)] if m]
    row["epochs"] = [min(epochs), max(epochs)] if epochs else []
    if row["end"] is None and mine:
        row["last_log"] = mine[-1][0].strftime(UTC)
        row["seconds_at_least"] = int((mine[-1][0] - begin).total_seconds())


# --- statistics ------------------------------------------------------------------------------------------

def score(runs: List[Run], refs: List[str], samples: int, shuffles: int) -> dict:
    """BLEU and chrF of every run with translations, per-variant spreads, and each variant against softmax."""
    import numpy as np
    import sacrebleu
    from sacrebleu.significance import PairedTest

    from fairseq_rela import seeds

    bleu, chrf = sacrebleu.BLEU(tokenize="13a"), sacrebleu.CHRF()
    stats = {}
    for r in runs:
        if r.hyps is not None:
            r.bleu = round(bleu.corpus_score(r.hyps, [refs]).score, 2)
            r.chrf = round(chrf.corpus_score(r.hyps, [refs]).score, 2)
            stats[(r.variant, r.seed)] = np.asarray(bleu._extract_corpus_statistics(r.hyps, [refs]), dtype=float)
    soft = {r.seed: r for r in runs if r.variant == "softmax"}
    for r in runs:  # SacreBLEU's paired bootstrap (Koehn 2004) against the same seed's softmax
        s = soft.get(r.seed)
        if r.variant != "softmax" and r.hyps is not None and s is not None and s.hyps is not None:
            _, res = PairedTest([("softmax", s.hyps), (r.variant, r.hyps)], {"BLEU": sacrebleu.BLEU(tokenize="13a")},
                                [refs], test_type="bs", n_samples=samples)()
            r.bleu_p_vs_softmax, r.bleu_ci95_vs_softmax = res["BLEU"][1].p_value, round(res["BLEU"][1].ci, 2)

    def bleu_of(row):
        return bleu._compute_score_from_stats(list(row)).score

    variants = [v for v in ORDER if any(r.variant == v for r in runs)]
    summary = {}
    for v in variants:
        mine = sorted((r for r in runs if r.variant == v), key=lambda r: r.seed)
        entry = {"seeds": [r.seed for r in mine]}
        for key in ("bleu", "chrf", "valid_ppl"):
            values = [getattr(r, key) for r in mine if getattr(r, key) is not None]
            entry[key] = asdict(seeds.spread(values)) if values else None
            entry[f"{key}_seeds"] = [r.seed for r in mine if getattr(r, key) is not None]
        entry["attention"] = {}
        for kind in KINDS:
            for name in ATTENTION:
                values = [kind_mean(r, kind, name) for r in mine]
                values = [x for x in values if x is not None]
                entry["attention"][f"{kind}.{name}"] = asdict(seeds.spread(values)) if values else None
        summary[v] = entry
    comparisons = {}
    for v in variants:
        if v == "softmax" or "softmax" not in summary:
            continue
        c = {f"welch_{key}": welch(runs, v, key) for key in ("bleu", "chrf", "valid_ppl")}
        ca = [r for r in runs if r.variant == v and r.chrf is not None]
        cb = [r for r in runs if r.variant == "softmax" and r.chrf is not None]
        c.update(bootstrap_bleu=None, stratified_p_bleu=None)
        sa = [stats[(v, r.seed)] for r in ca]
        sb = [stats[("softmax", r.seed)] for r in cb]
        if sa and sb:
            c["bootstrap_bleu"] = asdict(seeds.pigeonhole_bootstrap(sa, sb, bleu_of, samples=samples))
            c["bootstrap_bleu"]["seeds"] = [[r.seed for r in ca], [r.seed for r in cb]]
            if len(sa) == len(sb):
                c["stratified_p_bleu"] = seeds.stratified_randomization(sa, sb, bleu_of, shuffles=shuffles)
        comparisons[f"{v} - softmax"] = c
    return {"variants": summary, "comparisons": comparisons, "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature())}


def welch(runs: List[Run], variant: str, key: str) -> Optional[dict]:
    """Welch's interval of ``variant`` − softmax over the seeds that have ``key``; None with fewer than two
    seeds on either side or no spread at all (the interval is then undefined)."""
    from fairseq_rela import seeds

    a = [r for r in runs if r.variant == variant and getattr(r, key) is not None]
    b = [r for r in runs if r.variant == "softmax" and getattr(r, key) is not None]
    if len(a) < 2 or len(b) < 2 or len({getattr(r, key) for r in a}) + len({getattr(r, key) for r in b}) == 2:
        return None
    result = asdict(seeds.welch_interval([getattr(r, key) for r in a], [getattr(r, key) for r in b]))
    result["seeds"] = [[r.seed for r in a], [r.seed for r in b]]
    return result


def kind_mean(r: Run, kind: str, name: str) -> Optional[float]:
    layers = r.attention.get(kind) or {}
    values = [s.get(name) for s in layers.values() if s.get(name) is not None]
    return sum(values) / len(values) if values else None


# --- output ----------------------------------------------------------------------------------------------

def _spread(s, spec=".2f") -> str:
    if not s:
        return "—"
    return f"{s['mean']:{spec}} ± {s['sd']:{spec}} (n={s['n']})" if s["sd"] is not None else f"{s['mean']:{spec}} (n=1)"


def markdown(runs: List[Run], result: dict, samples: int, shuffles: int) -> str:
    lines = ["Per run (BLEU and chrF on test2016, SacreBLEU; p: paired bootstrap against the same seed's "
             f"softmax, {samples} resamples of the test sentences, ±: the 95% half-width of this run's own BLEU in that "
             "bootstrap, not an interval of the difference; `committed`: from that run's results.json, "
             "no translations kept):", "",
             "| variant | seed | source | epochs | best at update | valid ppl | BLEU | chrF | p vs softmax (same seed) | "
             "cross sparsity | cross null | cross JSD | train s | decode s |", "|" + "---|" * 14]
    for r in runs:
        p = "—" if r.bleu_p_vs_softmax is None else f"{r.bleu_p_vs_softmax:.3f} (± {fmt(r.bleu_ci95_vs_softmax)})"
        lines.append(f"| {r.variant} | {r.seed} | {r.source} | {r.epochs} | {fmt(r.best_updates, 'd')} | "
                     f"{fmt(r.valid_ppl, '.2f')} | {fmt(r.bleu, '.2f')} | {fmt(r.chrf, '.2f')} | {p} | "
                     + " | ".join(fmt(kind_mean(r, "cross", n), ".3f") for n in ATTENTION)
                     + f" | {fmt(r.train_seconds, 'd')} | {fmt(r.decode_seconds, 'd')} |")
    lines += ["", "Per variant, mean ± standard deviation over seeds (n − 1):", "",
              "| variant | seeds | BLEU | chrF | valid ppl | cross sparsity | cross null | cross JSD | enc-self JSD | "
              "dec-self null |", "|" + "---|" * 10]
    for v, e in result["variants"].items():
        att = e["attention"]
        lines.append(f"| {v} | {', '.join(map(str, e['seeds']))} | {_spread(e['bleu'])} | {_spread(e['chrf'])} | "
                     f"{_spread(e['valid_ppl'])} | {_spread(att['cross.sparsity'], '.3f')} | "
                     f"{_spread(att['cross.null_rate'], '.3f')} | {_spread(att['cross.head_jsd'], '.3f')} | "
                     f"{_spread(att['encoder_self.head_jsd'], '.3f')} | {_spread(att['decoder_self.null_rate'], '.3f')} |")
    names = {"cross": "cross", "encoder_self": "enc-self", "decoder_self": "dec-self"}
    lines += ["", "Attention per seed (mean over layers; sparsity, null rate, head JSD in nats):", "",
              "| variant | seed | " + " | ".join(f"{names[k]} {n.replace('_', ' ')}" for k in KINDS for n in ATTENTION)
              + " |", "|" + "---|" * (2 + len(KINDS) * len(ATTENTION))]
    for r in runs:
        lines.append(f"| {r.variant} | {r.seed} | "
                     + " | ".join(fmt(kind_mean(r, k, n), ".3f") for k in KINDS for n in ATTENTION) + " |")
    for v, e in result["variants"].items():
        lines.append(f"| {v} | mean ± sd | "
                     + " | ".join(_spread(e["attention"][f"{k}.{n}"], ".3f") for k in KINDS for n in ATTENTION) + " |")
    lines += ["", "Against softmax (difference of means over seeds; 95% intervals):", "",
              "| comparison | BLEU, Welch t-interval | chrF, Welch t-interval | valid ppl, Welch t-interval | "
              "BLEU, pigeonhole bootstrap (seeds, sentences) | p, stratified approximate randomisation |",
              "|---|---|---|---|---|---|"]

    def interval(c):
        if not c:
            return "needs ≥ 2 seeds with scores per variant, not all equal"
        extra = f", ν = {c['df']:.1f}" if c.get("df") else ""
        seeds_used = f"; seeds {c['seeds'][0]} vs {c['seeds'][1]}"
        return f"{c['difference']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]{extra}{seeds_used}"

    for name, c in result["comparisons"].items():
        boot = interval(c["bootstrap_bleu"]) if c["bootstrap_bleu"] else "needs translations"
        p = "—" if c["stratified_p_bleu"] is None else f"{c['stratified_p_bleu']:.4f} ({shuffles} shuffles)"
        lines.append(f"| {name} | {interval(c['welch_bleu'])} | {interval(c['welch_chrf'])} | "
                     f"{interval(c['welch_valid_ppl'])} | {boot} | {p} |")
    if result.get("pieces"):
        lines += ["", "Pieces (seeds.sh's pieces.log; UTC; epochs: those the piece finished, from the model's "
                  "train.log; a piece with no end line is timed to its last train.log line, a lower bound):", "",
                  "| variant | seed | start | end | outcome | wall time | epochs |", "|---|---|---|---|---|---|---|"]
        for piece in result["pieces"]:
            if piece["seconds"] is not None:
                wall = f"{piece['seconds'] / 3600:.2f} h"
            elif piece.get("seconds_at_least") is not None:
                wall = f"≥ {piece['seconds_at_least'] / 3600:.2f} h (to {piece['last_log'][11:]})"
            else:
                wall = "—"
            ep = piece.get("epochs")
            ep = "—" if ep is None else ("none" if not ep else (f"{ep[0]}" if ep[0] == ep[1] else f"{ep[0]}–{ep[1]}"))
            lines.append(f"| {piece['variant']} | {piece['seed']} | {piece['start']} | {piece['end'] or '—'} | "
                         f"{piece['outcome']} | {wall} | {ep} |")
    lines += ["", f"SacreBLEU BLEU: {result['bleu_signature']}", f"SacreBLEU chrF: {result['chrf_signature']}", "",
              "Methods (`fairseq_rela/seeds.py`): Welch's t-interval over the seeds' corpus scores (Welch 1947), the "
              "primary seed-aware interval; the pigeonhole bootstrap resamples seeds and, independently, test sentences "
              "(Owen 2007; seeds x sentences are crossed) and with two or three seeds has a poor seed part; Clark et al. (2011)'s stratified "
              "approximate randomisation (MultEval's test) pools each variant's seeds with translations; runs without "
              "translations (`committed`) enter only the Welch intervals and the spreads."]
    return "\n".join(lines) + "\n"


def plot(runs: List[Run], path: Path) -> None:
    """``curves.png``: every run's validation perplexity by update (colour: variant, line: seed), and each
    variant's over the same seed's softmax at the same update."""
    from fairseq_rela.analysis.plots import pyplot
    from fairseq_rela.cli.files import save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    soft = {r.seed: dict((int(u), p) for u, p in r.valid_curve) for r in runs if r.variant == "softmax"}
    styles = ["-", "--", ":", "-."]
    for r in runs:
        colour = ORDER.index(r.variant) if r.variant in ORDER else len(ORDER)
        style = dict(color=f"C{colour}", ls=styles[(r.seed - 1) % len(styles)], lw=1)
        axes[0].plot([u for u, _ in r.valid_curve], [p for _, p in r.valid_curve], label=f"{r.variant} seed {r.seed}",
                     **style)
        if r.variant != "softmax" and r.seed in soft:
            gap = [(u, p / soft[r.seed][int(u)]) for u, p in r.valid_curve if int(u) in soft[r.seed]]
            axes[1].plot([u for u, _ in gap], [g for _, g in gap], label=f"{r.variant} seed {r.seed}", **style)
    axes[0].set(xlabel="updates", ylabel="validation ppl (Multi30k val)", yscale="log")
    axes[1].axhline(1.0, color=f"C{ORDER.index('softmax')}", lw=0.8)
    axes[1].set(xlabel="updates", ylabel="validation ppl / same seed's softmax")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, str(path))


def write(out: Path, runs: List[Run], result: dict, text: str) -> None:
    from fairseq_rela.cli.files import write_json, write_text

    out.mkdir(parents=True, exist_ok=True)
    if (out / "results.json").exists():  # written last: until then the folder does not look complete
        (out / "results.json").unlink()
    for r in runs:
        d = out / f"{r.variant}-seed{r.seed}"
        d.mkdir(exist_ok=True)
        if r.hyps is not None:
            write_text(str(d / "test2016.hyp.en"), "".join(h + "\n" for h in r.hyps))
            r.hypotheses = f"{d.name}/test2016.hyp.en"
        src = Path(r.files or r.folder)
        stats_txt = src / "analysis" / "stats.txt" if r.source == "run" and r.files is None else src / "stats.txt"
        for name, path in (("train.log", src / "train.log"), ("stats.txt", stats_txt), ("times.txt", src / "times.txt")):
            write_text(str(d / name), path.read_text(encoding="utf-8", errors="replace"))
    write_text(str(out / "results.md"), text)
    plot(runs, out / "curves.png")
    rows = [{k: v for k, v in asdict(r).items() if k not in ("options", "hyps", "files", "bleu_recorded")} for r in runs]
    write_json({"runs": rows, **result}, str(out / "results.json"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="*", type=Path, help="model folders of multi30k.sh, or folders holding de-en-*/")
    p.add_argument("--committed", type=Path, help="a summarised run folder (results.json, de-en-V/train.log) whose "
                   "models enter as their own seed, for the variants the runs have")
    p.add_argument("--summary", type=Path, help="a folder this script wrote: its runs (translations from the "
                   "committed test2016.hyp.en, scored again) and pieces enter again; --out may be the same folder")
    p.add_argument("--refs", type=Path, default=DEFAULT_REFS, help=f"the test references (default {DEFAULT_REFS})")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--pieces", type=Path, nargs="*", default=[], help="seeds.sh's pieces.log files: the pieces "
                   "that ran, when, for how long")
    p.add_argument("--samples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--shuffles", type=int, default=10000, help="randomisation shuffles (default 10000)")
    args = p.parse_args(argv)
    try:
        if args.samples < 1 or args.shuffles < 1:
            raise InputError("--samples and --shuffles must be >= 1")
        if not args.runs and args.summary is None:
            raise InputError("no runs: give model folders, --summary, or both")
        refs = read_refs(args.refs)
        runs = [load_run(f, len(refs)) for f in expand(args.runs)]
        earlier_pieces = []
        if args.summary is not None:
            summarised, earlier_pieces = load_summary(args.summary, len(refs))
            runs += summarised
        if args.committed is not None:
            runs += load_committed(args.committed, [v for v in ORDER if any(r.variant == v for r in runs)])
        if not any(r.variant == "softmax" for r in runs):
            raise InputError("no softmax run: every variant is compared with softmax")
        check_recipe(runs)
        pieces = read_pieces(args.pieces)
        seen = {(p["variant"], p["seed"], p["start"]) for p in pieces}  # a piece logged again: the new reading
        pieces = [p for p in earlier_pieces if (p["variant"], p["seed"], p["start"]) not in seen] + pieces
        runs.sort(key=lambda r: (ORDER.index(r.variant) if r.variant in ORDER else len(ORDER), r.seed))
        result = score(runs, refs, args.samples, args.shuffles)
        check_rescored(runs)
    except InputError as err:
        sys.exit(f"{PROG}: error: {err}")
    result["pieces"] = pieces
    text = markdown(runs, result, args.samples, args.shuffles)
    from fairseq_rela.cli.files import WriteError

    try:
        write(args.out, runs, result, text)
    except (WriteError, OSError) as err:
        sys.exit(f"{PROG}: error: {err}")
    print(text, end="")


if __name__ == "__main__":
    main()
