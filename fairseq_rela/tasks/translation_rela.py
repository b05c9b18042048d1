"""``translation_rela``: fairseq's translation task plus attention statistics in validation.

``--log-attention-stats`` makes every validation step record the attention weights and log, per
attention kind, the sparsity (share of exact zeros among attendable positions) and the null rate
(share of query rows that attend to nothing): ``valid_sparsity_cross`` etc. in fairseq's log and
TensorBoard.  Outside training it never drops a sentence: evaluation batches ignore
``--required-batch-size-multiple`` (fairseq issue #5036 would silently lose the last batch).
"""
import argparse
import contextlib
import os
from dataclasses import dataclass, field
from typing import Optional

from fairseq.logging import metrics
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from fairseq_rela.attention import ATTENTION_KINDS
from fairseq_rela.config import AttentionOptions
from fairseq_rela.errors import StockCliError
from fairseq_rela.recording import AttentionRecorder, split_sentences


@contextlib.contextmanager
def option_errors():
    """Turn a ValueError about an option into argparse's one line: ``PROG: error: ...``, exit 1."""
    try:
        yield
    except ValueError as err:
        raise StockCliError(str(err)) from None


def _resume_path(cfg) -> Optional[str]:
    """The checkpoint fairseq-train will resume from (fairseq's own rule), if any."""
    save_dir, restore = getattr(cfg, "save_dir", None), getattr(cfg, "restore_file", None)
    if save_dir is None or restore is None or getattr(cfg, "finetune_from_model", None):
        return None
    if restore == "checkpoint_last.pt":
        restore = os.path.join(save_dir, f"checkpoint_last{getattr(cfg, 'checkpoint_suffix', '') or ''}.pt")
    return restore if os.path.isfile(restore) else None


def check_resumed_attention(cfg) -> None:
    """Refuse (ValueError) to resume training from a checkpoint whose attention options differ."""
    path = _resume_path(cfg)
    if path is None:
        return
    import torch

    state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    saved = (state.get("cfg") or {}).get("model") if isinstance(state.get("cfg"), dict) else None
    saved = saved if saved is not None else state.get("args")
    if saved is None:
        return
    if isinstance(saved, dict):
        saved = argparse.Namespace(**saved)
    if getattr(saved, "attention_activation", None) is None:  # not a rela_transformer checkpoint
        return
    try:
        old, new = AttentionOptions.from_args(saved), AttentionOptions.from_args(cfg)
    except ValueError:
        return
    if old != new:
        diff = ", ".join(f"{name} {getattr(old, name)!r} -> {getattr(new, name)!r}"
                         for name in old.__dataclass_fields__ if getattr(old, name) != getattr(new, name))
        raise ValueError(f"{path} was trained with other attention options ({diff}): resume with the same "
                         "options, another --save-dir, or --allow-attention-change")


@dataclass
class TranslationRelaConfig(TranslationConfig):
    log_attention_stats: bool = field(
        default=False, metadata={"help": "log attention sparsity and null rate per attention kind in validation"}
    )
    allow_attention_change: bool = field(
        default=False, metadata={"help": "resume from a checkpoint trained with other attention options "
                                         "(--attention-activation, --rela-*) instead of refusing"}
    )


@register_task("translation_rela", dataclass=TranslationRelaConfig)
class TranslationRelaTask(TranslationTask):
    cfg: TranslationRelaConfig

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        with option_errors():
            if self.cfg.log_attention_stats:
                try:
                    AttentionRecorder(model, norms=False)
                except ValueError:
                    raise ValueError(f"--log-attention-stats needs a rela_transformer model (--arch rela_transformer*), "
                                     f"not {type(model).__name__}") from None
            if not from_checkpoint and not self.cfg.allow_attention_change:
                check_resumed_attention(cfg)
        return model

    def get_batch_iterator(self, dataset, *args, **kwargs):
        """Evaluation sets are never trimmed to a batch-size multiple; training is unchanged."""
        if dataset is not self.datasets.get(self.cfg.train_subset):
            kwargs["required_batch_size_multiple"] = 1
        return super().get_batch_iterator(dataset, *args, **kwargs)

    def valid_step(self, sample, model, criterion):
        if not self.cfg.log_attention_stats:
            return super().valid_step(sample, model, criterion)
        recorder = AttentionRecorder(model, norms=False)
        with recorder:
            loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
        counts = {}  # kind -> [zeros, attendable, null rows, rows], summed over sentences, layers, heads
        for sent in split_sentences(sample, recorder, self.source_dictionary, self.target_dictionary):
            for (kind, _), record in sent.records.items():
                zeros, valid, null_rows, rows = record.zero_counts()
                heads = len(zeros)
                c = counts.setdefault(kind, [0.0, 0.0, 0.0, 0.0])
                c[0] += float(zeros.sum())
                c[1] += float(valid * heads)
                c[2] += float(null_rows.sum())
                c[3] += float(rows * heads)
        for kind, (zeros, valid, null_rows, rows) in counts.items():
            logging_output.update({f"_attn_zero_{kind}": zeros, f"_attn_valid_{kind}": valid,
                                   f"_attn_null_{kind}": null_rows, f"_attn_rows_{kind}": rows})
        return loss, sample_size, logging_output

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        if not self.cfg.log_attention_stats:
            return
        for kind in ATTENTION_KINDS:
            total = lambda name: sum(log.get(f"_attn_{name}_{kind}", 0) for log in logging_outputs)  # noqa: E731
            valid, rows = total("valid"), total("rows")
            if valid > 0:
                metrics.log_scalar(f"sparsity_{kind}", total("zero") / valid, valid, round=4)
                metrics.log_scalar(f"null_rate_{kind}", total("null") / rows, rows, round=4)
