"""Run a trained checkpoint teacher-forced over a binarised split (or given sentences) and yield,
sentence by sentence, what every attention did (weights and norms, every layer and head).

    from fairseq_rela.analysis.runner import load_checkpoint, iter_sentences
    model, task = load_checkpoint("checkpoints/checkpoint_best.pt", data="data-bin")
    for sent in iter_sentences(model, task, subset="test", max_tokens=4000):
        sent.records[("cross", 1)].weighted_norm   # (heads, tgt_len, src_len) numpy array

Batched; memory grows with the batch, not with the data set.  Runs on the model's device.
"""
import logging
from typing import Iterable, Iterator, Optional, Sequence, Tuple

import torch
from fairseq import checkpoint_utils, utils
from fairseq.data import LanguagePairDataset

from fairseq_rela import models, tasks  # noqa: F401  (registers the model and tasks, allow-lists checkpoints)
from fairseq_rela.attention import ATTENTION_KINDS
from fairseq_rela.errors import OptionError
from fairseq_rela.models.conversion import UnsupportedModelError, as_rela_transformer
from fairseq_rela.recording import AttentionRecorder, SentenceAttention, split_sentences

logger = logging.getLogger(__name__)

__all__ = ["SentenceAttention", "iter_batches", "iter_sentences", "load_checkpoint", "sentence_dataset",
           "split_sentences", "trained_updates", "UnsupportedModelError"]


def load_checkpoint(path: str, data: Optional[str] = None, device: Optional[str] = None,
                    fp16: bool = False, **overrides):
    """Load a checkpoint (and its task) for analysis, in eval mode: a ``rela_transformer``, or a stock
    ``transformer``/``transformer_align`` rebuilt as a ``rela_transformer`` softmax model with the same
    weights (exact; the file is not touched).  Other models raise
    :class:`~fairseq_rela.models.conversion.UnsupportedModelError` (an OptionError)."""
    arg_overrides = dict(overrides)
    if data is not None:
        arg_overrides["data"] = data
    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides=arg_overrides)
    model = as_rela_transformer(models[0]).eval()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    if fp16:
        model.half()
    return model, task


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


def iter_batches(task, dataset, max_tokens: Optional[int] = 4000, batch_size: Optional[int] = None,
                 max_positions=None, skip_invalid: bool = False) -> Iterator[dict]:
    """Every sentence of ``dataset`` in batches: required_batch_size_multiple is 1, nothing is dropped
    (except, with ``skip_invalid``, sentences longer than ``max_positions``; else they are an error)."""
    itr = task.get_batch_iterator(
        dataset=dataset, max_tokens=max_tokens, max_sentences=batch_size, max_positions=max_positions,
        ignore_invalid_inputs=skip_invalid, required_batch_size_multiple=1, num_workers=0,
    ).next_epoch_itr(shuffle=False)
    yield from itr


def _recorder(model, kinds, norms, layers, block: Optional[bool]) -> AttentionRecorder:
    if block is None and norms:
        try:
            return AttentionRecorder(model, kinds=kinds, norms=norms, layers=layers, block=True)
        except OptionError as err:
            logger.warning("no block decomposition: %s", err)
    return AttentionRecorder(model, kinds=kinds, norms=norms, layers=layers, block=bool(block))


def iter_sentences(model, task, subset: Optional[str] = "test", dataset=None, kinds: Iterable[str] = ATTENTION_KINDS,
                   layers: Optional[Iterable[int]] = None, norms: bool = True, max_tokens: Optional[int] = 4000,
                   batch_size: Optional[int] = None, max_positions=None,
                   skip_invalid: bool = False, block: Optional[bool] = None) -> Iterator[SentenceAttention]:
    """Teacher-forced pass over ``subset`` (or ``dataset``), one :class:`SentenceAttention` per pair.
    ``max_positions`` (source, target) limits lengths further than the task and model do; longer
    sentences are skipped with ``skip_invalid``, else an error.  ``block``: also decompose each
    attention block (attention + residual + LayerNorm, :mod:`fairseq_rela.block`); None: whenever the
    model's layers allow it (with norms)."""
    if dataset is None:
        if subset not in task.datasets:
            task.load_dataset(subset)
        dataset = task.dataset(subset)
    device = next(model.parameters()).device
    src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
    recorder = _recorder(model, kinds, norms, layers, block)
    limits = utils.resolve_max_positions(task.max_positions(), model.max_positions(),
                                         *([max_positions] if max_positions and None not in max_positions else []))
    for sample in iter_batches(task, dataset, max_tokens, batch_size, limits, skip_invalid):
        sample = utils.move_to_cuda(sample, device=device) if device.type == "cuda" else sample
        recorder.clear()
        with torch.no_grad(), recorder:
            model(**sample["net_input"])
        yield from split_sentences(sample, recorder, src_dict, tgt_dict)
