"""Option checking (config.py: AttentionOptions): bad combinations are refused with one clear message,
without going through a console script."""
import pytest

from fairseq_rela.config import AttentionOptions
from tests.helpers import build

pytestmark = pytest.mark.unit


def test_gate_init_option_reaches_the_model_options():
    from argparse import Namespace

    assert AttentionOptions.from_args(Namespace(attention_activation="rela")).rela_gate_init == "uniform"
    opts = AttentionOptions.from_args(Namespace(attention_activation="rela", rela_gate_init="ones"))
    assert opts.rela_gate_init == "ones"
    with pytest.raises(ValueError, match="applies only to ReLA-g"):
        AttentionOptions.from_args(Namespace(attention_activation="rela", rela_variant="i", rela_gate_init="ones"))


def test_bad_combination_is_one_line_error(toy_data):
    with pytest.raises(SystemExit, match="--rela-variant applies only to --attention-activation rela"):
        build(toy_data, "--attention-activation", "softmax", "--rela-variant", "i")
