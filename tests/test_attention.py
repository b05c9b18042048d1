"""ReLAMultiheadAttention (attention.py): equality with stock fairseq for softmax, the direct ReLA formula,
fairseq's mask forms (-inf, -1e8 and -1e4 block; other float values are an additive bias), incremental and
beam-shared states, every activation under bf16 autocast on degenerate inputs, fully blocked query rows
(weights 0 and output b_O on every path) and no host reads of tensor values in a training step."""
import math

import pytest
import torch
from fairseq.modules import MultiheadAttention
from torch.utils._python_dispatch import TorchDispatchMode

from fairseq_rela.attention import ReLAMultiheadAttention
from fairseq_rela.normalization import build_head_norm
from tests.reference import attention_ref

pytestmark = pytest.mark.unit

E, H = 16, 4
T, B = 6, 3  # the mask tests' sequence length and batch size


def _inputs(T=5, S=6, B=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    query, key = torch.randn(T, B, E, generator=g), torch.randn(S, B, E, generator=g)
    pad = torch.zeros(B, S, dtype=torch.bool)
    pad[1, -2:] = True
    return query, key, pad


def _causal(T):
    return torch.triu(torch.full((T, T), float("-inf")), 1)


def _pair(self_attention: bool, **kw):
    torch.manual_seed(0)
    stock = MultiheadAttention(E, H, self_attention=self_attention, encoder_decoder_attention=not self_attention, **kw)
    ours = ReLAMultiheadAttention(E, H, self_attention=self_attention, encoder_decoder_attention=not self_attention, **kw)
    ours.load_state_dict(stock.state_dict())
    return stock, ours


@pytest.mark.parametrize("training", [False, True])
def test_softmax_self_attention_equals_stock_fairseq(training):
    stock, ours = _pair(True)
    stock.train(training), ours.train(training)  # training: stock takes its fused fast path
    q, _, _ = _inputs(T=6, S=6)
    pad = torch.zeros(3, 6, dtype=torch.bool)
    pad[2, -3:] = True
    for need in (False, True):
        a, wa = stock(q, q, q, key_padding_mask=pad, attn_mask=_causal(6), need_weights=need)
        b, wb = ours(q, q, q, key_padding_mask=pad, attn_mask=_causal(6), need_weights=need)
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
        if need:
            torch.testing.assert_close(wb, wa, atol=1e-5, rtol=1e-5)


def test_softmax_cross_attention_equals_stock_fairseq_with_head_weights():
    stock, ours = _pair(False)
    stock.eval(), ours.eval()
    q, k, pad = _inputs()
    a, wa = stock(q, k, k, key_padding_mask=pad, static_kv=True, need_head_weights=True)
    b, wb = ours(q, k, k, key_padding_mask=pad, static_kv=True, need_head_weights=True)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    assert wb.shape == (H, 3, 5, 6)
    torch.testing.assert_close(wb, wa, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm,variant", [("rms", "g"), ("rms", "i"), ("layer", "g"), ("none", "g")])
@pytest.mark.parametrize("self_attention", [True, False])
def test_rela_layer_equals_direct_formula(norm, variant, self_attention):
    torch.manual_seed(1)
    mha = ReLAMultiheadAttention(
        E, H, activation="rela", head_norm=build_head_norm(norm, variant, E),
        self_attention=self_attention, encoder_decoder_attention=not self_attention,
    ).eval()
    with torch.no_grad():  # make the gain/gate non-trivial
        for p in mha.head_norm.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    q, k, pad = _inputs()
    if self_attention:
        k, pad = q, pad[:, :5]
        out, w = mha(q, q, q, key_padding_mask=pad, attn_mask=_causal(5), need_head_weights=True)
    else:
        out, w = mha(q, k, k, key_padding_mask=pad, need_head_weights=True)
    ref = attention_ref(mha, q, k, key_padding_mask=pad, causal=self_attention)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    assert (w == 0).any() and (w > 0).any()
    blocked = pad[1].expand(q.size(0), k.size(0))  # sentence 1's padded keys, for every query
    if self_attention:
        blocked = blocked | torch.ones_like(blocked).triu(1)
    assert blocked.any() and (w[:, 1][:, blocked] == 0).all()


def test_null_attention_row_gives_zero_vector_not_nan():
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        mha = ReLAMultiheadAttention(E, H, activation="rela", head_norm=build_head_norm("rms", "g", E),
                                     encoder_decoder_attention=True).eval().to(dtype)
        with torch.no_grad():
            mha.q_proj.weight.zero_()
            mha.q_proj.bias.fill_(-1.0)
            mha.k_proj.weight.zero_()
            mha.k_proj.bias.fill_(1.0)  # every score is negative: all weights 0
        q, k, _ = _inputs()
        out, w = mha(q.to(dtype), k.to(dtype), k.to(dtype), static_kv=True)
        assert (w == 0).all()
        # a null row: the head output is 0, so the layer returns the output bias alone
        torch.testing.assert_close(out.float(), mha.out_proj.bias.float().expand_as(out), atol=0, rtol=0)


@pytest.mark.parametrize("activation", ["softmax", "rela", "sparsemax", "entmax15"])
def test_gradients_are_finite(activation):
    norm = build_head_norm("rms", "g", E) if activation == "rela" else None
    mha = ReLAMultiheadAttention(E, H, activation=activation, head_norm=norm, self_attention=True, dropout=0.1).train()
    q, _, _ = _inputs()
    q.requires_grad_()
    out, _ = mha(q, q, q, attn_mask=_causal(5))
    out.pow(2).sum().backward()
    assert torch.isfinite(q.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in mha.parameters() if p.grad is not None)


@pytest.mark.parametrize("activation", ["softmax", "rela", "sparsemax", "entmax15"])
def test_incremental_self_attention_matches_full(activation):
    norm = build_head_norm("rms", "g", E) if activation == "rela" else None
    mha = ReLAMultiheadAttention(E, H, activation=activation, head_norm=norm, self_attention=True).eval()
    q, _, _ = _inputs(T=6)
    full, _ = mha(q, q, q, attn_mask=_causal(6))
    state, steps = {}, []
    for t in range(6):
        out, _ = mha(q[t : t + 1], q[t : t + 1], q[t : t + 1], incremental_state=state)
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps), full, atol=1e-5, rtol=1e-5)


def test_beam_shared_encoder_states_match_expanded():
    """set_beam_size: keys computed once per sentence, queries of all beams folded together."""
    mha = ReLAMultiheadAttention(E, H, activation="rela", head_norm=build_head_norm("rms", "g", E),
                                 encoder_decoder_attention=True).eval()
    beam, B = 3, 2
    q, k, pad = _inputs(T=1, S=6, B=B * beam)
    k = k[:, :B].reshape(6, B, 1, E).expand(6, B, beam, E).reshape(6, B * beam, E)
    pad = pad[:B].repeat_interleave(beam, 0)
    ref, wref = mha(q, k, k, key_padding_mask=pad, static_kv=True, need_head_weights=True)
    mha.set_beam_size(beam)
    out, w = mha(q, k, k, key_padding_mask=pad, static_kv=True, incremental_state={}, need_head_weights=True)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(w, wref, atol=1e-6, rtol=1e-6)


def test_unsupported_options_are_refused():
    with pytest.raises(ValueError, match="add_bias_kv"):
        ReLAMultiheadAttention(E, H, add_bias_kv=True, self_attention=True)


def _causal_mask(fill):
    if fill == "bool":
        return torch.ones(T, T, dtype=torch.bool).triu(1)
    return torch.triu(torch.full((T, T), fill), 1)


def _x(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, B, E, generator=g) * 3  # large enough that -1e4 vs -inf would show


def _pad():
    pad = torch.zeros(B, T, dtype=torch.bool)
    pad[1, -2:] = True
    return pad


@pytest.mark.parametrize("fill", [float("-inf"), -1e8, -1e4, "bool"])
@pytest.mark.parametrize("need_weights", [True, False])
def test_softmax_with_every_mask_form_equals_stock_fairseq(fill, need_weights):
    torch.manual_seed(0)
    stock = MultiheadAttention(E, H, self_attention=True).eval()
    ours = ReLAMultiheadAttention(E, H, self_attention=True).eval()
    ours.load_state_dict(stock.state_dict())
    x = _x()
    a, wa = stock(x, x, x, key_padding_mask=_pad(), attn_mask=_causal_mask(fill), need_weights=need_weights)
    b, wb = ours(x, x, x, key_padding_mask=_pad(), attn_mask=_causal_mask(fill), need_weights=need_weights)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    if need_weights:
        torch.testing.assert_close(wb, wa, atol=1e-6, rtol=1e-5)
        assert (wb[:, 0, 1:] == 0).all()  # blocked: exactly 0


def test_softmax_additive_bias_equals_stock_fairseq():
    """A finite bias above the blocking level (ALiBi-like) is added to the scores, as stock does."""
    torch.manual_seed(0)
    stock = MultiheadAttention(E, H, self_attention=True).eval()
    ours = ReLAMultiheadAttention(E, H, self_attention=True).eval()
    ours.load_state_dict(stock.state_dict())
    x = _x(1)
    pos = torch.arange(T, dtype=torch.float)
    bias = -0.5 * (pos[:, None] - pos[None, :]).abs() + _causal_mask(-1e8)
    for need in (True, False):
        a, _ = stock(x, x, x, attn_mask=bias, need_weights=need)
        b, _ = ours(x, x, x, attn_mask=bias, need_weights=need)
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("activation", ["rela", "sparsemax", "entmax15"])
@pytest.mark.parametrize("fill", [float("-inf"), -1e8, -1e4])
def test_float_masks_block_as_the_boolean_mask(activation, fill):
    """ReLA masks multiplicatively (authors' code): blocked positions are exactly 0, with any fill."""
    torch.manual_seed(0)
    norm = build_head_norm("rms", "g", E) if activation == "rela" else None
    mha = ReLAMultiheadAttention(E, H, activation=activation, head_norm=norm, self_attention=True).eval()
    x = _x(2) * 100  # scores far above 1e4 would leak through an additive -1e4 in ReLU(s + mask)
    ref, wref = mha(x, x, x, key_padding_mask=_pad(), attn_mask=_causal_mask("bool"), need_head_weights=True)
    out, w = mha(x, x, x, key_padding_mask=_pad(), attn_mask=_causal_mask(fill), need_head_weights=True)
    assert torch.equal(out, ref) and torch.equal(w, wref)
    assert (w[..., _causal_mask("bool")] == 0).all() and (w > 0).any()


def test_rela_additive_bias_goes_before_the_relu():
    torch.manual_seed(0)
    mha = ReLAMultiheadAttention(E, H, activation="rela", head_norm=build_head_norm("rms", "g", E),
                                 self_attention=True).eval()
    x = _x(3)
    bias = torch.linspace(-2, 2, T * T).view(T, T) + _causal_mask(-1e8)
    _, w = mha(x, x, x, attn_mask=bias, need_head_weights=True)
    q = mha.q_proj(x).view(T, B, H, -1).permute(1, 2, 0, 3) / math.sqrt(E // H)
    k = mha.k_proj(x).view(T, B, H, -1).permute(1, 2, 0, 3)
    expected = torch.relu(q @ k.transpose(-1, -2) + bias).masked_fill(_causal_mask("bool"), 0).transpose(0, 1)
    torch.testing.assert_close(w, expected, atol=1e-5, rtol=1e-5)


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


# --- fully blocked query rows: every activation, every path (README "Masks") ---

ALL_ACTIVATIONS = ["softmax", "rela", "sparsemax", "entmax15"]
BLOCKED_ROW = 2  # the query whose every key is blocked by the float / boolean attn_mask


def _blocking_masks(fill):
    """(key_padding_mask, attn_mask): sentence 1 entirely padded, or query BLOCKED_ROW blocked by the
    causal ``attn_mask`` written with ``fill``; and the (B, T) queries that may attend nowhere."""
    if fill == "key_padding":
        pad = _pad()
        pad[1] = True
        empty = torch.zeros(B, T, dtype=torch.bool)
        empty[1] = True
        return pad, _causal_mask(float("-inf")), empty
    attn = _causal_mask(fill)
    attn[BLOCKED_ROW] = True if fill == "bool" else fill
    empty = torch.zeros(B, T, dtype=torch.bool)
    empty[:, BLOCKED_ROW] = True
    return None, attn, empty


def _blocking_mha(activation):
    torch.manual_seed(0)
    norm = build_head_norm("rms", "g", E) if activation == "rela" else None
    mha = ReLAMultiheadAttention(E, H, activation=activation, head_norm=norm, self_attention=True).eval()
    with torch.no_grad():
        mha.out_proj.bias.normal_()  # fairseq starts it at 0: make "the output is b_O" mean something
    return mha


def _run(mha, pad, attn, need_weights, record=False):
    """Output, weights (or None), the recorder's weights (or None) and the input gradient."""
    x = _x(4).requires_grad_()
    seen = []
    mha.recorder = (lambda module, weights, *rest: seen.append(weights.detach())) if record else None
    try:
        out, w = mha(x, x, x, key_padding_mask=pad, attn_mask=attn, need_weights=need_weights,
                     need_head_weights=need_weights)
    finally:
        mha.recorder = None
    out.pow(2).sum().backward()
    return out.detach(), w, (seen[0] if seen else None), x.grad


@pytest.mark.parametrize("activation", ALL_ACTIVATIONS)
@pytest.mark.parametrize("fill", ["key_padding", float("-inf"), -1e8, -1e4, "bool"])
def test_fully_blocked_query_attends_nowhere_on_every_path(activation, fill):
    """Weights 0 and output b_O (N(0) = 0), finite gradients, and the same output whether the weights
    are requested, a recorder is attached or neither (softmax: the fused SDPA path)."""
    mha = _blocking_mha(activation)
    pad, attn, empty = _blocking_masks(fill)
    ref, _, _, ref_grad = _run(mha, pad, attn, need_weights=False)
    for need, record in ((True, False), (False, True), (True, True)):
        out, w, rec, grad = _run(mha, pad, attn, need, record)
        assert torch.isfinite(out).all() and torch.isfinite(grad).all()
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(grad, ref_grad, atol=1e-4, rtol=1e-4)
        for weights in (w, None if rec is None else rec.transpose(0, 1)):  # both (H, B, T, S)
            if weights is not None:
                assert torch.isfinite(weights).all()
                assert (weights[:, empty] == 0).all() and (weights[:, ~empty] > 0).any()
    torch.testing.assert_close(ref[empty.T], mha.out_proj.bias.detach().expand(int(empty.sum()), E), atol=1e-6, rtol=0)
    assert (ref[~empty.T] != mha.out_proj.bias.detach()).any(-1).all()


@pytest.mark.parametrize("activation", ALL_ACTIVATIONS)
def test_fully_padded_sentence_in_incremental_cross_attention(activation):
    """Incremental decoding (cached encoder keys) gives the fully padded sentence the same b_O as a
    full forward, with and without the weights."""
    torch.manual_seed(0)
    norm = build_head_norm("rms", "g", E) if activation == "rela" else None
    mha = ReLAMultiheadAttention(E, H, activation=activation, head_norm=norm, encoder_decoder_attention=True).eval()
    with torch.no_grad():
        mha.out_proj.bias.normal_()
    q, k, pad = _inputs(T=4, S=6, B=3)
    pad[2] = True
    full, _ = mha(q, k, k, key_padding_mask=pad, static_kv=True, need_weights=False)
    for need in (False, True):
        state, steps = {}, []
        for t in range(4):
            out, w = mha(q[t : t + 1], k, k, key_padding_mask=pad, static_kv=True, incremental_state=state,
                         need_weights=need)
            steps.append(out)
            assert w is None or (torch.isfinite(w).all() and (w[2] == 0).all())
        torch.testing.assert_close(torch.cat(steps), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full[:, 2], mha.out_proj.bias.detach().expand(4, E), atol=1e-6, rtol=0)


@pytest.mark.parametrize("fill", ["key_padding", float("-inf"), -1e8])
@pytest.mark.parametrize("need_weights", [True, False])
def test_fully_blocked_rows_against_stock_fairseq(fill, need_weights):
    """Stock fairseq on a fully blocked query: NaN with the weights (eager softmax over -inf), 0 on its
    fused path, and, for -1e8, a uniform average over the blocked keys.  Ours: every other query equals
    stock; the blocked one attends nowhere (output b_O), as stock's fused path does for -inf/padding."""
    torch.manual_seed(0)
    stock = MultiheadAttention(E, H, self_attention=True).eval()
    ours = ReLAMultiheadAttention(E, H, self_attention=True).eval()
    with torch.no_grad():
        stock.out_proj.bias.normal_()
    ours.load_state_dict(stock.state_dict())
    pad, attn, empty = _blocking_masks(fill)
    x = _x(5)
    a, _ = stock(x, x, x, key_padding_mask=pad, attn_mask=attn, need_weights=need_weights)
    b, _ = ours(x, x, x, key_padding_mask=pad, attn_mask=attn, need_weights=need_weights)
    torch.testing.assert_close(b[~empty.T], a[~empty.T], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b[empty.T], ours.out_proj.bias.detach().expand(int(empty.sum()), E), atol=1e-6, rtol=0)
    fused, _ = stock(x, x, x, key_padding_mask=pad, attn_mask=attn, need_weights=False)
    if fill != -1e8:  # stock's fused path (SDPA) agrees on every row
        torch.testing.assert_close(b, fused, atol=1e-5, rtol=1e-5)


class _NoHostReads(TorchDispatchMode):
    """Fails on any read of a tensor value by Python (``.item()``, ``bool(t)``, ``int(t)``): on a GPU,
    each one waits for every queued kernel."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            raise AssertionError("a tensor value was read on the host")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("activation,need_weights", [("rela", False), ("softmax", False), ("softmax", True)])
@pytest.mark.parametrize("variant", ["g", "i"])
def test_training_step_reads_no_tensor_value_on_the_host(activation, need_weights, variant):
    """Forward and backward of a decoder self-attention (float causal mask, padding, a null row) and a
    cross-attention never synchronise with the device."""
    torch.manual_seed(0)
    norm = build_head_norm("rms", variant, E) if activation == "rela" else None
    self_attn = ReLAMultiheadAttention(E, H, activation=activation, head_norm=norm, self_attention=True).train()
    norm = build_head_norm("rms", variant, E) if activation == "rela" else None
    cross = ReLAMultiheadAttention(E, H, activation=activation, head_norm=norm, encoder_decoder_attention=True).train()
    x, k = _x(6).requires_grad_(), _x(7)
    x.data[0] = 0.0  # a query with a zero head output (ReLA: a null row) after zero biases
    bias = -0.5 * torch.arange(T, dtype=torch.float)[None, :] + _causal_mask(float("-inf"))
    with _NoHostReads():
        for attn in (_causal_mask(float("-inf")), bias):
            y, _ = self_attn(x, x, x, key_padding_mask=_pad(), attn_mask=attn, need_weights=need_weights)
            out, _ = cross(y, k, k, key_padding_mask=_pad(), static_kv=True, need_weights=need_weights)
            out.pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad != 0).any()
