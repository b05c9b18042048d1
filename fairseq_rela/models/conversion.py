"""Stock fairseq Transformers as models with our attention (softmax) and the same weights.

    from fairseq_rela.models.conversion import as_analysable, as_rela_roberta, as_rela_transformer
    model = as_rela_transformer(stock_model)   # a RelaTransformerModel; stock_model is left untouched
    model = as_rela_roberta(stock_roberta)     # a RelaRobertaModel (masked LM)
    model = as_analysable(any_model)           # whichever of the two applies

Our layers subclass fairseq's at its seams only (:mod:`fairseq_rela.models.layers`), so a stock
``transformer`` (any of its architectures) or ``transformer_align`` model, rebuilt as a
``rela_transformer`` from its own options with ``--attention-activation softmax``, has exactly the
same parameters and buffers under the same names: its state dict loads with ``strict=True`` and it
computes the same function (tests check decoder outputs, incremental decoding and beam search against
the stock model).  A stock ``roberta`` masked LM likewise becomes a
:class:`~fairseq_rela.models.rela_roberta.RelaRobertaModel` (same encoder, LM head and classification
heads; tests check MLM logits and features).  Its attentions are :class:`~fairseq_rela.attention.ReLAMultiheadAttention`, so the
recorder and the decoder's ``reporting`` see them.  The checkpoint file is never touched.

``transformer_align``'s alignment supervision (``--alignment-layer``, ``--alignment-heads``,
``--full-context-alignment``) only chooses which cross-attention the stock model returns as
``extra["attn"]`` (and trains it); the translation does not depend on it, and this plugin's tools
choose the attention they read themselves, so the converted model drops those options.  Any other
model (LSTM, convolutional, language models, the legacy ``masked_lm`` architecture, other Transformer
variants) is refused with an :class:`UnsupportedModelError` naming it.
"""
import argparse
import copy
import types

import torch
from fairseq.models import MODEL_REGISTRY
from fairseq.models.transformer import TransformerModel
from fairseq.models.roberta.model import RobertaModel
from fairseq.models.transformer_align import TransformerAlignModel
from omegaconf import OmegaConf
from torch import nn

from fairseq_rela.errors import OptionError
from fairseq_rela.models.rela_roberta import RelaRobertaModel
from fairseq_rela.models.rela_transformer import RelaTransformerModel

__all__ = ["CONVERTIBLE", "CONVERTIBLE_MLM", "ENCODER_ONLY", "SUPPORTED", "TRANSLATION_MODELS", "UnsupportedModelError",
           "as_analysable", "as_rela_roberta", "as_rela_transformer", "describe_model"]

#: stock model classes (exactly these, not subclasses) that convert with the same weights
CONVERTIBLE = (TransformerModel, TransformerAlignModel)
#: stock masked LMs (exactly these) that convert with the same weights
CONVERTIBLE_MLM = (RobertaModel,)
#: the models this plugin analyses, after conversion: encoder-only ones have only encoder self-attention
ENCODER_ONLY = (RelaRobertaModel,)
#: what as_rela_transformer takes, and what as_analysable takes (the analysis: masked LMs too)
TRANSLATION_MODELS = "rela_transformer, transformer (--arch transformer*) and transformer_align translation models"
SUPPORTED = f"{TRANSLATION_MODELS}, and roberta masked LMs"
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


def describe_model(model) -> str:
    """What a model is, for messages: the stock model it was converted from, else :func:`_describe`."""
    args = getattr(model, "args", None)
    return getattr(args, "converted_from", None) or _describe(model)


def _namespace(args) -> argparse.Namespace:
    """A deep copy of a model's options as a Namespace (they may be an OmegaConf config)."""
    if OmegaConf.is_config(args):
        args = argparse.Namespace(**OmegaConf.to_container(args, resolve=True))
    return copy.deepcopy(args)


def _softmax(args: argparse.Namespace, model) -> argparse.Namespace:
    """``args`` asking for our softmax attention, remembering what they were converted from."""
    args.attention_activation = "softmax"
    for name in ("rela_variant", "rela_norm", "rela_gate_init", "attention_activation_in"):
        setattr(args, name, None)
    args.converted_from = getattr(args, "converted_from", None) or _describe(model)  # a Hugging Face model's stays
    return args


def _same_weights(rela, model):
    """``rela`` with ``model``'s state dict (strict: the same names), on its device and dtype, in its mode."""
    nn.Module.load_state_dict(rela, model.state_dict(), strict=True)  # no fairseq upgrade or pruning: the same tensors
    first = next(model.parameters())
    return rela.to(device=first.device, dtype=first.dtype).train(model.training)


def _unsupported(model, supported: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"the model is {_describe(model)}: fairseq-rela analyses only {supported}")


def _options(model) -> argparse.Namespace:
    """A copy of the stock model's options, as the ``rela_transformer`` softmax model they describe."""
    args = _namespace(model.args)  # a TransformerConfig (transformer) or a Namespace (transformer_align)
    for name in ALIGN_OPTIONS + FILE_OPTIONS:
        if hasattr(args, name):
            setattr(args, name, None)
    if getattr(args, "merge_src_tgt_embed", False):  # the dictionaries are merged already: one shared table
        args.merge_src_tgt_embed, args.share_all_embeddings = False, True
    return _softmax(args, model)


def as_rela_transformer(model):
    """``model`` itself if it is a ``rela_transformer``; a stock ``transformer``/``transformer_align`` as
    a ``rela_transformer`` softmax model with the same weights, on the same device and dtype and in the
    same train/eval mode; anything else is an :class:`UnsupportedModelError`."""
    if isinstance(model, RelaTransformerModel):
        return model
    if type(model) not in CONVERTIBLE:
        raise _unsupported(model, TRANSLATION_MODELS)
    encoder, decoder = model.encoder, model.decoder
    dictionaries = types.SimpleNamespace(source_dictionary=encoder.dictionary, target_dictionary=decoder.dictionary)
    with torch.random.fork_rng(devices=[]):  # the fresh initialisation must not move the caller's RNG
        rela = RelaTransformerModel.build_model(_options(model), dictionaries)
    return _same_weights(rela, model)


def as_rela_roberta(model) -> RelaRobertaModel:
    """``model`` itself if it is a :class:`RelaRobertaModel`; a stock ``roberta`` masked LM (any of its
    architectures) as one with our softmax attention and the same weights (encoder, LM head and
    classification heads), on the same device and dtype and in the same mode; anything else is an
    :class:`UnsupportedModelError`."""
    if isinstance(model, RelaRobertaModel):
        return model
    if type(model) not in CONVERTIBLE_MLM:
        raise _unsupported(model, "roberta masked LMs")
    dictionary = model.encoder.dictionary
    task = types.SimpleNamespace(source_dictionary=dictionary, max_positions=model.max_positions)
    with torch.random.fork_rng(devices=[]):
        rela = RelaRobertaModel.build_model(_softmax(_namespace(model.args), model), task)
        for name, head in model.classification_heads.items():  # plain modules: copied as they are
            rela.classification_heads[name] = copy.deepcopy(head)
    return _same_weights(rela, model)


def as_analysable(model):
    """The model as one whose attentions the recorder sees: :func:`as_rela_roberta` for masked LMs,
    :func:`as_rela_transformer` for translation models (either unchanged when already ours)."""
    if isinstance(model, RobertaModel):
        return as_rela_roberta(model)
    if isinstance(model, RelaTransformerModel) or type(model) in CONVERTIBLE:
        return as_rela_transformer(model)
    raise _unsupported(model, SUPPORTED)
