"""The ``rela_transformer`` model; importing this package registers it (and allow-lists what fairseq
checkpoints hold for ``torch.load(weights_only=True)``)."""
from fairseq_rela.checkpoint import allow_fairseq_checkpoints

allow_fairseq_checkpoints()

from fairseq_rela.models.rela_transformer import RelaTransformerModel  # noqa: E402,F401
