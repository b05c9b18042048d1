"""Independent reference implementations, written loop-by-loop from the papers' formulas."""
import math

import torch


def sparsemax_ref(z: torch.Tensor) -> torch.Tensor:
    """Sparsemax of a 1-D vector by the sort-based closed form (Martins & Astudillo 2016, alg. 1)."""
    zs, _ = torch.sort(z.double(), descending=True)
    k = torch.arange(1, len(z) + 1, dtype=torch.double)
    support = 1 + k * zs > torch.cumsum(zs, 0)
    k_max = int(support.nonzero().max()) + 1
    tau = (zs[:k_max].sum() - 1) / k_max
    return torch.clamp(z.double() - tau, min=0)


def entmax15_ref(z: torch.Tensor, iters: int = 200) -> torch.Tensor:
    """1.5-entmax by bisection on tau: p = [z/2 - tau]_+^2 summing to 1 (Peters et al. 2019)."""
    x = z.double() / 2
    lo, hi = x.max() - 1.0, x.max()
    for _ in range(iters):
        tau = (lo + hi) / 2
        if torch.clamp(x - tau, min=0).pow(2).sum() > 1:
            lo = tau
        else:
            hi = tau
    return torch.clamp(x - (lo + hi) / 2, min=0).pow(2)


def attention_ref(mha, query, key, key_padding_mask=None, causal=False, activation="rela"):
    """y_i = W_O N(concat_h Σ_j α^h_ij v^h_j) + b_O with explicit loops over batch, head and query.

    ``mha`` supplies the parameters only; its forward is never called.
    """
    T, B, E = query.shape
    S = key.shape[0]
    H, d = mha.num_heads, mha.head_dim
    out = torch.zeros(T, B, E, dtype=torch.double)
    Wq, Wk, Wv = (p.weight.double() for p in (mha.q_proj, mha.k_proj, mha.v_proj))
    bq, bk, bv = (p.bias.double() for p in (mha.q_proj, mha.k_proj, mha.v_proj))
    for b in range(B):
        for i in range(T):
            z = torch.zeros(E, dtype=torch.double)
            for h in range(H):
                sl = slice(h * d, (h + 1) * d)
                q = (query[i, b].double() @ Wq.T + bq)[sl]
                scores = []
                for j in range(S):
                    k = (key[j, b].double() @ Wk.T + bk)[sl]
                    blocked = (key_padding_mask is not None and bool(key_padding_mask[b, j])) or (causal and j > i)
                    scores.append(None if blocked else float(q @ k) / math.sqrt(d))
                valid = [s for s in scores if s is not None]
                if activation == "rela":
                    alpha = [0.0 if s is None else max(s, 0.0) for s in scores]
                else:  # softmax
                    m = max(valid)
                    den = sum(math.exp(s - m) for s in valid)
                    alpha = [0.0 if s is None else math.exp(s - m) / den for s in scores]
                for j in range(S):
                    v = (key[j, b].double() @ Wv.T + bv)[sl]
                    z[sl] += alpha[j] * v
            norm = mha.head_norm
            if hasattr(norm, "gate"):
                z = norm.weight.double() * z / math.sqrt(float((z * z).mean()) + norm.eps) * torch.sigmoid(norm.gate.double() * z)
            elif hasattr(norm, "bias"):
                mu, var = z.mean(), z.var(unbiased=False)
                z = norm.weight.double() * (z - mu) / math.sqrt(float(var) + norm.eps) + norm.bias.double()
            elif hasattr(norm, "weight"):
                z = norm.weight.double() * z / math.sqrt(float((z * z).mean()) + norm.eps)
            out[i, b] = z @ mha.out_proj.weight.double().T + mha.out_proj.bias.double()
    return out
