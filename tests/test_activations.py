import itertools

import pytest
import torch

from fairseq_rela.activations import ACTIVATIONS, entmax15, get_activation, rela, softmax, sparsemax
from tests.reference import entmax15_ref, sparsemax_ref

pytestmark = pytest.mark.unit


def _scores(seed=0, shape=(3, 4, 5, 7)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * 2


def _mask(shape=(3, 1, 5, 7)):
    m = torch.zeros(shape, dtype=torch.bool)
    m[0, ..., 5:] = True  # padding
    m[1, ..., :] = torch.triu(torch.ones(5, 7, dtype=torch.bool), 1)  # causal
    m[2, :, 3, :] = True  # one fully masked row
    return m


def test_rela_is_relu_with_exact_zero_mask():
    s, m = _scores(), _mask()
    w = rela(s.clone(), m)
    expected = torch.where(m.expand_as(s), torch.zeros_like(s), torch.clamp(s, min=0))
    assert torch.equal(w, expected)
    assert (w[m.expand_as(s)] == 0).all()
    assert (w == 0).any() and (w > 0).any()


def test_softmax_rows_sum_to_one_and_match_torch():
    s, m = _scores(), _mask()
    m[2, :, 3, :] = False  # softmax of a fully masked row is undefined (NaN), as in fairseq
    w = softmax(s.clone(), m)
    ref = torch.softmax(s.masked_fill(m, float("-inf")), -1)
    torch.testing.assert_close(w, ref)
    torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))


@pytest.mark.parametrize("fn,ref", [(sparsemax, sparsemax_ref), (entmax15, entmax15_ref)])
def test_sparse_activations_match_reference(fn, ref):
    s, m = _scores(1), _mask()
    w = fn(s, m)
    full = m.expand_as(s)
    assert (w[full] == 0).all()
    for idx in itertools.product(*(range(n) for n in s.shape[:-1])):
        row_mask = full[idx]
        if row_mask.all():
            assert (w[idx] == 0).all()  # fully masked row: zeros, no crash, no NaN
            continue
        expected = torch.zeros(s.shape[-1], dtype=torch.double)
        expected[~row_mask] = ref(s[idx][~row_mask])
        torch.testing.assert_close(w[idx].double(), expected, atol=1e-5, rtol=1e-4)
    assert (w == 0).sum() > full.sum()  # sparse beyond the mask


@pytest.mark.parametrize("name", list(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_no_nan_and_finite_gradients(name, dtype):
    s = _scores(2).to(dtype).requires_grad_()
    m = _mask()
    if name == "softmax":
        m[2, :, 3, :] = False
    w = get_activation(name)(s * 1, m)  # a fresh non-leaf tensor, as the attention passes
    assert w.dtype == dtype and torch.isfinite(w).all()
    w.float().pow(2).sum().backward()
    assert torch.isfinite(s.grad).all()


def test_unknown_activation_names_allowed_values():
    with pytest.raises(ValueError, match="--attention-activation: unknown value 'relu'.*softmax, rela, sparsemax, entmax15"):
        get_activation("relu")
