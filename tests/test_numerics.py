"""Numerics of the attention core: the RMSNorm backward (float64 gradcheck, fp16 null rows) and
every activation under bf16 autocast on degenerate inputs."""
import pytest
import torch
import torch.nn.functional as F

from fairseq_rela.attention import ReLAMultiheadAttention
from fairseq_rela.normalization import build_head_norm, rms_norm

E, H = 16, 4


@pytest.mark.parametrize("gated", [True, False])
def test_rms_norm_backward_passes_gradcheck_in_float64(gated):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 2, 8, dtype=torch.double, generator=g).requires_grad_()
    weight = torch.randn(8, dtype=torch.double, generator=g).requires_grad_()
    gate = torch.randn(8, dtype=torch.double, generator=g).requires_grad_() if gated else None
    inputs = (z, weight, gate) if gated else (z, weight)
    assert torch.autograd.gradcheck(lambda *a: rms_norm(*a, eps=1e-8) if gated else rms_norm(*a, None, 1e-8), inputs)


@pytest.mark.parametrize("gated", [True, False])
def test_rms_norm_equals_the_autograd_formula_in_fp32(gated):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(5, 3, E, generator=g)
    weight, gate = torch.randn(E, generator=g), torch.randn(E, generator=g)
    dy = torch.randn(5, 3, E, generator=g)
    args = [t.clone().requires_grad_() for t in (z, weight, gate)]
    ours = rms_norm(args[0], args[1], args[2] if gated else None, 1e-8)
    ours.backward(dy)
    ref_args = [t.clone().requires_grad_() for t in (z, weight, gate)]
    ref = F.rms_norm(ref_args[0], (E,), ref_args[1], 1e-8)
    if gated:
        ref = ref * torch.sigmoid(ref_args[0] * ref_args[2])
    ref.backward(dy)
    torch.testing.assert_close(ours, ref)
    for a, b in zip(args if gated else args[:2], ref_args if gated else ref_args[:2]):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5)


def _null_rows_setup(dtype, variant):
    """Cross-attention over 3 sentences: queries 0-1 are zero (all scores 0: null rows) and sentence 2
    is fully masked; upstream gradient ``scale`` on those rows, 1 elsewhere."""
    torch.manual_seed(0)
    mha = ReLAMultiheadAttention(E, H, activation="rela", head_norm=build_head_norm("rms", variant, E),
                                 encoder_decoder_attention=True).train()
    with torch.no_grad():
        mha.q_proj.bias.zero_()
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(6, 3, E, generator=g), torch.randn(7, 3, E, generator=g)
    q[:2] = 0.0
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[2] = True
    pad[0, -2:] = True
    special = torch.zeros(6, 3, 1)
    special[:2] = 1.0
    special[:, 2] = 1.0
    mha = mha.to(dtype)
    return mha, q.to(dtype), k.to(dtype), pad, special


def _grads(mha, q, k, pad, dout):
    mha.zero_grad(set_to_none=True)
    q, k = q.clone().requires_grad_(), k.clone().requires_grad_()
    out, _ = mha(q, k, k, key_padding_mask=pad, static_kv=True)
    out.backward(dout.to(out.dtype))
    grads = {n: p.grad.float() for n, p in mha.named_parameters()}
    grads.update(query=q.grad.float(), key=k.grad.float())
    return grads


@pytest.mark.parametrize("variant", ["g", "i"])
@pytest.mark.parametrize("scale", [1.0, 8.0, 2.0**10, 2.0**15])
def test_fp16_gradients_on_null_and_masked_rows_are_finite_and_match_fp32(variant, scale):
    mha16, q16, k16, pad, special = _null_rows_setup(torch.float16, variant)
    mha32 = _null_rows_setup(torch.float32, variant)[0]
    mha32.load_state_dict({n: p.float() for n, p in mha16.state_dict().items()})  # the same fp16 values
    g = torch.Generator().manual_seed(2)
    dout = torch.randn(6, 3, E, generator=g).clamp(-1, 1) * (1 + special * (scale - 1))
    mha16.dropout_module.p = mha32.dropout_module.p = 0.0
    g16 = _grads(mha16, q16, k16, pad, dout)
    g32 = _grads(mha32, q16.float(), k16.float(), pad, dout)
    for name, ref in g32.items():
        # the output bias sums the upstream gradient of every row: past fp16's range in fp32 already
        fits = ref.abs() < 65000
        assert fits.all() or name == "out_proj.bias", name
        assert torch.isfinite(g16[name][fits]).all(), name
        tol = 1e-2 * ref[fits].abs().max().item() + 1e-3  # fp16 precision, relative to the gradient's size
        torch.testing.assert_close(g16[name][fits], ref[fits], atol=tol, rtol=1e-2, msg=name)
    assert (g32["v_proj.weight"] != 0).any() and (g32["head_norm.weight"] != 0).any()
    with torch.no_grad():
        _, w = mha32(q16.float(), k16.float(), k16.float(), key_padding_mask=pad, static_kv=True)
    assert (w[:, :2] == 0).all() and (w[2] == 0).all() and (w[:2, 2:] > 0).any()  # (B, T, S): null rows are null


ACTIVATIONS = ["rela", "sparsemax", "entmax15"]


def _mha(activation):
    torch.manual_seed(0)
    norm = build_head_norm("rms", "g", E) if activation == "rela" else None
    return ReLAMultiheadAttention(E, H, activation=activation, head_norm=norm, self_attention=True).train()


def _cases():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(9, 2, E, generator=g)
    full_pad = torch.zeros(2, 9, dtype=torch.bool)
    full_pad[1] = True
    yield "fully masked rows", x, full_pad, None
    yield "all-negative rows", x, None, "negative"
    yield "huge scores", x * 1e3, None, None
    yield "length 1", x[:1], None, None
    yield "length 1024", torch.randn(1024, 1, E, generator=g), None, None


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("case", [c[0] for c in _cases()])
def test_bf16_autocast_forward_and_backward_stay_finite(activation, case):
    _, x, pad, special = next(c for c in _cases() if c[0] == case)
    mha = _mha(activation)
    if special == "negative":  # q = -k for every token: every score of a query with itself is < 0
        with torch.no_grad():
            mha.q_proj.weight.copy_(-mha.k_proj.weight)
            mha.q_proj.bias.copy_(-mha.k_proj.bias)
    T = x.size(0)
    causal = torch.triu(torch.full((T, T), float("-inf")), 1)
    x = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, w = mha(x, x, x, key_padding_mask=pad, attn_mask=causal, need_weights=True)
    assert torch.isfinite(out).all() and torch.isfinite(w).all()
    if pad is not None:
        assert (w[1] == 0).all()  # a fully masked row attends nowhere
    out.float().pow(2).mean().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in mha.parameters() if p.grad is not None)
