"""Attention analysis of trained models: :mod:`.runner` (teacher-forced passes yielding one
:class:`~fairseq_rela.recording.SentenceAttention` per pair), :mod:`.statistics`, :mod:`.sweep`
(alignment error by layer and head) and :mod:`.plots`.  Files are written by :mod:`fairseq_rela.cli`."""
