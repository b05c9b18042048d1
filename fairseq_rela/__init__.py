"""fairseq-rela: ReLA, softmax, sparsemax and 1.5-entmax attention for fairseq, with norm-based
attention analysis and word alignment.

Load it with ``--user-dir`` (the repository's ``fairseq_rela/`` or the installed package's
directory): fairseq's loader imports :mod:`fairseq_rela.tasks` and :mod:`fairseq_rela.models`, which
register everything (and allow-list fairseq checkpoints for ``torch.load``).  In Python,
``import fairseq_rela.models`` does the same.  This file imports nothing, so the torch-free tools
(:mod:`fairseq_rela.alignment`, ``fairseq-rela-aer``) never load torch or fairseq.
"""
__version__ = "0.1.0"
