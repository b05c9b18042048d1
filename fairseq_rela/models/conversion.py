"""Stock fairseq translation Transformers as ``rela_transformer`` softmax models with the same weights.

    from fairseq_rela.models.conversion import as_rela_transformer
    model = as_rela_transformer(stock_model)   # a RelaTransformerModel; stock_model is left untouched

Our layers subclass fairseq's at its seams only (:mod:`fairseq_rela.models.layers`), so a stock
``transformer`` (any of its architectures) or ``transformer_align`` model, rebuilt as a
``rela_transformer`` from its own options with ``--attention-activation softmax``, has exactly the
same parameters and buffers under the same names: its state dict loads with ``strict=True`` and it
computes the same function (tests check decoder outputs, incremental decoding and beam search against
the stock model).  Its attentions are :class:`~fairseq_rela.attention.ReLAMultiheadAttention`, so the
recorder and the decoder's ``reporting`` see them.  The checkpoint file is never touched.

``transformer_align``'s alignment supervision (``--alignment-layer``, ``--alignment-heads``,
``--full-context-alignment``) only chooses which cross-attention the stock model returns as
``extra["attn"]`` (and trains it); the translation does not depend on it, and this plugin's tools
choose the attention they read themselves, so the converted model drops those options.  Any other
model (LSTM, convolutional, language models, other Transformer variants) is refused with an
:class:`UnsupportedModelError` naming it.
"""
import argparse
import copy
import types

import torch
from fairseq.models import MODEL_REGISTRY
from fairseq.models.transformer import TransformerModel
from fairseq.models.transformer_align import TransformerAlignModel
from omegaconf import OmegaConf
from torch import nn

from fairseq_rela.errors import OptionError
from fairseq_rela.models.rela_transformer import RelaTransformerModel

__all__ = ["CONVERTIBLE", "UnsupportedModelError", "as_rela_transformer"]

#: stock model classes (exactly these, not subclasses) that convert with the same weights
CONVERTIBLE = (TransformerModel, TransformerAlignModel)
# options of transformer_align that only select/supervise extra["attn"]
ALIGN_OPTIONS = ("alignment_heads", "alignment_layer", "full_context_alignment")
# options that read files at build time; the weights come from the model instead
FILE_OPTIONS = ("encoder_embed_path", "decoder_embed_path")


class UnsupportedModelError(OptionError):
    """A model whose attention this plugin cannot analyse; ``str(err)`` is the one-line message."""


def _describe(model) -> str:
    """``transformer_iwslt_de_en (TransformerModel)``, ``lstm (LSTMModel)``: the arch, else the registered name."""
    args = getattr(model, "args", None) or getattr(model, "cfg", None)
    arch = getattr(args, "arch", None) or getattr(args, "_name", None)
    name = type(model).__name__
    arch = arch or next((key for key, cls in MODEL_REGISTRY.items() if cls is type(model)), None)
    return f"{arch} ({name})" if arch else name


def _options(model) -> argparse.Namespace:
    """A copy of the stock model's options, as the ``rela_transformer`` softmax model they describe."""
    args = model.args  # a TransformerConfig (transformer) or a Namespace (transformer_align)
    if OmegaConf.is_config(args):
        args = argparse.Namespace(**OmegaConf.to_container(args, resolve=True))
    args = copy.deepcopy(args)
    for name in ALIGN_OPTIONS + FILE_OPTIONS:
        if hasattr(args, name):
            setattr(args, name, None)
    if getattr(args, "merge_src_tgt_embed", False):  # the dictionaries are merged already: one shared table
        args.merge_src_tgt_embed, args.share_all_embeddings = False, True
    args.attention_activation = "softmax"
    for name in ("rela_variant", "rela_norm", "rela_gate_init", "attention_activation_in"):
        setattr(args, name, None)
    args.converted_from = _describe(model)
    return args


def as_rela_transformer(model):
    """``model`` itself if it is a ``rela_transformer``; a stock ``transformer``/``transformer_align`` as
    a ``rela_transformer`` softmax model with the same weights, on the same device and dtype and in the
    same train/eval mode; anything else is an :class:`UnsupportedModelError`."""
    if isinstance(model, RelaTransformerModel):
        return model
    if type(model) not in CONVERTIBLE:
        raise UnsupportedModelError(
            f"the model is {_describe(model)}: fairseq-rela analyses only rela_transformer, transformer "
            "(--arch transformer*) and transformer_align translation models"
        )
    encoder, decoder = model.encoder, model.decoder
    dictionaries = types.SimpleNamespace(source_dictionary=encoder.dictionary, target_dictionary=decoder.dictionary)
    with torch.random.fork_rng(devices=[]):  # the fresh initialisation must not move the caller's RNG
        rela = RelaTransformerModel.build_model(_options(model), dictionaries)
    nn.Module.load_state_dict(rela, model.state_dict(), strict=True)  # no fairseq upgrade or pruning: the same tensors
    first = next(model.parameters())
    return rela.to(device=first.device, dtype=first.dtype).train(model.training)
