"""fairseq's float attention masks are additive: -inf, -1e8 and -1e4 block, other values are a bias."""
import math

import pytest
import torch
from fairseq.modules import MultiheadAttention

from fairseq_rela.attention import ReLAMultiheadAttention
from fairseq_rela.normalization import build_head_norm

E, H, T, B = 16, 4, 6, 3


def _causal(fill):
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
    a, wa = stock(x, x, x, key_padding_mask=_pad(), attn_mask=_causal(fill), need_weights=need_weights)
    b, wb = ours(x, x, x, key_padding_mask=_pad(), attn_mask=_causal(fill), need_weights=need_weights)
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
    bias = -0.5 * (pos[:, None] - pos[None, :]).abs() + _causal(-1e8)
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
    ref, wref = mha(x, x, x, key_padding_mask=_pad(), attn_mask=_causal("bool"), need_head_weights=True)
    out, w = mha(x, x, x, key_padding_mask=_pad(), attn_mask=_causal(fill), need_head_weights=True)
    assert torch.equal(out, ref) and torch.equal(w, wref)
    assert (w[..., _causal("bool")] == 0).all() and (w > 0).any()


def test_rela_additive_bias_goes_before_the_relu():
    torch.manual_seed(0)
    mha = ReLAMultiheadAttention(E, H, activation="rela", head_norm=build_head_norm("rms", "g", E),
                                 self_attention=True).eval()
    x = _x(3)
    bias = torch.linspace(-2, 2, T * T).view(T, T) + _causal(-1e8)
    _, w = mha(x, x, x, attn_mask=bias, need_head_weights=True)
    q = mha.q_proj(x).view(T, B, H, -1).permute(1, 2, 0, 3) / math.sqrt(E // H)
    k = mha.k_proj(x).view(T, B, H, -1).permute(1, 2, 0, 3)
    expected = torch.relu(q @ k.transpose(-1, -2) + bias).masked_fill(_causal("bool"), 0).transpose(0, 1)
    torch.testing.assert_close(w, expected, atol=1e-5, rtol=1e-5)
