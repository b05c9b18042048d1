"""``translation_alignment``: word alignments from attention weights or norms, printed by the
stock ``fairseq-generate --print-alignment`` for beam-search hypotheses or, with
``--score-reference``, teacher-forced on the reference (the mode used for AER).

    fairseq-generate DATA --user-dir fairseq_rela --task translation_alignment --path CKPT \\
        --print-alignment --alignment-source norms --alignment-layer 1 --alignment-shift \\
        --score-reference --required-batch-size-multiple 1

``A-`` lines hold word-level ``src-tgt`` links (0-based, Pharaoh) when the data are sentencepiece or
subword-nmt pieces (``--alignment-merge auto`` detects it from the dictionaries; pass
``--post-process sentencepiece`` too so that ``H-`` lines are words); ``--print-alignment soft``
prints per target word the source words' scores.  Stock ``transformer`` and ``transformer_align``
checkpoints are converted (in memory, same weights, exact) to ``rela_transformer`` softmax models
(:mod:`fairseq_rela.models.conversion`); other models are one ``error:`` line.

Before fairseq loads them, the ``--path`` checkpoints are checked whole (zip CRC, truncation: one
``error:`` line, where fairseq's ``torch.load`` would print a traceback or load damaged weights), and
once loaded every parameter must be finite and of a sane magnitude
(:mod:`fairseq_rela.checkpoint`).
"""
import contextlib
import os
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch
from fairseq import utils
from fairseq.data import data_utils
from fairseq.sequence_generator import SequenceGenerator
from fairseq.sequence_scorer import SequenceScorer
from fairseq.tasks import register_task
from omegaconf import II

from fairseq_rela.alignment.links import MERGE_RULES, MERGE_STYLES, align, merge_styles
from fairseq_rela.checkpoint import CheckpointError, check_tensors, verify_file
from fairseq_rela.errors import OptionError, check_choice
from fairseq_rela.models.conversion import UnsupportedModelError, as_rela_transformer
from fairseq_rela.recording import ALIGNMENT_SOURCES, AlignmentSource
from fairseq_rela.tasks.translation_rela import TranslationRelaConfig, TranslationRelaTask, option_errors


@dataclass
class TranslationAlignmentConfig(TranslationRelaConfig):
    alignment_source: str = field(default="norms", metadata={"help": "weights (α), norms (‖Σ_h α f(x)‖), block (attention + residual + "
                                                              "LayerNorm, Kobayashi et al. 2021: ‖F_i(α f(x_j))‖), alti "
                                                              "(the block's ALTI shares, Ferrando et al. 2022) or "
                                                              "value-zeroing (the layer output's cosine distance when a "
                                                              "source token's value is zeroed, rows normalised, Mohebbi "
                                                              "et al. 2023; beam-search hypotheses are re-read "
                                                              "teacher-forced); block, alti and value-zeroing cover all "
                                                              "heads"})
    alignment_layer: int = field(default=-1, metadata={"help": "0-based decoder layer; negative counts from the top"})
    alignment_heads: str = field(default="all", metadata={"help": "'all' or comma-separated 0-based heads"})
    alignment_shift: bool = field(default=False, metadata={
        "help": "align a target word with the decoder position whose input it is (AWI) instead of the one "
                "that predicts it (AWO)"})
    alignment_merge: str = field(default="auto", metadata={
        "help": "subword-to-word merging: auto (from the dictionaries), none, sentencepiece, subword_nmt"})
    alignment_merge_rule: str = field(default="sum_mean", metadata={
        "help": "sum_mean: source subwords summed, target subwords averaged (Kobayashi et al.); "
                "any: words linked if any of their subwords are"})
    # fairseq's --path, read through its config (an interpolation, no option of its own): the task checks
    # the files before fairseq-generate loads them
    checkpoint_paths: Optional[str] = II("common_eval.path")


class WordAligner:
    """Turns a hypothesis' attention matrix into word links (hard) or word scores (soft)."""

    def __init__(self, cfg: TranslationAlignmentConfig, src_dict, tgt_dict, soft: bool):
        check_alignment_options(cfg)
        self.src_style, self.tgt_style = merge_styles(cfg.alignment_merge, src_dict, tgt_dict, "--alignment-merge")
        self.cfg, self.src_dict, self.tgt_dict, self.soft = cfg, src_dict, tgt_dict, soft

    def __call__(self, matrix: np.ndarray, src_ids, tgt_ids):
        """matrix: (decoder positions, source positions) without padding; tgt_ids end with </s>."""
        src = [self.src_dict[i] for i in src_ids]
        tgt = [self.tgt_dict[i] for i in tgt_ids]
        if tgt and tgt[-1] == "</s>":
            tgt = tgt[:-1]
        links, words = align(matrix, src, tgt, self.cfg.alignment_shift, self.src_style, self.tgt_style,
                             self.cfg.alignment_merge_rule)
        if self.soft:
            return [[f"{p:.6f}" for p in row] for row in words]
        return links


def _attach(finalized, sample, aligner: WordAligner, pad: int, rows_first: bool) -> None:
    src_tokens = sample["net_input"]["src_tokens"]
    for i, nbest in enumerate(finalized):
        keep = src_tokens[i].ne(pad)
        src_ids = src_tokens[i][keep].tolist()
        for hypo in nbest:
            attn = hypo["attention"]
            attn = attn if rows_first else attn.t()  # -> (decoder positions, source positions)
            tgt_ids = hypo["tokens"].tolist()
            hypo["alignment"] = aligner(attn[: len(tgt_ids), keep].float().cpu().numpy(), src_ids, tgt_ids)


@contextlib.contextmanager
def _reporting(models, source: AlignmentSource):
    """Every model's decoder reports ``source`` as its attention inside the block."""
    with contextlib.ExitStack() as stack:
        for model in models:
            stack.enter_context(model.decoder.reporting(source))
        yield


class AlignmentSequenceGenerator(SequenceGenerator):
    """Beam search; each hypothesis gets word alignments from the attention collected while decoding."""

    def __init__(self, models, tgt_dict, aligner: WordAligner = None, source: AlignmentSource = None, **kwargs):
        super().__init__(models, tgt_dict, **kwargs)
        self.aligner, self.source = aligner, source

    def generate(self, models, sample, **kwargs):
        """Decodes with the models it was built with (``models``, as fairseq-generate passes them, may be
        the stock models they were converted from)."""
        models = self.model.models
        if self.source.needs_value_zeroing:  # reruns whole layers: on the finished hypotheses, teacher-forced
            finalized = super().generate(models, sample, **kwargs)
            self._teacher_forced(models, sample, finalized)
        else:
            with _reporting(models, self.source):
                finalized = super().generate(models, sample, **kwargs)
        _attach(finalized, sample, self.aligner, self.pad, rows_first=False)
        return finalized

    @torch.no_grad()
    def _teacher_forced(self, models, sample, finalized) -> None:
        """Each hypothesis' ``attention`` (S, T) from a teacher-forced pass over its own tokens (the causal
        decoder computes the same states as in the search), averaged over an ensemble's models."""
        order = [i for i, nbest in enumerate(finalized) for _ in nbest]
        hypos = [hypo for nbest in finalized for hypo in nbest]
        if not hypos:
            return
        index = torch.tensor(order, device=sample["net_input"]["src_tokens"].device)
        src_tokens = sample["net_input"]["src_tokens"].index_select(0, index)
        src_lengths = sample["net_input"]["src_lengths"].index_select(0, index)
        prev = data_utils.collate_tokens([h["tokens"] for h in hypos], self.pad, self.eos, left_pad=False,
                                         move_eos_to_beginning=True)
        total = None
        for model in models:
            with model.decoder.reporting(self.source):
                _, extra = model(src_tokens, src_lengths, prev)
            total = extra["attn"][0].float() if total is None else total + extra["attn"][0].float()
        for k, hypo in enumerate(hypos):
            hypo["attention"] = (total[k, : len(hypo["tokens"])] / len(models)).t()


class AlignmentSequenceScorer(SequenceScorer):
    """Teacher-forced scoring of the reference, with word alignments of the reference."""

    def __init__(self, tgt_dict, aligner: WordAligner, source: AlignmentSource, models=None, **kwargs):
        super().__init__(tgt_dict, **kwargs)
        self.aligner, self.source, self.models = aligner, source, models

    def generate(self, models, sample, **kwargs):
        """Scores with the models it was built with, if given (``models``, as fairseq-generate passes them,
        may be the stock models they were converted from)."""
        models = self.models or models
        with _reporting(models, self.source):
            hypos = super().generate(models, sample, **kwargs)
        _attach(hypos, sample, self.aligner, self.pad, rows_first=True)
        return hypos


def parse_heads(value: str) -> Optional[List[int]]:
    """``all`` -> None; ``0,2`` -> [0, 2].  Empty, malformed, negative or repeated heads are an error."""
    if value.strip() == "all":
        return None
    items = [h.strip() for h in value.split(",")]
    if not all(h.isascii() and h.isdigit() for h in items):
        raise OptionError(f"--alignment-heads {value!r}: expected 'all' or comma-separated head numbers (0-based)")
    heads = [int(h) for h in items]
    if len(set(heads)) != len(heads):
        raise OptionError(f"--alignment-heads {value!r}: a head is listed twice")
    return heads


def check_alignment_options(cfg: TranslationAlignmentConfig) -> AlignmentSource:
    """The option values that need no model, checked; the alignment source they name."""
    check_choice("--alignment-source", cfg.alignment_source, ALIGNMENT_SOURCES)
    check_choice("--alignment-merge", cfg.alignment_merge, ("auto",) + MERGE_STYLES)
    check_choice("--alignment-merge-rule", cfg.alignment_merge_rule, MERGE_RULES)
    heads = parse_heads(cfg.alignment_heads)
    return AlignmentSource(cfg.alignment_source, cfg.alignment_layer, None if heads is None else tuple(heads))


@register_task("translation_alignment", dataclass=TranslationAlignmentConfig)
class TranslationAlignmentTask(TranslationRelaTask):
    cfg: TranslationAlignmentConfig

    def __init__(self, cfg: TranslationAlignmentConfig, src_dict, tgt_dict):
        with option_errors():  # before any checkpoint is loaded
            check_alignment_options(cfg)
            for path in self._checkpoints(cfg):
                try:
                    verify_file(path)
                except CheckpointError as err:
                    raise CheckpointError(f"--path {path}: {err}") from None
        super().__init__(cfg, src_dict, tgt_dict)

    @staticmethod
    def _checkpoints(cfg) -> List[str]:
        """The local files of ``--path`` (fairseq's ``:``-separated list), when there is one."""
        try:
            paths = cfg.checkpoint_paths
        except Exception:  # built outside a fairseq config (no common_eval to interpolate from)
            return []
        if not isinstance(paths, str) or not paths:
            return []
        # a path that is no file (a --checkpoint-suffix or sharded name, a missing file) is fairseq's to report
        return [p for p in utils.split_paths(paths) if "://" not in p and os.path.isfile(p)]

    def _check_parameters(self, models) -> None:
        """Every loaded model's parameters and buffers finite and sane, else one line naming the file."""
        paths = self._checkpoints(self.cfg)
        for i, model in enumerate(models):
            try:
                check_tensors(model.state_dict().items())
            except CheckpointError as err:
                name = paths[i] if len(paths) == len(models) else f"(model {i + 1} of {len(models)})"
                raise CheckpointError(f"--path {name}: {err}") from None

    @staticmethod
    def alignable(model):
        """``model`` as a model whose decoder reports alignments: a ``rela_transformer`` as it is, a stock
        ``transformer``/``transformer_align`` converted with the same weights, device, dtype and mode
        (:func:`~fairseq_rela.models.conversion.as_rela_transformer`); others are an OptionError."""
        try:
            return as_rela_transformer(model)
        except UnsupportedModelError as err:
            raise OptionError(f"--task translation_alignment --print-alignment: {err}") from None

    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None, **kwargs):
        mode = getattr(args, "print_alignment", None)
        with option_errors():
            self._check_parameters(models)
        if not mode:
            return super().build_generator(models, args, seq_gen_cls, extra_gen_cls_kwargs, **kwargs)
        with option_errors():
            source = check_alignment_options(self.cfg)
            models = [self.alignable(model) for model in models]
            for model in models:
                model.decoder.check_alignment(source)
            aligner = WordAligner(self.cfg, self.source_dictionary, self.target_dictionary, soft=mode == "soft")
        if getattr(args, "score_reference", False):
            return AlignmentSequenceScorer(self.target_dictionary, aligner, source, models=models)
        extra = dict(extra_gen_cls_kwargs or {}, aligner=aligner, source=source)
        return super().build_generator(models, args, seq_gen_cls or AlignmentSequenceGenerator, extra, **kwargs)
