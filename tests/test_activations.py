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
    w = softmax(s.clone(), m)
    empty = m.all(-1).expand(w.shape[:-1])  # the fully masked row attends nowhere: 0, not NaN
    assert empty.any() and (w[empty] == 0).all()
    ref = torch.softmax(s.masked_fill(m, float("-inf")), -1)
    torch.testing.assert_close(w[~empty], ref[~empty])
    torch.testing.assert_close(w.sum(-1)[~empty], torch.ones_like(w.sum(-1)[~empty]))


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
    m = _mask()  # with a fully masked row
    w = get_activation(name)(s * 1, m)  # a fresh non-leaf tensor, as the attention passes
    assert w.dtype == dtype and torch.isfinite(w).all()
    assert (w[2, :, 3] == 0).all()  # the fully masked row attends nowhere
    w.float().pow(2).sum().backward()
    assert torch.isfinite(s.grad).all() and (s.grad[2, :, 3] == 0).all() and (s.grad != 0).any()


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_bias_is_added_before_the_activation_and_blocked_stays_zero(name):
    """weights(s, mask, bias) == weights(s + bias, mask): one pass, the same weights; blocked exactly 0."""
    fn = get_activation(name)
    s, m = _scores(3), _mask()
    bias = torch.linspace(-2, 2, 35).view(5, 7).masked_fill(m[1, 0], 0.0)  # (T, S), 0 where blocked
    w = fn(s.clone(), m, bias)
    torch.testing.assert_close(w, fn(s + bias, m), atol=1e-6, rtol=1e-5)
    assert (w[m.expand_as(w)] == 0).all() and (w > 0).any()
    torch.testing.assert_close(fn(s.clone(), None, bias), fn(s + bias, None), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("fn,ref", [(sparsemax, sparsemax_ref), (entmax15, entmax15_ref)])
def test_sparse_activations_keep_rows_scored_below_the_mask_fill(fn, ref):
    """A partly masked row whose open scores are all far below the finite fill (-1e4) still puts its
    weight on them (the fill is relative to the row's maximum)."""
    s = torch.tensor([[-2e4, -2e4 + 0.5, -3e4, 5.0, 1e3]])
    m = torch.tensor([[False, False, False, True, True]])
    w = fn(s.clone(), m)
    expected = torch.zeros(5, dtype=torch.double)
    expected[:3] = ref(s[0, :3])
    torch.testing.assert_close(w[0].double(), expected, atol=1e-5, rtol=1e-4)
    assert w.sum().item() == pytest.approx(1.0)


def test_unknown_activation_names_allowed_values():
    with pytest.raises(ValueError, match="--attention-activation: unknown value 'relu'.*softmax, rela, sparsemax, entmax15"):
        get_activation("relu")
