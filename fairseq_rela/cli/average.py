"""fairseq-rela-average: average the parameters of fairseq checkpoints (fairseq's
``scripts/average_checkpoints.py`` is not in the pip package).

    fairseq-rela-average --inputs a.pt b.pt c.pt --output avg.pt
    fairseq-rela-average --inputs SAVE_DIR --last 5 --output avg.pt     # newest 5 by update (or epoch)
    fairseq-rela-average --inputs SAVE_DIR --last 5 --kind epoch --output avg.pt

Every floating-point tensor of ``model`` becomes the mean over the inputs (summed in float64, stored in
the inputs' dtype); integer tensors must agree across inputs.  The other fields (options, optimizer
history, extra state) are the newest input's, as in fairseq's script.  Checkpoints load with
``weights_only=True`` (the plugin allow-lists what fairseq checkpoints hold).  The output is written
to a temporary file and renamed into place, so a half-written file never looks complete.

Only checkpoints of the same model are combined: every model option (``--arch`` and each option of
``cfg.model``: activation, ReLA variant, dimensions, layers, dropout, ...) must agree, except those named
with ``--ignore-option NAME``, and so must the task's language pair (``source_lang``, ``target_lang``; a
different data path is only a warning); a disagreement is one line naming the option and both values.  A
file listed twice is refused (it would count double), and so is an ``--output`` that is one of the inputs
(the same path, a symlink or a hard link).  Every input
is checked whole (zip CRC) and every value finite and sane (:mod:`fairseq_rela.checkpoint`), the output too.
"""
import argparse
import logging
import os
import re
import sys
import zipfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import torch

from fairseq_rela.checkpoint import (CheckpointError, allow_fairseq_checkpoints, check_tensors, first_line,
                                     verify_file)
from fairseq_rela.cli.files import write_binary

allow_fairseq_checkpoints()  # fairseq checkpoint globals for weights_only loading

PROG = "fairseq-rela-average"
logger = logging.getLogger(PROG)
_UPDATE = re.compile(r"^checkpoint_\d+_(\d+)\.pt$")
_EPOCH = re.compile(r"^checkpoint(\d+)\.pt$")


class AverageError(Exception):
    """Bad input: reported as one line."""


#: the kinds of checkpoint ``--last`` picks from: name, its pattern (the number it is ordered by), as shown
KINDS = {"update": (_UPDATE, "checkpoint_E_U.pt"), "epoch": (_EPOCH, "checkpointE.pt")}


def last_checkpoints(save_dir: Path, n: int, kind: Optional[str] = None) -> List[Path]:
    """The ``n`` newest checkpoints of ``kind`` in ``save_dir``: ``update`` (``checkpoint_E_U.pt``, by update)
    or ``epoch`` (``checkpointE.pt``, by epoch); None: by update where the folder holds any, else by epoch
    (a warning names the other kind when it holds both)."""
    if not save_dir.is_dir():
        raise AverageError(f"{save_dir}: {'not a directory' if save_dir.exists() else 'no such directory'} (--last N "
                           "takes one save directory as --inputs)")
    found = {k: sorted((int(m.group(1)), p) for p in save_dir.iterdir() if (m := pattern.match(p.name)))
             for k, (pattern, _) in KINDS.items()}
    if kind is None:
        kind = "update" if found["update"] or not found["epoch"] else "epoch"
        if found["update"] and found["epoch"]:
            logger.warning(f"{save_dir} holds {len(found['update'])} checkpoint_E_U.pt and {len(found['epoch'])} "
                           "checkpointE.pt: averaging the newest checkpoint_E_U.pt (by update; --kind epoch for the "
                           "others)")
    other = "epoch" if kind == "update" else "update"
    chosen, shown = found[kind], KINDS[kind][1]
    if len(chosen) < n:
        also = (f"; it also holds {len(found[other])} {KINDS[other][1]} (--kind {other})" if found[other] else "")
        raise AverageError(f"{save_dir}: {len(chosen) or 'no'} {shown} file{'' if len(chosen) == 1 else 's'}, "
                           f"--last {n} asks for {n}{also}")
    return [p for _, p in chosen[-n:]]


def load(path: Path) -> Dict:
    """The checkpoint at ``path``, checked whole (zip CRC); its tensors memory-mapped when the file is a
    zip archive (torch's format since 1.6)."""
    if not path.is_file():
        raise AverageError(f"{path}: no such checkpoint")
    try:
        verify_file(str(path))
    except CheckpointError as err:
        raise AverageError(f"{path}: {err}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as err:  # a foreign file: torch raises many kinds
        raise AverageError(f"{path}: cannot load as a checkpoint ({type(err).__name__}: {first_line(err)})")
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise AverageError(f"{path}: not a fairseq checkpoint (no 'model' state dict)")
    return state


def check_finite(path, model: Dict) -> None:
    try:
        check_tensors(model.items())
    except CheckpointError as err:
        raise AverageError(f"{path}: {err}") from None


def _as_dict(options) -> Dict:
    if options is None:
        return {}
    return dict(vars(options)) if isinstance(options, argparse.Namespace) else dict(options)


def model_options(state: Dict) -> Dict[str, object]:
    """The model's options recorded in a checkpoint: ``cfg.model`` (fairseq >= 0.10; for an architecture
    registered without a dataclass it holds every command-line option, so the options of the other
    config groups (task, optimizer, checkpoint, ...) and the groups' names are left out), or, for older
    checkpoints, the ``args`` fairseq would convert the same way.  Empty when the file records none."""
    cfg = _config(state)
    options = _as_dict(cfg.get("model"))
    others = set(cfg) - {"model"}
    for group, values in cfg.items():
        if group != "model" and isinstance(values, (dict, argparse.Namespace)):
            others |= set(_as_dict(values))
    model = {k: v for k, v in options.items() if k not in others}
    arch = options.get("arch", options.get("_name"))  # _name: the arch (legacy) or the model (dataclass models)
    return dict(model, arch=arch) if arch is not None else model


TASK_OPTIONS = ("source_lang", "target_lang")  # the direction: a de->en and an en->de model never average


def _config(state: Dict) -> Dict:
    """The checkpoint's ``cfg`` as a dict of groups (older checkpoints: converted from ``args``)."""
    cfg = state.get("cfg")
    if cfg is None and state.get("args") is not None:
        from fairseq.dataclass.utils import convert_namespace_to_omegaconf
        from omegaconf import OmegaConf

        import fairseq_rela.models  # noqa: F401  (registers the rela architectures for the conversion)

        cfg = OmegaConf.to_container(convert_namespace_to_omegaconf(state["args"]))
    return cfg if isinstance(cfg, dict) else {}


def task_options(state: Dict) -> Dict[str, object]:
    """The task options that make two models incomparable (:data:`TASK_OPTIONS`), as ``cfg.task`` records them."""
    task = _as_dict(_config(state).get("task"))
    return {k: task[k] for k in TASK_OPTIONS if k in task}


class _Unset:
    def __repr__(self):
        return "not set"


UNSET = _Unset()  # an option one checkpoint records and the other does not


def check_same_model(paths: Sequence[Path], states: Sequence[Dict], ignore: Iterable[str]) -> None:
    """AverageError naming the first model option (``arch`` first), then task option (:data:`TASK_OPTIONS`:
    the language pair), on which an input differs from the first input, leaving out the options in
    ``ignore``; an ignored name no input has is an error too.  A different data path is only a warning
    (a moved data folder)."""
    ignore = set(ignore)
    groups = (("model", [model_options(s) for s in states]), ("task", [task_options(s) for s in states]))
    unknown = sorted(ignore - set().union(*(o for _, options in groups for o in options)))
    if unknown:
        raise AverageError(f"--ignore-option {unknown[0]}: no input checkpoint has a model or task option of that name")
    for group, options in groups:
        first = options[0]
        for path, opts in zip(paths[1:], options[1:]):
            names = sorted(set(first) | set(opts), key=lambda k: (k != "arch", k))
            for name in names:
                a, b = first.get(name, UNSET), opts.get(name, UNSET)
                if name not in ignore and a != b:
                    raise AverageError(f"{path}: {group} option {name} is {b!r} but {paths[0]} has {a!r}: only "
                                       f"checkpoints of the same model are averaged (--ignore-option {name} to "
                                       "average anyway)")
    data = [_as_dict(_config(s).get("task")).get("data") for s in states]
    for path, other in zip(paths[1:], data[1:]):
        if other != data[0]:
            logger.warning(f"{path} was trained on data {other!r}, {paths[0]} on {data[0]!r}: averaged (same "
                           "model and language pair)")


def check_distinct(paths: Sequence[Path]) -> None:
    """AverageError when one file is listed twice (it would count double)."""
    seen = {}
    for path in paths:
        real = os.path.realpath(path)
        if real in seen:
            raise AverageError(f"{path}: listed twice (also as {seen[real]}); each checkpoint counts once")
        seen[real] = path


def check_output_not_input(output: Path, paths: Sequence[Path]) -> None:
    """AverageError when ``output`` is one of the inputs (the same path, a symlink to it or a hard link of
    it): writing it would replace an input."""
    for path in paths:
        same = os.path.realpath(output) == os.path.realpath(path)
        try:
            same = same or os.path.samefile(output, path)
        except OSError:  # one of them does not exist (yet)
            pass
        if same:
            raise AverageError(f"--output {output} is the input {path}: writing it would replace that checkpoint; "
                               "choose another --output")


def average(paths: List[Path], ignore: Iterable[str] = ()) -> Dict:
    """The checkpoint whose model parameters are the mean of those of ``paths``; other fields from the last.
    The inputs must be of the same model (:func:`check_same_model`), whole and finite."""
    if not paths:
        raise AverageError("no input checkpoints")
    check_distinct(paths)
    states = [load(path) for path in paths]  # tensors memory-mapped: cheap until read
    check_same_model(paths, states, ignore)
    for path, state in zip(paths, states):
        check_finite(path, state["model"])
    first_model = states[0]["model"]
    sums = {k: v.to(torch.float64).clone() for k, v in first_model.items() if v.is_floating_point()}
    for path, state in zip(paths[1:], states[1:]):
        model = state["model"]
        if set(model) != set(first_model):
            diff = sorted(set(model) ^ set(first_model))[:3]
            raise AverageError(f"{path}: parameters differ from {paths[0]} ({', '.join(diff)} ...)")
        for k, v in model.items():
            if v.shape != first_model[k].shape:
                raise AverageError(f"{path}: {k} has shape {tuple(v.shape)}, {paths[0]} has {tuple(first_model[k].shape)}")
            if k in sums:
                sums[k] += v.to(torch.float64)
            elif not torch.equal(v, first_model[k]):
                raise AverageError(f"{path}: integer tensor {k} differs from {paths[0]}")
    state = states[-1]
    state["model"] = {k: (sums[k] / len(paths)).to(v.dtype) if k in sums else v for k, v in first_model.items()}
    check_finite("the average", state["model"])
    return state


def save_atomic(state: Dict, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    write_binary(str(output), lambda f: torch.save(state, f))


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Average the parameters of fairseq checkpoints.")
    p.add_argument("--inputs", nargs="+", required=True, help="checkpoint files, or one save directory with --last")
    p.add_argument("--last", type=int, help="average the newest N checkpoints of the directory given as --inputs")
    p.add_argument("--kind", choices=sorted(KINDS), help="with --last: update (checkpoint_E_U.pt, by update) or "
                   "epoch (checkpointE.pt, by epoch); default: update where the directory holds any, else epoch")
    p.add_argument("--output", required=True, help="averaged checkpoint to write")
    p.add_argument("--ignore-option", action="append", default=[], metavar="NAME",
                   help="average even if the inputs' model option NAME differs (as in cfg.model, e.g. dropout; "
                        "repeatable); all other model options must agree")
    return p


def cli_main(argv=None) -> None:
    # force: an import of fairseq (old checkpoints' options) would otherwise leave its DEBUG root logger
    logging.basicConfig(format="%(levelname)s | %(name)s | %(message)s", level=logging.WARNING, force=True)
    parser = get_parser()
    args = parser.parse_args(argv)
    inputs = [Path(p) for p in args.inputs]
    try:
        if args.last is not None:
            if args.last < 1:
                parser.error("--last must be >= 1")
            if len(inputs) != 1:
                parser.error("--last takes one save directory as --inputs")
            inputs = last_checkpoints(inputs[0], args.last, args.kind)
        elif any(p.is_dir() for p in inputs):
            parser.error("a directory as --inputs needs --last N")
        elif args.kind is not None:
            parser.error("--kind goes with --last")
        output = Path(args.output)
        if output.is_dir():
            raise AverageError(f"{output}: is a directory, --output names a file")
        if output.exists() and not output.is_file():
            raise AverageError(f"{output}: exists and is not a regular file; --output names a checkpoint file")
        if not os.access(output.parent if output.parent.exists() else Path("."), os.W_OK):
            raise AverageError(f"{output}: cannot write there")
        check_output_not_input(output, inputs)
        ignore = [name.lstrip("-").replace("-", "_") for name in args.ignore_option]
        state = average(inputs, ignore)
        save_atomic(state, output)
    except (AverageError, OSError) as err:
        sys.exit(f"{PROG}: error: {err}")
    print(f"{PROG}: averaged {len(inputs)} checkpoints ({', '.join(str(p) for p in inputs)}) into {output}")


if __name__ == "__main__":
    cli_main()
