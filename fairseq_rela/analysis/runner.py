"""Run a trained checkpoint teacher-forced over a binarised split (or given sentences) and yield,
sentence by sentence, what every attention did (weights and norms, every layer and head).

    from fairseq_rela.analysis.runner import load_checkpoint, iter_sentences
    model, task = load_checkpoint("checkpoints/checkpoint_best.pt", data="data-bin")
    for sent in iter_sentences(model, task, subset="test", max_tokens=4000):
        sent.records[("cross", 1)].weighted_norm   # (heads, tgt_len, src_len) numpy array

Masked LMs (``roberta``) are read the way Kobayashi et al. fed BERT: each sentence whole and unmasked,
``<s> w1 .. wn </s>``; their sentences have only ``encoder_self`` records (``tgt_in``/``tgt_out`` empty).

Batched; memory grows with the batch, not with the data set.  Runs on the model's device.

Nothing non-finite is measured: :func:`load_checkpoint` checks the file (zip CRC) and every parameter and
buffer (finite, sane magnitude), :func:`iter_sentences` the model's output and every record; each raises a
:class:`~fairseq_rela.checkpoint.CheckpointError` (a ValueError) naming what is wrong.
"""
import dataclasses
import logging
import os
from typing import Iterable, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
from fairseq import checkpoint_utils, utils
from fairseq.data import (IdDataset, LanguagePairDataset, ListDataset, NestedDictionaryDataset, NumelDataset,
                          PrependTokenDataset, RightPadDataset, SortDataset, data_utils)
from fairseq.tasks.masked_lm import MaskedLMTask

from fairseq_rela import models, tasks  # noqa: F401  (registers the model and tasks, allow-lists checkpoints)
from fairseq_rela.attention import ATTENTION_KINDS
from fairseq_rela.checkpoint import CheckpointError, check_tensors, first_bad_tensor, verify_file
from fairseq_rela.errors import OptionError
from fairseq_rela.models.conversion import ENCODER_ONLY, UnsupportedModelError, as_analysable, describe_model
from fairseq_rela.recording import AttentionRecorder, SentenceAttention, split_sentences

logger = logging.getLogger(__name__)

__all__ = ["CheckpointError", "SentenceAttention", "UnsupportedModelError", "check_task", "is_masked_lm", "iter_batches",
           "iter_sentences", "position_limits", "precision", "load_checkpoint", "load_split", "masked_lm_dataset",
           "sentence_dataset",
           "split_sentences", "text_dataset", "trained_updates"]

MASKED_LM_TASK = "masked_lm"  # the --task that reads masked-LM data (fairseq's MaskedLMTask)


def load_checkpoint(path: str, data: Optional[str] = None, device: Optional[str] = None,
                    fp16: bool = False, bf16: bool = False, **overrides):
    """Load a checkpoint (and its task) for analysis, in eval mode: a ``rela_transformer``, or a stock
    ``transformer``/``transformer_align`` rebuilt as a ``rela_transformer`` softmax model with the same
    weights, or a stock ``roberta`` masked LM rebuilt with our softmax attention (exact; the file is not
    touched; :func:`~fairseq_rela.models.conversion.as_analysable`).  Other models raise
    :class:`~fairseq_rela.models.conversion.UnsupportedModelError` (an OptionError).  A damaged file (zip
    CRC, truncation) or a parameter or buffer that is not finite or absurdly large raises a
    :class:`~fairseq_rela.checkpoint.CheckpointError` naming it, before anything is measured.  ``fp16`` /
    ``bf16``: the model in float16 / bfloat16 (on any device; the records are float32 either way)."""
    if fp16 and bf16:
        raise OptionError("--fp16 and --bf16: choose one precision")
    verify_file(path)
    arg_overrides = dict(overrides)
    if data is not None:
        arg_overrides["data"] = data
    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides=arg_overrides)
    model = as_analysable(models[0]).eval()
    check_tensors(model.state_dict().items())
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    if fp16 or bf16:
        model.to(torch.float16 if fp16 else torch.bfloat16)
        bad = first_bad_tensor(model.state_dict().items())
        if bad is not None:
            name = "float16" if fp16 else "bfloat16"
            raise CheckpointError(f"with --{'fp16' if fp16 else 'bf16'}, {bad[0]} becomes {bad[1]} (beyond {name}'s "
                                  "range): analyse in float32")
    return model, task


def precision(model) -> str:
    """The floating-point type the model computes in: ``float32``, ``float16`` or ``bfloat16``."""
    return str(next(p.dtype for p in model.parameters() if p.is_floating_point())).replace("torch.", "")


def trained_updates(path: str) -> Optional[int]:
    """How many updates the checkpoint at ``path`` was trained for (None if it does not say)."""
    state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    history = state.get("optimizer_history") or [{}]
    return history[-1].get("num_updates")


def sentence_dataset(task, pairs: Sequence[Tuple[str, str]]) -> LanguagePairDataset:
    """A dataset of given (source, target) strings, tokenised on spaces with the task's dictionaries
    (apply BPE/sentencepiece first, as for training)."""
    src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
    src = [src_dict.encode_line(s, add_if_not_exist=False, append_eos=True).long() for s, _ in pairs]
    tgt = [tgt_dict.encode_line(t, add_if_not_exist=False, append_eos=True).long() for _, t in pairs]
    return LanguagePairDataset(src, torch.tensor([len(s) for s in src]), src_dict,
                               tgt, torch.tensor([len(t) for t in tgt]), tgt_dict,
                               left_pad_source=True, left_pad_target=False, shuffle=False)


def is_masked_lm(model) -> bool:
    """Whether ``model`` (as :func:`load_checkpoint` returns it) is an encoder-only masked LM."""
    return isinstance(model, ENCODER_ONLY)


def check_task(model, task, task_name: Optional[str] = None) -> None:
    """The loaded ``task`` (and ``--task task_name``, when given) fit the model: masked LMs are analysed
    with ``masked_lm``, translation models with a translation task; else an
    :class:`~fairseq_rela.errors.OptionError` (one line)."""
    if is_masked_lm(model):
        if task_name is not None and task_name != MASKED_LM_TASK:
            raise OptionError(f"--task {task_name}: the checkpoint is a masked LM ({describe_model(model)}); "
                              f"analyse it with --task {MASKED_LM_TASK}")
        if not isinstance(task, MaskedLMTask):
            raise OptionError(f"--task {MASKED_LM_TASK}: the checkpoint is a masked LM ({describe_model(model)}) "
                              f"trained with {type(task).__name__}; fairseq-rela reads only checkpoints of the "
                              f"{MASKED_LM_TASK} task")
    elif task_name == MASKED_LM_TASK or isinstance(task, MaskedLMTask):
        raise OptionError(f"--task {task_name or MASKED_LM_TASK}: the checkpoint is a translation model "
                          f"({describe_model(model)}); analyse it with its translation task (--task translation)")


def _encoder_dataset(dictionary, tokens) -> SortDataset:
    """``<s>`` + each token sequence (which ends in ``</s>``), as an encoder's net_input; batched by length."""
    src = PrependTokenDataset(tokens, dictionary.bos())
    dataset = NestedDictionaryDataset(
        {"id": IdDataset(), "net_input": {"src_tokens": RightPadDataset(src, pad_idx=dictionary.pad()),
                                          "src_lengths": NumelDataset(src, reduce=False)}},
        sizes=[src.sizes],
    )
    return SortDataset(dataset, sort_order=[src.sizes])


def masked_lm_dataset(task, subset: str) -> SortDataset:
    """A masked-LM task's split as Kobayashi et al. fed BERT: one sentence (one line of the binarised
    text) per item, ``<s> w1 .. wn </s>``, unmasked; ids are line numbers."""
    path = os.path.join(utils.split_paths(task.cfg.data)[0], subset)
    tokens = data_utils.load_indexed_dataset(path, task.source_dictionary)
    if tokens is None:
        raise FileNotFoundError(f"Dataset not found: {subset} ({path})")
    return _encoder_dataset(task.source_dictionary, tokens)


def text_dataset(task, lines: Sequence[str]) -> SortDataset:
    """:func:`masked_lm_dataset` of given sentences, tokenised on spaces with the task's dictionary
    (apply BPE/sentencepiece first, as for training)."""
    dictionary = task.source_dictionary
    tokens = [dictionary.encode_line(line, add_if_not_exist=False, append_eos=True).long() for line in lines]
    return _encoder_dataset(dictionary, ListDataset(tokens, [len(t) for t in tokens]))


def load_split(task, subset: str):
    """The dataset the analysis reads for ``subset``: the task's own for translation tasks, the unmasked
    :func:`masked_lm_dataset` for a masked-LM task (whose own split is masked for training)."""
    if isinstance(task, MaskedLMTask):
        return masked_lm_dataset(task, subset)
    if subset not in task.datasets:
        task.load_dataset(subset)
    return task.dataset(subset)


def iter_batches(task, dataset, max_tokens: Optional[int] = 4000, batch_size: Optional[int] = None,
                 max_positions=None, skip_invalid: bool = False) -> Iterator[dict]:
    """Every sentence of ``dataset`` in batches: required_batch_size_multiple is 1, nothing is dropped
    (except, with ``skip_invalid``, sentences longer than ``max_positions``; else they are an error).  The
    batching is made anew for every call (fairseq's task would otherwise hand back the one it made first for
    ``dataset``, whatever ``max_tokens``/``batch_size`` now say)."""
    itr = task.get_batch_iterator(
        dataset=dataset, max_tokens=max_tokens, max_sentences=batch_size, max_positions=max_positions,
        ignore_invalid_inputs=skip_invalid, required_batch_size_multiple=1, num_workers=0,
        disable_iterator_cache=True,
    ).next_epoch_itr(shuffle=False)
    yield from itr


def check_finite_output(output, sample) -> None:
    """:class:`CheckpointError` unless the model's output (logits, or masked-LM features) is finite."""
    first = output[0] if isinstance(output, (tuple, list)) else output
    if torch.is_tensor(first) and not bool(torch.isfinite(first).all()):
        rows = (~torch.isfinite(first)).flatten(1).any(1).nonzero().flatten().tolist()
        ids = sample["id"][rows].tolist()
        raise CheckpointError(f"the model's output is not finite (sentence {ids[0]} first of {len(ids)} in its "
                              "batch): a weight is damaged or overflows (with --fp16, analyse in float32)")


#: record fields that are NaN where undefined (a null ReLA row's mixing ratio, a degenerate ALTI row): there
#: only an inf counts; in every other field a NaN is an error too
NAN_WHERE_UNDEFINED = ("mixing_ratio", "alti", "alti_residual")


def check_finite_records(sent: SentenceAttention) -> None:
    """:class:`CheckpointError` naming the first record array of ``sent`` holding an inf, or a NaN outside
    :data:`NAN_WHERE_UNDEFINED`."""
    for (kind, layer), record in sent.records.items():
        for f in dataclasses.fields(record):
            value = getattr(record, f.name)
            if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.floating):
                continue
            bad = np.isinf(value).any() if f.name in NAN_WHERE_UNDEFINED else not np.isfinite(value).all()
            if bad:
                raise CheckpointError(f"{kind} layer {layer}: {f.name} of sentence {sent.id} is not finite: "
                                      "a weight is damaged or overflows (with --fp16, analyse in float32)")


def _recorder(model, kinds, norms, layers, block: Optional[bool], value_zeroing: bool) -> AttentionRecorder:
    if block is None and norms:
        try:
            return AttentionRecorder(model, kinds=kinds, norms=norms, layers=layers, block=True,
                                     value_zeroing=value_zeroing)
        except OptionError as err:
            if value_zeroing and "value zeroing" in str(err):
                raise
            logger.warning("no block decomposition: %s", err)
    return AttentionRecorder(model, kinds=kinds, norms=norms, layers=layers, block=bool(block),
                             value_zeroing=value_zeroing)


def position_limits(model, task, max_positions=None):
    """The longest input :func:`iter_sentences` lets through: the least of the task's limit, the model's
    (the positions it was trained with) and ``max_positions`` ((source, target); not for masked LMs)."""
    given = max_positions and None not in max_positions and not is_masked_lm(model)
    return utils.resolve_max_positions(task.max_positions(), model.max_positions(), *([max_positions] if given else []))


def iter_sentences(model, task, subset: Optional[str] = "test", dataset=None, kinds: Iterable[str] = ATTENTION_KINDS,
                   layers: Optional[Iterable[int]] = None, norms: bool = True, max_tokens: Optional[int] = 4000,
                   batch_size: Optional[int] = None, max_positions=None,
                   skip_invalid: bool = False, block: Optional[bool] = None,
                   value_zeroing: bool = False) -> Iterator[SentenceAttention]:
    """Teacher-forced pass over ``subset`` (or ``dataset``), one :class:`SentenceAttention` per pair (per
    sentence for a masked LM: :func:`load_split`).  ``max_positions`` (source, target) limits lengths
    further than the task and model do; longer sentences are skipped with ``skip_invalid``, else an error.
    ``block``: also decompose each attention block (attention + residual + LayerNorm,
    :mod:`fairseq_rela.block`); None: whenever the model's layers allow it (with norms).  ``value_zeroing``:
    also value zeroing of every attention (:mod:`fairseq_rela.value_zeroing`: each layer rerun once per key
    token, batched; about (source length) x the pass's cost).  A non-finite
    output or record raises a :class:`~fairseq_rela.checkpoint.CheckpointError`."""
    check_task(model, task)
    encoder_only = is_masked_lm(model)
    if dataset is None:
        dataset = load_split(task, subset)
    device = next(model.parameters()).device
    src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
    recorder = _recorder(model, kinds, norms, layers, block, value_zeroing)
    limits = position_limits(model, task, max_positions)
    extra = {"features_only": True} if encoder_only else {}  # the LM head is not analysed
    for sample in iter_batches(task, dataset, max_tokens, batch_size, limits, skip_invalid):
        sample = utils.move_to_cuda(sample, device=device) if device.type == "cuda" else sample
        recorder.clear()
        with torch.no_grad(), recorder:
            output = model(**sample["net_input"], **extra)
        check_finite_output(output, sample)
        for sent in split_sentences(sample, recorder, src_dict, tgt_dict):
            check_finite_records(sent)
            yield sent
