"""Fused kernels (fairseq_rela/kernels/): ReLA's Triton kernel against the eager path, forward and
gradients, with every mask kind and dropout, run on the CPU by Triton's interpreter (fp32); the
attention's choice of path; AdaSplash's mask translation against the eager entmax path (a stand-in
with AdaSplash's documented semantics: the real package runs on CUDA only); a model trained both ways."""
import os

os.environ["TRITON_INTERPRET"] = "1"  # before the kernels are defined: Triton's interpreter runs them on the CPU

import logging  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from fairseq_rela.activations import ACTIVATIONS, rela  # noqa: E402
from fairseq_rela.attention import ReLAMultiheadAttention  # noqa: E402
from fairseq_rela import kernels  # noqa: E402
from fairseq_rela.kernels import sparse  # noqa: E402
from fairseq_rela.kernels.rela_triton import dropout_keep, rela_attention  # noqa: E402
from fairseq_rela.kernels.tiles import LaunchPlan  # noqa: E402
from tests.helpers import REPO, batch, build  # noqa: E402

B, H, T, S, D = 2, 2, 19, 23, 12  # T, S not multiples of the 16-wide test tiles; D padded to 16
TILES = LaunchPlan.uniform(16, 16, 16)


def _qkv(t=T, s=S, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, n, D, generator=g).requires_grad_() for n in (t, s, s)]


def _masks(kind, t=T, s=S):
    """(mask, bias, causal) as ReLAMultiheadAttention._mask gives them, for one mask kind."""
    g = torch.Generator().manual_seed(1)
    pad = torch.zeros(B, s, dtype=torch.bool)
    pad[0, :4] = True  # left padding
    pad[1, s - 3:] = True  # right padding
    if kind == "none":
        return None, None, False
    if kind == "padding":
        return pad[:, None, None, :], None, False
    if kind == "padding_all":  # one sentence entirely padding: its queries attend nowhere
        pad[1] = True
        return pad[:, None, None, :], None, False
    if kind == "causal":
        return None, None, True
    attn_mask = torch.randn(t, s, generator=g)
    attn_mask[torch.rand(t, s, generator=g) < 0.3] = -1e8  # fairseq's blocking value
    attn_mask[:, 0] = float("-inf")
    mask, bias = ReLAMultiheadAttention._mask(pad if kind == "float+padding" else None, attn_mask, 1)
    return mask, bias, False


def _eager(q, k, v, mask, bias, causal, keep=None, p=0.0):
    if causal:
        future = torch.ones(q.size(2), k.size(2), dtype=torch.bool).triu(1 + k.size(2) - q.size(2))
        mask = future if mask is None else mask | future
    w = rela(q @ k.transpose(-1, -2), mask, bias)
    if keep is not None:
        w = w * keep / (1 - p)
    return w @ v


def _grads(out, inputs, seed=2):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad(out, inputs, g)


@pytest.mark.unit
@pytest.mark.parametrize("kind", ["none", "padding", "padding_all", "causal", "float", "float+padding"])
def test_forward_and_gradients_match_the_eager_path(kind):
    q, k, v = _qkv()
    mask, bias, causal = _masks(kind)
    out = rela_attention(q, k, v, mask, bias, causal=causal, plan=TILES)
    ref = _eager(q, k, v, mask, bias, causal)
    assert ref.abs().max() > 1  # not vacuous: most weights are not blocked
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(_grads(out, (q, k, v)), _grads(ref, (q, k, v))):
        assert want.abs().max() > 0.1
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    if kind == "padding_all":
        assert out[1].abs().max() == 0  # attends nowhere: exactly 0, finite gradient


@pytest.mark.unit
def test_many_batch_heads_swap_the_grid_axes(monkeypatch):
    from fairseq_rela.kernels import rela_triton

    monkeypatch.setattr(rela_triton, "MAX_GRID_Y", B * H - 1)  # as if B*H exceeded CUDA's 65,535
    q, k, v = _qkv()
    mask, bias, causal = _masks("float+padding")
    out = rela_attention(q, k, v, mask, bias, causal=True, plan=TILES)
    ref = _eager(q, k, v, mask, bias, True)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(_grads(out, (q, k, v)), _grads(ref, (q, k, v))):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.unit
def test_causal_with_more_keys_than_queries_is_bottom_right_aligned():
    q, k, v = _qkv(t=5, s=S)  # incremental decoding: the last 5 of 23 positions
    out = rela_attention(q, k, v, causal=True, plan=TILES)
    torch.testing.assert_close(out, _eager(q, k, v, None, None, True), rtol=1e-5, atol=1e-5)


@pytest.mark.unit
def test_dropout_is_the_mask_the_kernel_reports_in_forward_and_backward():
    q, k, v = _qkv()
    mask, bias, _ = _masks("float+padding")
    p = 0.3
    out = rela_attention(q, k, v, mask, bias, dropout_p=p, seed=11, plan=TILES)
    keep = dropout_keep((B, H, T, S), p, 11, q.device)
    ref = _eager(q, k, v, mask, bias, False, keep, p)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(_grads(out, (q, k, v)), _grads(ref, (q, k, v))):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    no_drop = _eager(q, k, v, mask, bias, False)
    assert (out - no_drop).abs().max() > 0.1  # dropout did something


@pytest.mark.unit
def test_dropout_mask_statistics_and_seeds():
    p, shape = 0.25, (2, 3, 64, 80)
    keep = dropout_keep(shape, p, 5, "cpu")
    n = keep.numel()
    assert abs(keep.float().mean().item() - (1 - p)) < 4 * math.sqrt(p * (1 - p) / n)  # 4 standard errors
    assert torch.equal(keep, dropout_keep(shape, p, 5, "cpu"))  # the backward regenerates it
    assert not torch.equal(keep, dropout_keep(shape, p, 6, "cpu"))
    assert not torch.equal(keep[0, 0], keep[0, 1]) and not torch.equal(keep[0, 0], keep[1, 0])  # heads differ
    assert keep.float().mean(dim=(0, 1, 2)).min() > 0.5 and keep.float().mean(dim=(0, 1, 3)).min() > 0.5
    torch.manual_seed(3)  # the default seed comes from torch's generator: reproducible
    q, k, v = _qkv()
    a = rela_attention(q, k, v, dropout_p=0.5, plan=TILES)
    torch.manual_seed(3)
    assert torch.equal(a, rela_attention(q, k, v, dropout_p=0.5, plan=TILES))


def _attention(activation="rela", kernel="fused", **kwargs):
    torch.manual_seed(0)
    return ReLAMultiheadAttention(32, 2, activation=activation, kernel=kernel, self_attention=True, **kwargs)


@pytest.mark.unit
def test_attention_module_fused_equals_eager_with_padding_and_future_mask():
    fused, eager = _attention(), _attention(kernel="eager")
    x = torch.randn(9, 3, 32)
    pad = torch.zeros(3, 9, dtype=torch.bool)
    pad[0, :3] = True
    future = torch.triu(torch.full((9, 9), float("-inf")), 1)
    for kwargs in (dict(key_padding_mask=pad), dict(attn_mask=future)):
        out, w = fused(x, x, x, need_weights=False, **kwargs)
        ref, _ = eager(x, x, x, need_weights=False, **kwargs)
        assert w is None
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        g = torch.randn_like(out)
        got = torch.autograd.grad(out, list(fused.parameters()), g)
        want = torch.autograd.grad(ref, list(eager.parameters()), g)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.unit
def test_beam_shared_cross_attention_step_fused_equals_eager():
    """One decoding step of a cross-attention whose encoder states are shared by a beam of 3 (the
    queries folded into one row block per sentence), with left-padded sources."""
    outs = []
    src = torch.randn(6, 2, 32)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[0, :2] = True
    beam = 3
    key = src.repeat_interleave(beam, dim=1)  # (S, B*beam, E), as fairseq's beam search expands them
    pad_beam = pad.repeat_interleave(beam, dim=0)
    query = torch.randn(1, 2 * beam, 32)
    for kernel in ("eager", "fused"):
        torch.manual_seed(0)
        cross = ReLAMultiheadAttention(32, 2, activation="rela", kernel=kernel, encoder_decoder_attention=True)
        cross.set_beam_size(beam)
        state = {}
        out, _ = cross(query, key, key, key_padding_mask=pad_beam, incremental_state=state, static_kv=True,
                       need_weights=False)
        assert int(cross._get_input_buffer(state)["beam_group"]) == beam  # folded: the fused path saw group 3
        outs.append(out)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)


@pytest.mark.unit
def test_path_choice():
    rela_fused, rela_auto, rela_eager = _attention(), _attention(kernel="auto"), _attention(kernel="eager")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert rela_auto._fused_path(cuda, 7, 0.1) == "rela"
    assert rela_auto._fused_path(cuda, 1, 0.0) is None  # one-query decoding steps stay eager
    assert rela_auto._fused_path(cpu, 7, 0.0) is None  # CPU behaviour unchanged
    assert rela_fused._fused_path(cpu, 1, 0.0) == "rela"  # forced, under the interpreter
    assert rela_eager._fused_path(cuda, 7, 0.0) is None
    softmax = _attention("softmax", kernel="auto")
    assert softmax._fused_path(cpu, 7, 0.1) == "sdpa"
    assert _attention("softmax", kernel="eager")._fused_path(cpu, 7, 0.1) is None
    x = torch.randn(5, 2, 32)
    out, w = rela_fused(x, x, x, need_weights=True)  # a caller needs the weights: eager, exact
    assert w is not None and w.shape == (2, 5, 5)
    with pytest.raises(ValueError, match="--attention-kernel: unknown value 'flash'"):
        _attention(kernel="flash")


@pytest.mark.unit
def test_fused_on_a_cpu_without_the_interpreter_warns_once_and_runs_eager(monkeypatch, caplog):
    """Asked for the kernel where Triton cannot run it: the eager path, and one warning saying so."""
    monkeypatch.delenv("TRITON_INTERPRET")
    kernels.warn_eager_instead.cache_clear()
    fused, eager = _attention(), _attention(kernel="eager")
    eager.load_state_dict(fused.state_dict())
    x = torch.randn(5, 2, 32)
    with caplog.at_level(logging.WARNING):
        assert fused._fused_path(torch.device("cpu"), 5, 0.0) is None
        torch.testing.assert_close(fused(x, x, x)[0], eager(x, x, x)[0])
        fused(x, x, x)
    said = [r.getMessage() for r in caplog.records if "--attention-kernel fused" in r.getMessage()]
    assert len(said) == 1 and "TRITON_INTERPRET=1" in said[0] and "on cpu the eager path" in said[0]
    kernels.warn_eager_instead.cache_clear()


FAKE_ADASPLASH = '''
"""Stand-in for adasplash's adasplash_v1 on the CPU, with its documented semantics: scores q·k/√d,
right-padded lengths (varlen) that also zero the padded query rows, entmax-α by bisection."""
import math
import torch
from entmax import entmax_bisect

calls = []

def adasplash_v1(q, k, v, alpha=1.5, is_causal=False, varlen=None, niter=10):
    assert q.shape == k.shape == v.shape and q.is_contiguous() and k.is_contiguous() and varlen.dim() == 1
    calls.append(alpha)
    n = q.size(2)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.size(-1))
    valid = torch.arange(n)[None, :] < varlen[:, None].long()
    s = s.masked_fill(~valid[:, None, None, :], float("-inf"))
    p = entmax_bisect(s, alpha=alpha, dim=-1, n_iter=60)
    return (p @ v).masked_fill(~valid[:, None, :, None], 0.0)
'''


@pytest.fixture
def fake_adasplash(tmp_path, monkeypatch):
    (tmp_path / "adasplash.py").write_text(textwrap.dedent(FAKE_ADASPLASH))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "adasplash", raising=False)
    available = sparse.available  # looked up once per process: forget the answer on both sides of the fake
    available.cache_clear()
    yield
    sys.modules.pop("adasplash", None)
    available.cache_clear()


@pytest.mark.unit
@pytest.mark.parametrize("activation", ["sparsemax", "entmax15"])
def test_adasplash_translation_matches_eager_entmax(activation, fake_adasplash):
    assert sparse.available()
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 10, 16) for _ in range(3))
    q = q * 2 / math.sqrt(16)  # scaled as the attention scales it: sparse enough to have zeros
    pad = torch.zeros(2, 10, dtype=torch.bool)
    pad[0, 7:] = True
    out = sparse.fused_sparse_attention(activation, q, k, v, pad, None)
    ref = ACTIVATIONS[activation].weights(q @ k.transpose(-1, -2), pad[:, None, None, :]) @ v
    valid = ~pad[:, None, :, None]
    torch.testing.assert_close(out * valid, ref * valid, rtol=1e-4, atol=1e-4)
    assert (out[0, :, 7:] == 0).all()  # padded query rows: 0 (no later computation reads them)
    import adasplash

    assert adasplash.calls == [sparse.ALPHAS[activation]]
    left = torch.zeros(2, 10, dtype=torch.bool)
    left[0, :2] = True  # fairseq's left-padded source: not expressible, the caller stays eager
    assert sparse.fused_sparse_attention(activation, q, k, v, left, None) is None
    assert sparse.fused_sparse_attention(activation, q, k, v, None, torch.zeros(10, 10)) is None
    assert sparse.fused_sparse_attention(activation, q[:, :, :4], k, v, None, None) is None  # T != S
    assert sparse.fused_sparse_attention(activation, q[..., :12], k[..., :12], v, None, None) is None  # head 12
    wide = torch.zeros(2, 2, 10, 256)  # AdaSplash compiles 256, but its tau kernel overflows a T4's shared memory
    assert sparse.fused_sparse_attention(activation, wide, wide, wide, None, None) is None
    full = sparse.fused_sparse_attention(activation, q, k, v, None, None)
    torch.testing.assert_close(full, ACTIVATIONS[activation].weights(q @ k.transpose(-1, -2), None) @ v,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.unit
def test_adasplash_dispatch(fake_adasplash, monkeypatch):
    module = _attention("sparsemax", kernel="auto")
    cuda = torch.device("cuda")
    assert module._fused_path(cuda, 7, 0.0) == "adasplash"
    assert module._fused_path(cuda, 7, 0.1) is None  # AdaSplash has no attention dropout
    assert module._fused_path(torch.device("cpu"), 7, 0.0) is None  # eager entmax elsewhere
    monkeypatch.setattr(sparse, "available", lambda: False)
    assert module._fused_path(cuda, 7, 0.0) is None


@pytest.mark.e2e
def test_model_trains_to_the_same_loss_fused_and_eager(toy_data):
    losses = {}
    for kernel in ("eager", "fused"):
        task, model = build(toy_data, "--attention-activation", "rela", "--attention-kernel", kernel,
                            "--dropout", "0.1", "--criterion", "label_smoothed_cross_entropy")
        assert {m.kernel for m in model.modules() if isinstance(m, ReLAMultiheadAttention)} == {kernel}
        criterion = task.build_criterion(model.args)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        sample = batch(task, 8)
        torch.manual_seed(1)  # the same residual-dropout masks both ways (attention dropout is 0)
        losses[kernel] = []
        for _ in range(3):
            optimizer.zero_grad()
            loss, _, _ = criterion(model, sample)
            loss.backward()
            optimizer.step()
            losses[kernel].append(loss.item())
    assert losses["eager"][-1] < losses["eager"][0]  # it trained
    assert losses["fused"] == pytest.approx(losses["eager"], rel=1e-5)


@pytest.mark.e2e
def test_benchmark_script_refuses_without_cuda_in_one_line():
    import subprocess

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark_kernel.py")], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == ["benchmark_kernel.py: error: needs a CUDA GPU (--cpu-smoke: "
                                                "a tiny fp32 run under Triton's interpreter)"], proc.stderr


@pytest.mark.e2e
def test_benchmark_script_cpu_smoke(tmp_path):
    import json
    import subprocess

    out = tmp_path / "kernel.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark_kernel.py"), "--cpu-smoke", "--output",
                           str(out)], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    checks = [r for r in rows if r["part"] == "check"]
    assert {r["kind"] for r in checks} == {"none", "padding", "padding_all", "causal", "float", "float+padding",
                                           "dropout"}
    assert all(r["ok"] and max(r["max_rel_err_out_dq_dk_dv"]) < 1e-4 for r in checks)
    rows = [r for r in rows if r["part"] != "check"]
    variants = {(r["part"], r["variant"]) for r in rows}
    for part, name in (("op_fwd_bwd", "rela-fused"), ("op_fwd_bwd", "rela-eager"), ("op_fwd_bwd", "softmax-sdpa"),
                       ("op_decode_step", "rela-fused"), ("train_step", "rela-g-fused"), ("train_step", "rela-g-eager"),
                       ("train_step", "fairseq-softmax"), ("train_step", "fairseq-softmax-2")):
        assert (part, name) in variants, (part, name)
    assert all(isinstance(r["ms"], float) and r["ms"] > 0 for r in rows)
    assert "| op_fwd_bwd | float32 | 40 | rela-fused |" in proc.stdout


@pytest.mark.e2e  # beam searches under Triton's interpreter
def test_beam_search_with_the_kernel_equals_eager(toy_data):
    """Incremental steps (one query, cached keys) and the beam-folded cross-attention through the kernel."""
    from fairseq.sequence_generator import SequenceGenerator

    results = {}
    for kernel in ("eager", "fused"):
        task, model = build(toy_data, "--attention-activation", "rela", "--attention-kernel", kernel)
        gen = SequenceGenerator([model], task.target_dictionary, beam_size=4, max_len_b=10)
        results[kernel] = gen.generate([model], batch(task, 4))
    for eager, fused in zip(results["eager"], results["fused"]):
        for a, b in zip(eager, fused):
            assert torch.equal(a["tokens"], b["tokens"])
            torch.testing.assert_close(a["positional_scores"], b["positional_scores"], atol=1e-4, rtol=1e-4)
