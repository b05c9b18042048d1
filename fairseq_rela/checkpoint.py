"""Let torch >= 2.6 load fairseq checkpoints with ``weights_only=True`` kept on.

fairseq's ``torch.load`` gets torch's safe unpickler, which refuses any global not allow-listed.
A fairseq checkpoint needs exactly these besides tensors and builtin containers: the legacy
``argparse.Namespace`` of the model options, and numpy scalars/arrays for saved metrics
(``best_loss``) and the data iterator's RNG state.  Nothing else is allowed.
"""
import argparse
from typing import List

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
