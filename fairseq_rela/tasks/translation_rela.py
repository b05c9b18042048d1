"""``translation_rela``: fairseq's translation task plus attention statistics in validation.

``--log-attention-stats`` makes every validation step record the attention weights and log, per
attention kind, the sparsity (share of exact zeros among attendable positions) and the null rate
(share of query rows that attend to nothing): ``valid_sparsity_cross`` etc. in fairseq's log and
TensorBoard.  Outside training it never drops a sentence: evaluation batches ignore
``--required-batch-size-multiple`` (fairseq issue #5036 would silently lose the last batch).
"""
from dataclasses import dataclass, field

from fairseq.logging import metrics
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from fairseq_rela.analysis.records import AttentionRecorder
from fairseq_rela.analysis.runner import split_sentences
from fairseq_rela.analysis.statistics import AttentionStatistics
from fairseq_rela.config import ATTENTION_KINDS


@dataclass
class TranslationRelaConfig(TranslationConfig):
    log_attention_stats: bool = field(
        default=False, metadata={"help": "log attention sparsity and null rate per attention kind in validation"}
    )


@register_task("translation_rela", dataclass=TranslationRelaConfig)
class TranslationRelaTask(TranslationTask):
    cfg: TranslationRelaConfig

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
        stats = AttentionStatistics(set(), set(), weights_only=True)
        for sent in split_sentences(sample, recorder, self.source_dictionary, self.target_dictionary):
            stats.update(sent)
        for kind, zeros, valid, null_rows, rows in stats.counts_by_kind():
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
