"""Attention analysis: weights and vector norms (Kobayashi et al. 2020) for every layer and head."""
from fairseq_rela.analysis.records import AttentionRecord, AttentionRecorder, decompose  # noqa: F401
