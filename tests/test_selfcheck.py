"""The self-check before a fused kernel is trusted (fairseq_rela/kernels/selfcheck.py), on the CPU under Triton's
interpreter: the real kernel passes in fp32 and fp16 (the interpreter's dtypes) for every mask kind; injected
failures (OutOfResources at launch, a wrong result, NaN) each fall back to eager with one warning under
``auto`` and are one clear error under ``fused``; verdicts are cached."""
import os

os.environ["TRITON_INTERPRET"] = "1"  # before the kernels are defined: Triton's interpreter runs them on the CPU

import logging  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from triton.runtime.errors import OutOfResources  # noqa: E402

from fairseq_rela.attention import ReLAMultiheadAttention  # noqa: E402
from fairseq_rela.kernels import rela_triton, selfcheck  # noqa: E402

pytestmark = pytest.mark.unit
CPU = torch.device("cpu")
PACKAGE_FLAGS = [(m, b, d) for m in (False, True) for b in (False, True) for d in (False, True)]


@pytest.fixture(autouse=True)
def fresh_verdicts():
    selfcheck.forget()
    yield
    selfcheck.forget()


@pytest.mark.parametrize("flags", PACKAGE_FLAGS, ids=lambda f: "mask={}-bias={}-dropout={}".format(*f))
def test_the_real_kernel_passes_in_fp32(flags):
    assert selfcheck.verdict(CPU, torch.float32, 12, *flags) is None


@pytest.mark.parametrize("flags", [(False, False, False), (True, True, True)], ids=("plain", "mask-bias-dropout"))
def test_the_real_kernel_passes_in_fp16_within_the_stated_bound(flags):
    # fp16 runs in the interpreter (through numpy): output and gradients within 8u of |P||V| etc.
    assert selfcheck.verdict(CPU, torch.float16, 16, *flags) is None


def test_bf16_is_not_testable_in_the_interpreter_and_the_check_says_so():
    # Triton 3.9's interpreter computes bf16 dots wrongly (errors ~1e10): the self-check must refuse it, as it
    # would refuse a kernel that is wrong on a GPU
    reason = selfcheck.verdict(CPU, torch.bfloat16, 16, False, False, False)
    assert reason is not None and "differs from the eager path" in reason


def test_the_check_measures_against_an_independent_eager_reference():
    # the reference of the check equals the eager attention of the package (activations.rela)
    from fairseq_rela.activations import rela

    cfg = selfcheck.KernelConfig("cpu", torch.float32, 8, True, True, False)
    q, k, v, up, mask, bias = selfcheck._problem(cfg, CPU)
    (want, *_), _ = selfcheck._reference(q, k, v, up, mask, bias, None, 0.0)
    torch.testing.assert_close(want, rela(q @ k.transpose(-1, -2), mask, bias) @ v, rtol=1e-6, atol=1e-6)


def _attention(kernel):
    torch.manual_seed(0)
    attn = ReLAMultiheadAttention(32, 4, activation="rela", self_attention=True, kernel=kernel).eval()
    x = torch.randn(9, 2, 32)
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[1, 6:] = True
    return attn, x, pad


def _eager_out(attn, x, pad):
    return attn(x, x, x, key_padding_mask=pad, need_weights=True)[0]  # weights wanted: always the eager path


def _plant(monkeypatch, how):
    """Make the kernel fail as named: raise OutOfResources at launch, return a wrong result, or NaN."""
    if how == "out_of_resources":
        def launch(self):
            raise OutOfResources(114688, 101376, "shared memory")
        monkeypatch.setattr(rela_triton.KernelCall, "launch", launch)
        return
    real = rela_triton.rela_attention

    def broken(*args, **kwargs):
        out = real(*args, **kwargs)
        return out * 1.01 if how == "wrong" else out + float("nan")
    monkeypatch.setattr(rela_triton, "rela_attention", broken)


@pytest.mark.parametrize("how", ["out_of_resources", "wrong", "nan"])
def test_auto_falls_back_to_eager_with_one_warning(how, monkeypatch, caplog):
    attn, x, pad = _attention("auto")
    taken = []
    monkeypatch.setattr(ReLAMultiheadAttention, "_fused_path", lambda self, *a: taken.append("rela") or "rela")
    want = _eager_out(attn, x, pad)
    _plant(monkeypatch, how)
    with caplog.at_level(logging.WARNING, logger="fairseq_rela.kernels.selfcheck"):
        outs = [attn(x, x, x, key_padding_mask=pad, need_weights=False)[0] for _ in range(3)]
    assert taken, "the attention never asked for the kernel"
    for out in outs:
        torch.testing.assert_close(out, want)  # the eager result, not the broken kernel's
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1, said
    cause = {"out_of_resources": "OutOfResources", "wrong": "differs from the eager path", "nan": "non-finite"}[how]
    assert cause in said[0] and "head dim 8" in said[0] and "mask" in said[0], said[0]


@pytest.mark.parametrize("how", ["out_of_resources", "wrong", "nan"])
def test_fused_raises_one_clear_error(how, monkeypatch):
    attn, x, pad = _attention("fused")
    _plant(monkeypatch, how)
    with pytest.raises(selfcheck.KernelCheckError, match="--attention-kernel fused: .*failed its self-check"):
        attn(x, x, x, key_padding_mask=pad, need_weights=False)


def test_a_trusted_kernel_is_used_and_checked_once(monkeypatch):
    attn, x, pad = _attention("fused")
    runs, calls = [], []
    real_check, real_kernel = selfcheck.run_check, rela_triton.rela_attention
    monkeypatch.setattr(selfcheck, "run_check", lambda *a: runs.append(1) or real_check(*a))
    monkeypatch.setattr(rela_triton, "rela_attention", lambda *a, **k: calls.append(1) or real_kernel(*a, **k))
    want = _eager_out(attn, x, pad)
    for _ in range(3):
        torch.testing.assert_close(attn(x, x, x, key_padding_mask=pad, need_weights=False)[0], want,
                                   rtol=1e-5, atol=1e-5)
    assert len(runs) == 1  # cached after the first call
    assert len(calls) == 1 + 3  # the check's own call, then every forward on the kernel
