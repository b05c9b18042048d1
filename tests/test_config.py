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


def test_attention_kernel_option_is_checked_once_and_is_not_part_of_the_model(monkeypatch):
    from argparse import Namespace

    import fairseq_rela.config as config
    from fairseq_rela.kernels import sparse

    assert AttentionOptions.from_args(Namespace(attention_activation="rela")).kernel == "auto"
    eager = AttentionOptions.from_args(Namespace(attention_activation="rela", attention_kernel="eager"))
    assert eager.kernel == "eager"
    assert eager == AttentionOptions.from_args(Namespace(attention_activation="rela"))  # resumes under another kernel
    with pytest.raises(ValueError, match="--attention-kernel: unknown value 'flash'; choose one of auto, eager, fused"):
        AttentionOptions.from_args(Namespace(attention_activation="rela", attention_kernel="flash"))
    monkeypatch.setattr(sparse, "available", lambda: False)
    with pytest.raises(ValueError, match="--attention-kernel fused: entmax15 needs adasplash"):
        AttentionOptions.from_args(Namespace(attention_activation="entmax15", attention_kernel="fused"))
    auto = AttentionOptions.from_args(Namespace(attention_activation="entmax15", attention_kernel="auto"))
    assert auto.kernel == "auto"  # auto: AdaSplash where installed, eager entmax elsewhere
    monkeypatch.setattr(config, "triton_available", lambda: False)
    with pytest.raises(ValueError, match="--attention-kernel fused: ReLA's kernel needs triton"):
        AttentionOptions.from_args(Namespace(attention_activation="rela", attention_kernel="fused", rela_norm="layer"))


def test_attention_kernel_reaches_every_attention(toy_data, capsys):
    from fairseq_rela.attention import ReLAMultiheadAttention

    _, model = build(toy_data, "--attention-kernel", "eager")
    assert {m.kernel for m in model.modules() if isinstance(m, ReLAMultiheadAttention)} == {"eager"}
    with pytest.raises(SystemExit):
        build(toy_data, "--attention-kernel", "flash")
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "error: argument --attention-kernel: invalid choice: 'flash' (choose from 'auto', 'eager', 'fused')")


@pytest.mark.parametrize("value", ["", " , "])
def test_an_empty_attention_activation_in_is_refused(value):
    """--attention-activation-in "" is a bad value (one line), not the default (every attention)."""
    from argparse import Namespace

    from fairseq_rela.attention import ATTENTION_KINDS

    assert AttentionOptions.from_args(Namespace(attention_activation="rela")).apply_to == ATTENTION_KINDS
    with pytest.raises(ValueError, match=r"^--attention-activation-in: unknown value .*; use a comma-separated "
                                         rf"subset of {', '.join(ATTENTION_KINDS)}$"):
        AttentionOptions.from_args(Namespace(attention_activation="rela", attention_activation_in=value))
