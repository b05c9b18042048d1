from fairseq_rela.models.rela_transformer import RelaTransformerModel  # noqa: F401 (registers)
