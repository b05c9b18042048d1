"""fairseq-rela-analyze: attention weights and norms of a trained model over a data split.

    fairseq-rela-analyze DATA --path CKPT --gen-subset test --output-dir OUT [--plot-sentences 0,5]

Takes fairseq's usual data options (``--source-lang``, ``--max-tokens`` (default here 4,000),
``--batch-size``, ``--cpu``, ``--fp16``, ...) and writes ``stats.json``, ``stats.txt``, ``heads.png``
and, for chosen sentences, ``sentence-ID-KIND.png`` (weights beside norms).  With ``--gold-alignment``
it also writes the alignment-error sweep (see :mod:`fairseq_rela.analysis.sweep`); with
``--write-links`` every decoder layer's word links as Pharaoh files ``links/SOURCE-SHIFT-L{layer}.txt``
(for ``fairseq-rela-symmetrize``); with ``--value-zeroing`` value zeroing (:mod:`fairseq_rela.value_zeroing`)
beside the other sources in all of them; with ``--html`` one self-contained page ``report.html`` of all of it
(see :mod:`fairseq_rela.analysis.report`).  The run writes into a fresh
``.OUT.incomplete-*`` folder beside ``--output-dir`` and replaces ``--output-dir`` with it only when
it has finished: a folder is a whole run, never old files mixed with new, and nothing is printed
before every file is in place.  Bad options are one ``error:`` line, found before the pass over the
data; so is a damaged checkpoint (zip CRC) or one holding a non-finite or absurd value.  A non-finite
model output or record met during the pass, or a non-finite statistic, is one ``error:`` line too, and
nothing is written.
"""
import logging
import math
import numbers
import os
import re
import shutil
import sys
import tempfile
from typing import List, Optional, Set

from fairseq import options

from fairseq_rela.cli import run_quietly_on_signals
from fairseq_rela.alignment.links import MERGE_RULES, MERGE_STYLES
from fairseq_rela.attention import ATTENTION_KINDS
from fairseq_rela.checkpoint import CheckpointError
from fairseq_rela.cli.files import WriteError, save_figure, write_json, write_text
from fairseq_rela.errors import OptionError

logger = logging.getLogger("fairseq_rela.analyze")
PROG = "fairseq-rela-analyze"
DEFAULT_MAX_TOKENS = 4000  # without --max-tokens/--batch-size (fairseq would put the whole split in one batch)


def get_parser():
    parser = options.get_generation_parser(default_task="translation")
    group = parser.add_argument_group("fairseq-rela-analyze")
    group.add_argument("--output-dir", required=True, help="where to write stats.json, stats.txt and plots")
    group.add_argument("--plot-sentences", default="0", help="comma-separated sentence ids to draw (''=none)")
    group.add_argument("--plot-kinds", default=None,
                       help=f"attention kinds to draw: {','.join(ATTENTION_KINDS)} (default: cross; encoder_self for "
                            "masked LMs, which have no other)")
    group.add_argument("--no-plots", action="store_true", help="write statistics only (no PNG figures)")
    group.add_argument("--html", action="store_true",
                       help="also write report.html: one self-contained page (heatmaps of the --plot-sentences "
                            "for --plot-kinds, head overview, AER table); with --no-plots it still draws them")
    group.add_argument("--top-frequent", type=int, default=50, help="size of the 'frequent' token category")
    group.add_argument("--gold-alignment", default=None,
                       help="talp gold alignment of --gen-subset: also run the AER sweep over layers/heads")
    group.add_argument("--gold-base", type=int, default=1, help="index base of --gold-alignment (default 1)")
    group.add_argument("--eflomal-train", default=None, metavar="PREFIX",
                       help="word-level training text PREFIX.{src,tgt} for an eflomal baseline in the sweep")
    group.add_argument("--eflomal-test", default=None, metavar="PREFIX",
                       help="word-level text of --gen-subset, PREFIX.{src,tgt} (with --eflomal-train)")
    group.add_argument("--write-links", action="store_true",
                       help="also write the teacher-forced word links of every decoder layer x source (weights, "
                            "norms, block, alti, rollout-weights/-norms/-block/-alti; with --value-zeroing also value-zeroing and "
                            "rollout-value-zeroing) x shift (AWO, AWI), heads together, to OUTPUT_DIR/links/SOURCE-SHIFT-"
                            "L{layer}.txt: 0-based source-target Pharaoh lines, one per sentence of --gen-subset "
                            "in id order (input for fairseq-rela-symmetrize and fairseq-rela-aer)")
    group.add_argument("--value-zeroing", action="store_true",
                       help="also measure value zeroing (Mohebbi et al. 2023) of every attention: each layer is rerun "
                            "once per key token with its value vector zeroed (batched; the pass then costs about "
                            "source length x a plain one); adds value-zeroing and rollout-value-zeroing to the "
                            "statistics, the sweep, --write-links and report.html")
    group.add_argument("--merge-subwords", choices=["auto", *MERGE_STYLES], default="auto",
                       help="merge subwords into words before scoring (auto: detected from the dictionaries)")
    group.add_argument("--merge-rule", choices=list(MERGE_RULES), default="sum_mean",
                       help="sum_mean: source subwords summed, target subwords averaged (Kobayashi et al.); "
                            "any: words linked if any of their subwords are")
    return parser


def _fail(message: str):
    raise SystemExit(f"{PROG}: error: {message}")


def _csv(value: str) -> List[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def check_options(args) -> Set[int]:
    """Every option value that needs no model, checked first; returns the sentence ids to draw."""
    bad = [k for k in _csv(args.plot_kinds or "") if k not in ATTENTION_KINDS]
    if bad:
        _fail(f"--plot-kinds: unknown value {bad[0]!r}; choose from {','.join(ATTENTION_KINDS)}")
    if bool(args.eflomal_train) != bool(args.eflomal_test) or (args.eflomal_train and not args.gold_alignment):
        _fail("--eflomal-train and --eflomal-test go together, with --gold-alignment")
    ids = _csv(args.plot_sentences)
    if not all(i.isascii() and i.isdigit() for i in ids):
        _fail(f"--plot-sentences {args.plot_sentences!r}: expected comma-separated sentence ids (0-based)")
    twice = sorted({i for i in ids if ids.count(i) > 1}, key=int)
    if twice:
        _fail(f"--plot-sentences {args.plot_sentences!r}: sentence {twice[0]} named twice")
    if args.top_frequent < 0:
        _fail(f"--top-frequent {args.top_frequent}: expected a number >= 0")
    missing = [p for p in (args.data or "").split(":") if p and "://" not in args.data and not os.path.isdir(p)]
    if missing:
        _fail(f"DATA {args.data}: no such folder ({missing[0]})")
    try:  # fairseq evaluates it as Python (checkpoint_utils); a slip here is not the checkpoint's fault
        overrides = eval(args.model_overrides)
    except Exception as err:
        _fail(f"--model-overrides {args.model_overrides}: not a Python dict ({type(err).__name__}: {err})")
    if not isinstance(overrides, dict):
        _fail(f"--model-overrides {args.model_overrides}: not a Python dict ({type(overrides).__name__})")
    if not args.no_plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            _fail("plots need matplotlib: pip install matplotlib (or pass --no-plots)")
    return {int(i) for i in ids} if not args.no_plots or args.html else set()


OUTPUT_NAME = re.compile(r"(stats\.(json|txt)|heads\.png|report\.html|alignment\.(json|txt|png)|sentence-\d+-\w+\.png"
                         r"|links)")


def stage_output(output_dir: str) -> str:
    """Check ``output_dir`` can be written (before any work) and make the folder the run writes into:
    a fresh ``.NAME.incomplete-*`` folder beside it, moved into place by :func:`publish_output`."""
    out = os.path.realpath(output_dir)  # a symlink: its target, the link stays
    if os.path.exists(out) and not os.path.isdir(out):
        _fail(f"--output-dir {output_dir}: exists and is not a folder")
    if os.path.isdir(out):
        other = sorted(n for n in os.listdir(out) if not OUTPUT_NAME.fullmatch(n))
        if other:
            _fail(f"--output-dir {output_dir}: holds files that are not fairseq-rela-analyze outputs "
                  f"({other[0]!r}{', ...' if len(other) > 1 else ''}); the folder is replaced as a whole: "
                  "choose a new or empty folder")
    parent = os.path.dirname(out)
    try:
        os.makedirs(parent, exist_ok=True)
        return tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out)}.incomplete-")
    except OSError as err:
        _fail(f"--output-dir {output_dir}: cannot write there ({err.strerror or err})")


def publish_output(staging: str, output_dir: str) -> None:
    """Replace ``output_dir`` (a previous run's outputs, if any) with the finished ``staging`` folder."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(staging, 0o777 & ~mask)
    out = os.path.realpath(output_dir)  # a symlink: its target, the link stays
    if os.path.isdir(out):
        old = staging.replace(".incomplete-", ".old-")
        os.rename(out, old)
        os.rename(staging, out)
        shutil.rmtree(old)
    else:
        os.rename(staging, out)


def build_sweep(args, task, dataset):
    """The alignment sweep of ``--gold-alignment`` (with the eflomal baseline when asked); without a gold
    set, the links alone (``--write-links``)."""
    from fairseq_rela.alignment.aer import AlignmentFileError, read_gold
    from fairseq_rela.alignment.links import merge_styles
    from fairseq_rela.analysis.sweep import AlignmentSweep, LinkSweep

    try:  # e.g. --merge-subwords sentencepiece on a dictionary without ▁ pieces
        src_style, tgt_style = merge_styles(args.merge_subwords, task.source_dictionary, task.target_dictionary,
                                            "--merge-subwords")
    except OptionError as err:
        _fail(str(err))
    if not args.gold_alignment:
        return LinkSweep(src_style, tgt_style, args.merge_rule, per_head=False)
    try:
        gold = read_gold(args.gold_alignment, args.gold_base)
    except (AlignmentFileError, OSError) as err:
        _fail(f"--gold-alignment: {err}")
    if len(gold) != len(dataset):
        _fail(f"{args.gold_alignment} has {len(gold)} lines but --gen-subset {args.gen_subset} has "
              f"{len(dataset)} sentences")
    baselines = None
    if args.eflomal_train:
        from fairseq_rela.alignment.eflomal import eflomal_alignments

        baselines = eflomal_alignments(*read_eflomal_text(args, task, len(gold)))
    return AlignmentSweep(gold, os.path.abspath(args.gold_alignment), src_style, tgt_style, args.merge_rule, baselines)


def read_eflomal_text(args, task, sentences: int) -> List[List[str]]:
    """The word-level text of ``--eflomal-train`` and ``--eflomal-test`` (train source, train target, test
    source, test target) in the languages of the task (fairseq infers them from DATA when
    ``--source-lang``/``--target-lang`` are not given); a missing file or a line count that does not fit is
    one ``error:`` line, before eflomal runs."""
    from fairseq_rela.alignment.aer import AlignmentFileError, read_sentences
    from fairseq_rela.alignment.io import read_lines

    src, tgt = task.cfg.source_lang, task.cfg.target_lang
    option = "--eflomal-train"
    try:
        train_src = read_lines(f"{args.eflomal_train}.{src}")
        text = [train_src, read_sentences(f"{args.eflomal_train}.{tgt}", len(train_src), f"{args.eflomal_train}.{src}")]
        option = "--eflomal-test"
        for lang in (src, tgt):
            text.append(read_sentences(f"{args.eflomal_test}.{lang}", sentences,
                                       f"--gold-alignment {args.gold_alignment}"))
    except AlignmentFileError as err:
        _fail(f"{option}: {err}")
    except OSError as err:
        _fail(f"{option}: cannot read {err.filename} ({err.strerror or err})")
    return text


def write_links(sweep, sentences: int, folder: str) -> int:
    """``folder/SOURCE-SHIFT-L{layer}.txt`` for every layer-level configuration of ``sweep``; the count."""
    from fairseq_rela.alignment.io import pharaoh_line

    configs = sorted((c for c in sweep.hyps if c.head is None), key=lambda c: (c.source, c.shift, c.layer))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise WriteError(folder, err.strerror or str(err)) from err
    for c in configs:
        lines = (pharaoh_line(links) + "\n" for links in sweep.links(c, sentences))
        write_text(os.path.join(folder, f"{c.source}-{c.shift}-L{c.layer}.txt"), "".join(lines))
    return len(configs)


def _check_direction(args, task) -> None:
    """The task keeps the checkpoint's languages (they say which side the encoder reads): a --source-lang or
    --target-lang that names the other side is an error, not silently ignored (with a joined dictionary
    nothing else would tell a reversed direction)."""
    src, tgt = getattr(task.cfg, "source_lang", None), getattr(task.cfg, "target_lang", None)
    given_langs = getattr(args, "source_lang", None), getattr(args, "target_lang", None)  # a masked_lm task has none
    for flag, given, have in zip(("--source-lang", "--target-lang"), given_langs, (src, tgt)):
        if given and have and given != have:
            _fail(f"{flag} {given}: the checkpoint translates {src} -> {tgt} (its task's languages); leave "
                  "--source-lang/--target-lang out, or pass a checkpoint trained in the direction you name")


def _check_data_direction(args, task) -> None:
    """The checkpoint's direction against the direction DATA's split was binarised in (``SPLIT.SRC-TGT.*``):
    fairseq reads a split binarised the other way round reversed, so a de->en split analysed with an en->de
    checkpoint is measured en->de.  With ``--gold-alignment``/``--write-links`` (the gold and links of the
    data's direction) that is one ``error:`` line; the statistics alone only warn."""
    from fairseq import utils

    src, tgt = getattr(task.cfg, "source_lang", None), getattr(task.cfg, "target_lang", None)
    data = getattr(task.cfg, "data", None)
    if not (src and tgt and data):
        return
    folder = utils.split_paths(data)[0]
    ours = os.path.exists(os.path.join(folder, f"{args.gen_subset}.{src}-{tgt}.{src}.idx"))
    theirs = os.path.exists(os.path.join(folder, f"{args.gen_subset}.{tgt}-{src}.{src}.idx"))
    if ours or not theirs:
        return
    what = (f"the checkpoint translates {src} -> {tgt}, but {folder} holds --gen-subset {args.gen_subset} "
            f"binarised as {tgt} -> {src} ({args.gen_subset}.{tgt}-{src}.*), which fairseq then reads reversed")
    if args.gold_alignment or args.write_links:
        _fail(f"{what}; {'--gold-alignment' if args.gold_alignment else '--write-links'} follows the data's "
              f"direction ({tgt}-{src}): analyse with a {tgt} -> {src} checkpoint")
    logger.warning("%s: the statistics are those of %s -> %s", what, src, tgt)


def _load(args, device):
    from fairseq_rela.analysis.runner import UnsupportedModelError, load_checkpoint

    try:
        return load_checkpoint(args.path, data=args.data, device=device, fp16=args.fp16, bf16=args.bf16,
                               **eval(args.model_overrides))
    except SystemExit:
        raise
    except UnsupportedModelError as err:  # a model without attention we can analyse (LSTM, language model, ...)
        _fail(f"--path {args.path}: {err}")
    except CheckpointError as err:  # damaged (zip CRC, truncated) or a non-finite / absurd parameter
        _fail(f"--path {args.path}: {err}")
    except Exception as err:  # a checkpoint that cannot be used, whatever torch/fairseq raise for it
        text = str(err)
        if "size mismatch" in text:
            _fail(f"--path {args.path}: its embeddings do not fit the dictionaries in {args.data} "
                  "(size mismatch): was it trained on other data?")
        lines = [line.strip() for line in text.splitlines() if line.strip()] or [type(err).__name__]
        first = " ".join(lines[:2])  # torch's "Error(s) in loading state_dict": the first missing/unexpected keys
        _fail(f"--path {args.path}: cannot load the checkpoint ({type(err).__name__}: "
              f"{first if len(first) <= 300 else first[:300] + '...'})")


def binding_limit(model, task, max_positions):
    """Which length limit binds the analysis, and what can be done about it: ``(limit, advice)``.  The model's
    own limit (the positions it was trained with) cannot be raised by an option; a lower
    ``--max-source-positions``/``--max-target-positions`` can, up to the model's."""
    from fairseq_rela.analysis.runner import position_limits

    own, used = position_limits(model, task), position_limits(model, task, max_positions)
    shown = (lambda lim: f"{lim[0]} source / {lim[1]} target positions" if isinstance(lim, tuple)
             else f"{lim} positions")
    if used == own:
        return (f"the checkpoint's {shown(own)}",
                "that limit is the checkpoint's own (its max_source_positions/max_target_positions): no option of "
                f"{PROG} raises it, so those sentences cannot be analysed with this checkpoint; leave them out of "
                "--gen-subset")
    flags = [f"{flag} {mine}" for flag, mine, theirs in zip(("--max-source-positions", "--max-target-positions"),
                                                             used, own) if mine < theirs]
    return (" / ".join(flags), f"raise {' and '.join(f.split()[0] for f in flags)} (the checkpoint takes up to "
                               f"{shown(own)})")


def non_finite(value, where: str = "") -> Optional[str]:
    """Where (``attention.cross.0.sparsity_mean``) the first NaN or inf sits in a JSON-like result, else None."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        finite = not isinstance(value, numbers.Real) or isinstance(value, bool) or math.isfinite(value)
        return None if finite else where or "."
    for key, item in items:
        found = non_finite(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def main(args) -> dict:
    plot_ids = check_options(args)
    staging = stage_output(args.output_dir)
    printed: List[str] = []
    try:
        result = analyse(args, staging, plot_ids, printed)
        publish_output(staging, args.output_dir)
    except WriteError as err:  # a full disk, say: the staging folder goes, nothing was published or printed
        shutil.rmtree(staging, ignore_errors=True)
        name = os.path.relpath(err.path, staging) if err.path.startswith(staging) else err.path
        _fail(f"--output-dir {args.output_dir}: cannot write {name} ({err.reason}); nothing was written")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for text in printed:  # only once every file is in place
        print(text)
    return result


def _check_finite(args, what: str, value) -> None:
    where = non_finite(value)
    if where:
        _fail(f"--path {args.path}: {what} {where} is not finite; nothing was written")


def analyse(args, output_dir: str, plot_ids: Set[int], printed: List[str]) -> dict:
    """Run the analysis, writing into ``output_dir``; what to print goes to ``printed``."""
    import torch
    from tqdm import tqdm

    from fairseq_rela.alignment.io import AlignmentFileError
    from fairseq_rela.analysis.report import link_overlay, render_report, sentence_data
    from fairseq_rela.analysis.runner import (check_task, is_masked_lm, iter_sentences, load_split, precision,
                                              trained_updates)
    from fairseq_rela.analysis.statistics import AttentionStatistics, format_table, frequent_tokens
    from fairseq_rela.analysis.sweep import format_sweep

    device = "cpu" if args.cpu or not torch.cuda.is_available() else "cuda"
    model, task = _load(args, device)
    try:
        check_task(model, task, args.task)
    except OptionError as err:  # a masked LM with a translation task, or the other way round: "--task X: ..."
        _fail(str(err))
    _check_direction(args, task)
    _check_data_direction(args, task)
    kinds = _csv(args.plot_kinds or ("encoder_self" if is_masked_lm(model) else "cross"))
    if is_masked_lm(model) and kinds != ["encoder_self"]:
        _fail(f"--plot-kinds {args.plot_kinds}: a masked LM has only encoder_self attention")
    if is_masked_lm(model) and (args.gold_alignment or args.write_links):
        _fail(f"{'--gold-alignment' if args.gold_alignment else '--write-links'}: a masked LM has no "
              "cross-attention to align")
    try:
        dataset = load_split(task, args.gen_subset)
    except (OSError, FileNotFoundError) as err:
        _fail(f"--gen-subset {args.gen_subset}: {err}")
    beyond = sorted(i for i in plot_ids if i >= len(dataset))
    if beyond:
        _fail(f"--plot-sentences: sentence {beyond[0]} does not exist; --gen-subset {args.gen_subset} "
              f"has sentences 0..{len(dataset) - 1}")
    stats = AttentionStatistics(frequent_tokens(task.source_dictionary, args.top_frequent),
                                frequent_tokens(task.target_dictionary, args.top_frequent))
    sweep = build_sweep(args, task, dataset) if args.gold_alignment or args.write_links else None
    max_positions = (getattr(args, "max_source_positions", None), getattr(args, "max_target_positions", None))
    max_tokens = args.max_tokens if args.max_tokens or args.batch_size else DEFAULT_MAX_TOKENS
    sentences = iter_sentences(model, task, dataset=dataset, max_tokens=max_tokens, batch_size=args.batch_size,
                               max_positions=max_positions,
                               skip_invalid=args.skip_invalid_size_inputs_valid_test, value_zeroing=args.value_zeroing)
    seen, plotted, report_sentences = 0, set(), []
    try:
        for sent in tqdm(sentences, total=len(dataset), desc="analyse", disable=args.no_progress_bar,
                         file=sys.stderr):
            seen += 1
            stats.update(sent)
            if sweep is not None:
                sweep.update(sent)
            if sent.id in plot_ids:
                plotted.add(sent.id)
                if args.html:
                    report_sentences.append(sentence_data(sent, kinds))
                if not args.no_plots:
                    from fairseq_rela.analysis.plots import plot_weight_vs_norm

                    for kind in kinds:
                        save_figure(plot_weight_vs_norm(sent, kind),
                                    os.path.join(output_dir, f"sentence-{sent.id}-{kind}.png"))
    except CheckpointError as err:  # a non-finite output or record: nothing is measured from it
        _fail(f"--path {args.path}: {err}; nothing was written")
    except AlignmentFileError as err:  # a gold link outside its sentence (the sweep checks every sentence)
        _fail(f"--gold-alignment: {err}; nothing was written")
    except Exception as err:
        if re.search(r"exceeds? max_tokens", str(err)):  # fairseq asserts every sentence fits --max-tokens
            _fail(f"--max-tokens {max_tokens}: {str(err).strip().splitlines()[0]}")
        if "skip-invalid-size-inputs-valid-test" not in str(err):
            raise
        _fail(f"--gen-subset {args.gen_subset}: {str(err).strip().splitlines()[0]} "
              f"({binding_limit(model, task, max_positions)[1]})")
    skipped = len(dataset) - seen
    if skipped:
        limit, why = binding_limit(model, task, max_positions)
        logger.warning("%d of %d sentences skipped (longer than %s, --skip-invalid-size-inputs-valid-test): %s",
                       skipped, len(dataset), limit, why)
        if sweep is not None:
            needs = "the alignment sweep needs every sentence of --gold-alignment" if args.gold_alignment else \
                "--write-links writes a line for every sentence"
            _fail(f"{skipped} sentences skipped by --skip-invalid-size-inputs-valid-test (longer than {limit}); "
                  f"{needs}: {why}")
    for i in sorted(plot_ids - plotted):
        logger.warning("--plot-sentences: sentence %d was skipped, not drawn", i)
    result = stats.result()
    result["checkpoint"], result["subset"] = os.path.abspath(args.path), args.gen_subset
    result["skipped_sentences"] = skipped
    result["num_updates"] = trained_updates(args.path)
    result["attention_activation"] = getattr(model.args, "attention_activation", None)
    result["precision"] = precision(model)  # --fp16: float16, --bf16: bfloat16 (on the CPU too), else float32
    _check_finite(args, "the statistic", result)
    write_json(result, os.path.join(output_dir, "stats.json"))
    table = format_table(result)
    write_text(os.path.join(output_dir, "stats.txt"), table + "\n")
    printed.append(table)
    title = f"{result['attention_activation']}: {os.path.basename(args.path)}"
    if not args.no_plots:
        from fairseq_rela.analysis.plots import plot_head_heatmaps

        save_figure(plot_head_heatmaps(result, title=title), os.path.join(output_dir, "heads.png"))
    out = None
    if args.write_links:
        written = write_links(sweep, len(dataset), os.path.join(output_dir, "links"))
        printed.append(f"links: {written} Pharaoh files of {len(dataset)} sentences in "
                       f"{os.path.join(args.output_dir, 'links')}")
    if args.gold_alignment:
        swept = sweep.result()
        out = swept.to_json()
        _check_finite(args, "the alignment score", out)
        write_json(out, os.path.join(output_dir, "alignment.json"))
        text = format_sweep(out)
        write_text(os.path.join(output_dir, "alignment.txt"), text + "\n")
        printed.append("\n" + text)  # a blank line between the statistics' legend and the AER table
        if not args.no_plots:
            from fairseq_rela.analysis.plots import plot_sweep

            save_figure(plot_sweep(out), os.path.join(output_dir, "alignment.png"))
        if args.html:  # gold and best-layer links of the drawn sentences, on their cross-attention maps
            best, _ = swept.best(per_head=False)
            for data in report_sentences:
                gold = sweep.gold[data["id"]]
                link_overlay(data, gold.sure, gold.possible, sweep.hyps[best][data["id"]], out["best_layer"]["config"],
                             best.shift, sweep.src_style, sweep.tgt_style)
        result["alignment"] = out
    if args.html:
        report_sentences.sort(key=lambda d: d["id"])
        write_text(os.path.join(output_dir, "report.html"), render_report(result, report_sentences, out, title=title))
    return result


def resolve_user_dir(argv: List[str]) -> List[str]:
    """``argv`` with a ``--user-dir`` that is this very package (a symlink to it, another spelling) rewritten
    to the package's own path, which fairseq's loader then finds imported already.  Another copy of
    ``fairseq_rela`` (another checkout) is one ``error:`` line: this command analyses with the copy it is
    part of, and fairseq cannot load a second package of the same name ("not globally unique")."""
    import fairseq_rela

    here = os.path.abspath(fairseq_rela.__path__[0])
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--user-dir" and i + 1 < len(out):
            at, value = i + 1, out[i + 1]
        elif arg.startswith("--user-dir="):
            at, value = i, arg.split("=", 1)[1]
        else:
            continue
        import fairseq

        fairseq_dir = os.path.dirname(fairseq.__file__)  # fairseq also reads --user-dir relative to itself
        if not any(os.path.exists(p) for p in (value, os.path.join(fairseq_dir, value),
                                               os.path.join(fairseq_dir, "..", value))):
            _fail(f"--user-dir {value}: no such folder (the plugin's folder is {here})")
        if os.path.realpath(value) == os.path.realpath(here):
            out[at] = here if at != i else f"--user-dir={here}"
        elif os.path.basename(os.path.normpath(os.path.abspath(value))) == "fairseq_rela":
            _fail(f"--user-dir {value}: {PROG} is part of the fairseq_rela in {here} and analyses with that copy; "
                  f"leave --user-dir out (or pass {here}), or run the {PROG} of the environment "
                  f"{value} is installed in")
    return out


def cli_main() -> None:
    # force: importing fairseq has already configured the root logger at DEBUG (fairseq's wav2vec2 modules
    # call logging.basicConfig), so a plain basicConfig would do nothing; WARNING keeps fairseq's and
    # matplotlib's INFO/DEBUG chatter out and this tool's warnings in
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.WARNING,
                        force=True)
    sys.argv[1:] = resolve_user_dir(sys.argv[1:])  # before fairseq's parser imports --user-dir
    parser = get_parser()
    try:
        args = options.parse_args_and_arch(parser)
    except ValueError as err:  # fairseq's "Cannot combine --fp16 and --tpu" (--bf16 sets --tpu)
        if "--fp16" not in str(err):
            raise
        _fail("--fp16 and --bf16: choose one precision")
    if not args.path:
        parser.error("--path is required")
    run_quietly_on_signals(main, args)  # the staging folder is removed as on any failure


if __name__ == "__main__":
    cli_main()
