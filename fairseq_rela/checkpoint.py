"""Let torch >= 2.6 load fairseq checkpoints with ``weights_only=True`` kept on.

fairseq's ``torch.load`` gets torch's safe unpickler, which refuses any global not allow-listed.
A fairseq checkpoint needs exactly these besides tensors and builtin containers: the legacy
``argparse.Namespace`` of the model options, and numpy scalars/arrays for saved metrics
(``best_loss``) and the data iterator's RNG state.  Nothing else is allowed.

Before a checkpoint is measured: :func:`verify_file` (the zip archive whole, every CRC right) and
:func:`check_tensors` (every floating-point value finite and of a sane magnitude); both raise
:class:`CheckpointError`.
"""
import argparse
import math
import os
import zipfile
from typing import Iterable, List, Optional, Tuple

import numpy as np
import torch


def _numpy_globals() -> List[object]:
    globs: List[object] = [np.dtype, np.ndarray]
    try:  # numpy >= 1.25 moved these
        from numpy.core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover - numpy 2
        from numpy._core.multiarray import _reconstruct, scalar
    globs += [_reconstruct, scalar]
    # dtype classes pickled by numpy >= 1.25, e.g. numpy.dtypes.Float64DType
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        globs += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return globs


FAIRSEQ_CHECKPOINT_GLOBALS: List[object] = [argparse.Namespace] + _numpy_globals()


def allow_fairseq_checkpoints() -> None:
    """Allow-list the globals fairseq checkpoints contain (idempotent)."""
    if hasattr(torch.serialization, "add_safe_globals"):
        torch.serialization.add_safe_globals(FAIRSEQ_CHECKPOINT_GLOBALS)


class CheckpointError(ValueError):
    """A checkpoint file that must not be measured: empty, truncated, damaged, or holding a non-finite or
    absurd value.  ``str(err)`` says what, without the path: callers name the file with their option."""


#: beyond this magnitude a weight's square overflows float32 (LayerNorm/RMSNorm statistics become inf):
#: no trained model holds one, a damaged file does (one flipped exponent bit turns 0.02 into 2e28 or so)
MAX_MAGNITUDE = float(torch.finfo(torch.float32).max) ** 0.5
_ZIP_HEADER = b"PK\x03\x04"  # torch.save's format since torch 1.6 is a zip archive
_PICKLE_HEADER = b"\x80"  # torch's legacy format starts with a pickle protocol opcode


def verify_file(path: str) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a whole checkpoint file.

    ``torch.load`` checks no CRC: a few flipped bytes inside a tensor load as a different weight.  So
    every member of the zip archive is read and its CRC-32 checked (``zipfile.testzip``: about 0.1-0.2 s
    per 150 MB here, against 0.2-1.1 s for the load itself).  A zip archive without its end is truncated.
    Files in torch's legacy (pre-1.6, not zip) format carry no CRC and pass unchecked."""
    if not os.path.isfile(path):
        raise CheckpointError("no such file" if not os.path.exists(path) else "not a file")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise CheckpointError("the file is empty (0 bytes)")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except Exception as err:  # a damaged header or directory: zipfile raises several kinds
            raise CheckpointError(f"damaged zip archive ({type(err).__name__}: {first_line(err)})") from None
        if bad is not None:
            raise CheckpointError(f"damaged: {bad} fails its CRC check (its bytes changed after torch.save "
                                  "wrote them); use another copy")
    elif head.startswith(_ZIP_HEADER):
        raise CheckpointError("truncated: the zip archive torch.save writes has no end (central directory); "
                              "was the copy or the save interrupted?")
    elif not head.startswith(_PICKLE_HEADER):
        raise CheckpointError("not a torch checkpoint (neither a zip archive nor torch's legacy format)")


def first_bad_tensor(named_tensors: Iterable[Tuple[str, torch.Tensor]]) -> Optional[Tuple[str, float]]:
    """The name and offending value of the first floating-point tensor that holds a NaN, an inf or a value
    beyond :data:`MAX_MAGNITUDE` (one ``aminmax`` pass per tensor; NaN propagates through it), else None."""
    for name, tensor in named_tensors:
        if not torch.is_tensor(tensor) or not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        lo, hi = (float(v) for v in torch.aminmax(tensor.detach()))
        if not (-MAX_MAGNITUDE <= lo and hi <= MAX_MAGNITUDE):
            return name, lo if not -MAX_MAGNITUDE <= lo else hi
    return None


def check_tensors(named_tensors: Iterable[Tuple[str, torch.Tensor]]) -> None:
    """Raise :class:`CheckpointError` naming the first tensor :func:`first_bad_tensor` finds."""
    bad = first_bad_tensor(named_tensors)
    if bad is None:
        return
    name, value = bad
    if math.isfinite(value):
        raise CheckpointError(f"{name} holds {value:.3g}, beyond ±{MAX_MAGNITUDE:.2g} (its square overflows "
                              "float32; no trained weight is that large): the file is damaged")
    raise CheckpointError(f"{name} holds {value} (not finite): the file is damaged, or training diverged")


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message, else its type's name (for one-line errors)."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0].strip()[:200] if lines else type(err).__name__
