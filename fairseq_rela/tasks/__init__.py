"""The ``translation_rela`` and ``translation_alignment`` tasks; importing this package registers them."""
from fairseq_rela.checkpoint import allow_fairseq_checkpoints

allow_fairseq_checkpoints()

from fairseq_rela.tasks import translation_alignment, translation_rela  # noqa: E402,F401
