"""Fused attention kernels (layer 2, beside :mod:`fairseq_rela.activations`; no fairseq import).

``rela_triton``: ReLA attention ``Σ_j ReLU(s_ij + b_ij) v_j`` as Triton kernels (forward and
backward, tiled, the score matrix never stored).  ``sparse``: sparsemax / 1.5-entmax attention
through the optional ``adasplash`` package.  Both import their backend lazily: importing this
package needs neither ``triton`` nor ``adasplash``.
"""
import functools
import importlib.util
import logging
import os

import torch

from fairseq_rela.errors import check_choice

KERNELS = ("auto", "eager", "fused")  # --attention-kernel


def check_kernel(kernel: str) -> str:
    """``kernel`` if it is one of :data:`KERNELS`, else :class:`~fairseq_rela.errors.OptionError`."""
    return check_choice("--attention-kernel", kernel, KERNELS)


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether ``triton`` is installed (not imported)."""
    return importlib.util.find_spec("triton") is not None


def triton_runs_on(device: torch.device) -> bool:
    """Whether a Triton kernel can run on ``device``: CUDA, or anywhere under ``TRITON_INTERPRET=1``."""
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


@functools.lru_cache(maxsize=None)
def warn_eager_instead(device_type: str) -> None:
    """Say once per device type that ``--attention-kernel fused`` cannot run ReLA's kernel there (a checkpoint
    trained fused on a GPU still loads and runs on the CPU, so this is a warning, not an error)."""
    logging.getLogger(__name__).warning(
        "--attention-kernel fused: ReLA's Triton kernel runs on CUDA (on the CPU only under TRITON_INTERPRET=1); "
        "on %s the eager path computes the same attention", device_type)
