"""Command-line options that choose the attention function: declared once, checked once.

:meth:`AttentionOptions.from_args` runs where fairseq parses the command line (the architecture
functions) and when a model is built; every bad value or combination is one
:class:`~fairseq_rela.errors.OptionError` line.  The modules below it receive checked values.
"""
import argparse
import functools
from dataclasses import dataclass, field
from typing import Tuple

from fairseq_rela.activations import ACTIVATIONS, get_activation
from fairseq_rela.attention import ATTENTION_KINDS
from fairseq_rela.errors import OptionError, check_choice
from fairseq_rela.kernels import KERNELS, check_kernel, sparse, triton_available
from fairseq_rela.normalization import GATE_INITS, NORMS, VARIANTS, HeadNorm, IdentityNorm, build_head_norm

RELA_FLAGS = (("--rela-variant", "rela_variant", VARIANTS), ("--rela-norm", "rela_norm", NORMS),
              ("--rela-gate-init", "rela_gate_init", GATE_INITS))


@dataclass(frozen=True)
class AttentionOptions:
    """Which activation each attention uses; the head normaliser's settings (for activations that
    need one: ReLA)."""

    activation: str = "rela"
    rela_variant: str = "g"
    rela_norm: str = "rms"
    rela_gate_init: str = "uniform"
    apply_to: Tuple[str, ...] = ATTENTION_KINDS
    # how, not what: the same model either way (a checkpoint resumes under another kernel)
    kernel: str = field(default="auto", compare=False)

    def activation_for(self, kind: str) -> str:
        """The activation of one attention kind; the others keep softmax."""
        return self.activation if kind in self.apply_to else "softmax"

    def head_norm_for(self, kind: str, dim: int) -> HeadNorm:
        """A fresh normaliser for one attention of ``kind`` with ``dim`` channels."""
        if not get_activation(self.activation_for(kind)).needs_head_norm:
            return IdentityNorm()
        return build_head_norm(self.rela_norm, self.rela_variant, dim, self.rela_gate_init)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "AttentionOptions":
        """Check and collect the options of ``args`` (missing ones take their defaults); each distinct
        set of values is checked once (every attention module of a model asks)."""
        apply_to = getattr(args, "attention_activation_in", None)  # "" is a bad value, not the default
        return _checked(getattr(args, "attention_activation", None) or "softmax",
                        *(getattr(args, name, None) for _, name, _ in RELA_FLAGS),
                        ",".join(ATTENTION_KINDS) if apply_to is None else apply_to,
                        getattr(args, "attention_kernel", None) or "auto")


@functools.lru_cache(maxsize=64)
def _checked(activation: str, variant, norm, gate_init, apply_to: str, kernel: str = "auto") -> AttentionOptions:
    spec = get_activation(activation)
    check_kernel(kernel)
    if kernel == "fused":
        if activation == "rela" and not triton_available():
            raise OptionError("--attention-kernel fused: ReLA's kernel needs triton (pip install triton)")
        if activation in sparse.ALPHAS and not sparse.available():
            raise OptionError(f"--attention-kernel fused: {activation} needs adasplash (pip install adasplash; CUDA)")
    given = {}
    for (flag, name, allowed), value in zip(RELA_FLAGS, (variant, norm, gate_init)):
        if value is None:
            continue
        check_choice(flag, value, allowed)
        if not spec.needs_head_norm:
            raise OptionError(f"{flag} applies only to --attention-activation rela (got {activation!r})")
        given[name] = value
    kinds = tuple(k.strip() for k in apply_to.split(",") if k.strip())
    bad = [k for k in kinds if k not in ATTENTION_KINDS]
    if bad or not kinds:
        raise OptionError.unknown("--attention-activation-in", ",".join(bad) or apply_to, ATTENTION_KINDS,
                                  what="use a comma-separated subset of")
    options = AttentionOptions(activation, apply_to=kinds, kernel=kernel, **given)
    if "rela_gate_init" in given and (options.rela_variant, options.rela_norm) != ("g", "rms"):
        raise OptionError("--rela-gate-init applies only to ReLA-g (--rela-variant g --rela-norm rms)")
    return options


def add_attention_args(parser: argparse.ArgumentParser) -> None:
    """Options of the ``rela_transformer`` model (no defaults here: architectures fill them)."""
    parser.add_argument("--attention-activation", choices=list(ACTIVATIONS), metavar="ACT",
                        help=f"attention activation: {', '.join(ACTIVATIONS)} (default: rela)")
    parser.add_argument("--rela-variant", choices=list(VARIANTS), metavar="V",
                        help="ReLA normaliser: g = gated RMSNorm (default), i = RMSNorm with uniform gain init")
    parser.add_argument("--rela-norm", choices=list(NORMS), metavar="N",
                        help="normalisation of ReLA's head outputs: rms (default), layer, none (ablations)")
    parser.add_argument("--rela-gate-init", choices=list(GATE_INITS), metavar="INIT",
                        help="ReLA-g gate initialisation: uniform = U(-sqrt(3/d), sqrt(3/d)) as the authors' "
                             "code (default), ones = 1")
    parser.add_argument("--attention-kernel", choices=list(KERNELS), metavar="K",
                        help="auto (default): fused kernels where no weights are needed (softmax: SDPA; on CUDA "
                             "ReLA: Triton, sparsemax/entmax15: adasplash if installed); eager: never; fused: as "
                             "auto, also for ReLA's one-query decoding steps and on the CPU under TRITON_INTERPRET=1; "
                             "an error if the activation's kernel is not installed")
    parser.add_argument("--attention-activation-in", metavar="KINDS",
                        help="comma-separated attentions that use the activation; the others use softmax "
                             f"(default: {','.join(ATTENTION_KINDS)})")
