"""fairseq-rela: ReLA, softmax, sparsemax and 1.5-entmax attention for fairseq, with norm-based
attention analysis and word alignment.  Load it with ``--user-dir`` (the repository's
``fairseq_rela/`` or the installed package's directory); importing registers everything.
"""
__version__ = "0.1.0"

from fairseq_rela.checkpoint import allow_fairseq_checkpoints

allow_fairseq_checkpoints()

from fairseq_rela import models  # noqa: E402,F401  (registers rela_transformer)
from fairseq_rela import tasks  # noqa: E402,F401  (registers translation_rela, translation_alignment)
