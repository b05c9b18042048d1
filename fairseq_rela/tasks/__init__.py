from fairseq_rela.tasks import translation_alignment, translation_rela  # noqa: F401 (registers)
