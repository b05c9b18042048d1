"""fairseq-rela-average: average the parameters of fairseq checkpoints (fairseq's
``scripts/average_checkpoints.py`` is not in the pip package).

    fairseq-rela-average --inputs a.pt b.pt c.pt --output avg.pt
    fairseq-rela-average --inputs SAVE_DIR --last 5 --output avg.pt     # newest 5 by update (or epoch)

Every floating-point tensor of ``model`` becomes the mean over the inputs (summed in float64, stored in
the inputs' dtype); integer tensors must agree across inputs.  The other fields (options, optimizer
history, extra state) are the newest input's, as in fairseq's script.  Checkpoints load with
``weights_only=True`` (the plugin allow-lists what fairseq checkpoints hold).  The output is written
to a temporary file and renamed into place, so a half-written file never looks complete.
"""
import argparse
import os
import re
import sys
from pathlib import Path
from typing import Dict, List

import torch

from fairseq_rela.checkpoint import allow_fairseq_checkpoints
from fairseq_rela.cli.files import write_atomic

allow_fairseq_checkpoints()  # fairseq checkpoint globals for weights_only loading

PROG = "fairseq-rela-average"
_UPDATE = re.compile(r"^checkpoint_\d+_(\d+)\.pt$")
_EPOCH = re.compile(r"^checkpoint(\d+)\.pt$")


class AverageError(Exception):
    """Bad input: reported as one line."""


def last_checkpoints(save_dir: Path, n: int) -> List[Path]:
    """The ``n`` newest ``checkpoint_E_U.pt`` (by update) in ``save_dir``, else the newest ``checkpointE.pt``."""
    if not save_dir.is_dir():
        raise AverageError(f"{save_dir}: no such directory")
    for pattern in (_UPDATE, _EPOCH):
        found = sorted((int(m.group(1)), p) for p in save_dir.iterdir() if (m := pattern.match(p.name)))
        if found:
            if len(found) < n:
                raise AverageError(f"{save_dir}: {len(found)} checkpoints of the kind {pattern.pattern}, --last {n} "
                                   "asked for more")
            return [p for _, p in found[-n:]]
    raise AverageError(f"{save_dir}: no checkpoint_E_U.pt or checkpointE.pt files")


def load(path: Path) -> Dict:
    if not path.is_file():
        raise AverageError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign file: torch raises many kinds
        raise AverageError(f"{path}: cannot load as a checkpoint ({type(err).__name__}: {str(err).splitlines()[0]})")
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise AverageError(f"{path}: not a fairseq checkpoint (no 'model' state dict)")
    return state


def average(paths: List[Path]) -> Dict:
    """The checkpoint whose model parameters are the mean of those of ``paths``; other fields from the last."""
    if not paths:
        raise AverageError("no input checkpoints")
    sums: Dict[str, torch.Tensor] = {}
    first_model = None
    state = None
    for path in paths:
        state = load(path)
        model = state["model"]
        if first_model is None:
            first_model = {k: v for k, v in model.items()}
            sums = {k: v.to(torch.float64).clone() for k, v in model.items() if v.is_floating_point()}
            continue
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
    state["model"] = {k: (sums[k] / len(paths)).to(v.dtype) if k in sums else v for k, v in first_model.items()}
    return state


def save_atomic(state: Dict, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(str(output), lambda tmp: torch.save(state, tmp))


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Average the parameters of fairseq checkpoints.")
    p.add_argument("--inputs", nargs="+", required=True, help="checkpoint files, or one save directory with --last")
    p.add_argument("--last", type=int, help="average the newest N checkpoints of the directory given as --inputs")
    p.add_argument("--output", required=True, help="averaged checkpoint to write")
    return p


def cli_main(argv=None) -> None:
    parser = get_parser()
    args = parser.parse_args(argv)
    inputs = [Path(p) for p in args.inputs]
    try:
        if args.last is not None:
            if args.last < 1:
                parser.error("--last must be >= 1")
            if len(inputs) != 1:
                parser.error("--last takes one save directory as --inputs")
            inputs = last_checkpoints(inputs[0], args.last)
        elif any(p.is_dir() for p in inputs):
            parser.error("a directory as --inputs needs --last N")
        output = Path(args.output)
        if output.is_dir():
            raise AverageError(f"{output}: is a directory, --output names a file")
        if not os.access(output.parent if output.parent.exists() else Path("."), os.W_OK):
            raise AverageError(f"{output}: cannot write there")
        state = average(inputs)
        save_atomic(state, output)
    except (AverageError, OSError) as err:
        sys.exit(f"{PROG}: error: {err}")
    print(f"{PROG}: averaged {len(inputs)} checkpoints ({', '.join(p.name for p in inputs)}) into {output}")


if __name__ == "__main__":
    cli_main()
