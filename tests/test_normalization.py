"""ReLA's head normalisers (normalization.py): initialisation as in the authors' code (bzhangGo/zero,
modules/rela.py), the RMSNorm backward (float64 gradcheck, fp32 formula) and fp16 gradients on null rows."""
import math

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from fairseq_rela.attention import ReLAMultiheadAttention
from fairseq_rela.normalization import GatedRMSNorm, RMSNorm, build_head_norm, rms_norm
from tests.helpers import build

pytestmark = pytest.mark.unit

E, H = 16, 4
AUTHORS_EPS = 1e-8  # bzhangGo/zero, utils/dtype.py: epsilon(), the eps of modules/rela.py's (gated_)rms_norm


def _ks_uniform(values: torch.Tensor, bound: float) -> float:
    """Kolmogorov-Smirnov p-value of ``values`` against U(-bound, bound)."""
    return stats.kstest(values.double().numpy(), "uniform", args=(-bound, 2 * bound)).pvalue


@pytest.mark.parametrize("dim", [64, 512, 2048])
def test_gate_starts_uniform_unit_scaling(dim):
    """gate ~ U(-√(3/d), √(3/d)) (TF1 variance_scaling, fan_avg, uniform, gain 1), scale = 1."""
    torch.manual_seed(dim)
    norms = [GatedRMSNorm(dim) for _ in range(20)]
    gates = torch.cat([n.gate.detach() for n in norms])
    bound = math.sqrt(3.0 / dim)
    assert gates.abs().max() <= bound
    assert gates.abs().max() > 0.95 * bound  # fills the interval, not a narrower one
    assert _ks_uniform(gates, bound) > 1e-3
    assert abs(gates.var().item() - bound ** 2 / 3) < 0.1 * bound ** 2 / 3  # variance 1/d
    assert all(torch.equal(n.weight.detach(), torch.ones(dim)) for n in norms)


def test_gate_is_about_one_half_at_start():
    torch.manual_seed(0)
    norm = GatedRMSNorm(512)
    z = torch.randn(7, 3, 512)
    gate = torch.sigmoid(norm.gate * z)
    assert (gate - 0.5).abs().max() < 0.2 and abs(gate.mean().item() - 0.5) < 0.01


def test_gate_init_ones_keeps_the_old_default():
    norm = build_head_norm("rms", "g", 256, gate_init="ones")
    assert torch.equal(norm.gate.detach(), torch.ones(256))
    with pytest.raises(ValueError, match="--rela-gate-init: unknown value 'zeros'"):
        GatedRMSNorm(8, gate_init="zeros")


def test_rela_i_gain_starts_uniform():
    torch.manual_seed(3)
    gains = torch.cat([RMSNorm(512, uniform_gain=True).weight.detach() for _ in range(20)])
    bound = math.sqrt(3.0 / 512)
    assert gains.abs().max() <= bound and _ks_uniform(gains, bound) > 1e-3


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("gated", [True, False])
def test_inference_path_equals_the_autograd_path_bit_for_bit(gated, dtype):
    """Under no_grad, rms_norm skips its autograd function (issue 34): every output bit is the same,
    null rows (all-zero z) included, at the head widths of the models we train (64..1024)."""
    g = torch.Generator().manual_seed(2)
    for dim in (16, 64, 256, 512, 1024):
        for scale in (1e-3, 1.0, 30.0):
            z = (torch.randn(9, 4, dim, generator=g) * scale).to(dtype)
            z[0] = 0.0
            weight, gate = (torch.randn(dim, generator=g).to(dtype) for _ in range(2))
            trained = rms_norm(z.clone().requires_grad_(), weight, gate if gated else None, 1e-8)
            with torch.no_grad():
                served = rms_norm(z, weight, gate if gated else None, 1e-8)
            assert served.dtype == trained.dtype == dtype
            assert torch.equal(served, trained.detach()), (dim, scale)


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


@pytest.mark.parametrize("variant", ["g", "i"])
def test_model_built_from_options_normalises_with_the_authors_eps(toy_data, variant):
    """The eps nobody passes: every normaliser of a model built from the command line computes
    ``z / √(mean(z²) + 1e-8)``, seen on a row with mean(z²) = 1e-8 (eps 1e-5 would give 22x less)."""
    _, model = build(toy_data, "--attention-activation", "rela", "--rela-variant", variant)
    norms = [m for m in model.modules() if isinstance(m, RMSNorm)]
    assert len(norms) == 6 and all(isinstance(n, GatedRMSNorm) == (variant == "g") for n in norms)
    for norm in norms:
        z = torch.full((2, 1, norm.weight.numel()), 1e-4)
        expected = norm.weight * z / math.sqrt(1e-8 + AUTHORS_EPS)
        if variant == "g":
            expected = expected * torch.sigmoid(norm.gate * z)
        torch.testing.assert_close(norm(z), expected, rtol=1e-5, atol=0)
        torch.testing.assert_close(norm.linearize(z).row_scale, torch.full((2, 1, 1), 1 / math.sqrt(2e-8)), rtol=1e-5, atol=0)
    z = torch.full((1, 8), 1e-4)
    torch.testing.assert_close(rms_norm(z, torch.ones(8)), z / math.sqrt(1e-8 + AUTHORS_EPS), rtol=1e-5, atol=0)
