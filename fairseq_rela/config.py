"""Command-line options that choose the attention function, shared by model and tools."""
import argparse
from dataclasses import dataclass
from typing import Tuple

from fairseq_rela.activations import ACTIVATIONS
from fairseq_rela.normalization import GATE_INITS, NORMS, VARIANTS

ATTENTION_KINDS = ("encoder_self", "decoder_self", "cross")


@dataclass(frozen=True)
class AttentionOptions:
    """Which activation each attention uses; ReLA's normaliser settings."""

    activation: str = "rela"
    rela_variant: str = "g"
    rela_norm: str = "rms"
    rela_gate_init: str = "uniform"
    apply_to: Tuple[str, ...] = ATTENTION_KINDS

    def activation_for(self, kind: str) -> str:
        """The activation of one attention kind; the others keep softmax."""
        return self.activation if kind in self.apply_to else "softmax"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "AttentionOptions":
        activation = getattr(args, "attention_activation", None) or "softmax"
        variant = getattr(args, "rela_variant", None)
        norm = getattr(args, "rela_norm", None)
        gate_init = getattr(args, "rela_gate_init", None)
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"--attention-activation: unknown value {activation!r}; choose one of {', '.join(ACTIVATIONS)}"
            )
        for flag, value, allowed in (("--rela-variant", variant, VARIANTS), ("--rela-norm", norm, NORMS),
                                     ("--rela-gate-init", gate_init, GATE_INITS)):
            if value is not None and value not in allowed:
                raise ValueError(f"{flag}: unknown value {value!r}; choose one of {', '.join(allowed)}")
            if value is not None and activation != "rela":
                raise ValueError(f"{flag} applies only to --attention-activation rela (got {activation!r})")
        apply_to = getattr(args, "attention_activation_in", None) or ",".join(ATTENTION_KINDS)
        kinds = tuple(k.strip() for k in apply_to.split(",") if k.strip())
        bad = [k for k in kinds if k not in ATTENTION_KINDS]
        if bad or not kinds:
            raise ValueError(
                f"--attention-activation-in: unknown value {(','.join(bad) or apply_to)!r}; "
                f"use a comma-separated subset of {','.join(ATTENTION_KINDS)}"
            )
        if gate_init is not None and ((variant or "g"), (norm or "rms")) != ("g", "rms"):
            raise ValueError("--rela-gate-init applies only to ReLA-g (--rela-variant g --rela-norm rms)")
        return cls(activation, variant or "g", norm or "rms", gate_init or "uniform", kinds)


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
    parser.add_argument("--attention-activation-in", metavar="KINDS",
                        help="comma-separated attentions that use the activation; the others use softmax "
                             f"(default: {','.join(ATTENTION_KINDS)})")
