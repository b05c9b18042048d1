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


def symmetrize_ref(forward, reverse, method):
    """Koehn et al.'s symmetrisation as Moses' ``symal`` runs it (its points ordered target first): the
    intersection grown by scanning the grid target-major again and again (a point added during a scan
    is reached later in the same scan when it lies further on) into union points next to an aligned
    point (symal's neighbour order, as (target, source) steps: up, left, down, right, then the
    diagonals) that cover a word unaligned on either side; "final-and" then adds the forward's, then the
    reverse's points whose words are both unaligned, each scanned target-major.  Sets of (source, target)."""
    union = set(forward) | set(reverse)
    if method == "union":
        return union
    links = set(forward) & set(reverse)
    if method == "intersection" or not union:
        return links
    n_src = max(s for s, _ in union) + 1
    n_tgt = max(t for _, t in union) + 1
    steps = [(-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]  # (target, source)

    def src_free(s):
        return all(a != s for a, _ in links)

    def tgt_free(t):
        return all(b != t for _, b in links)

    added = True
    while added:
        added = False
        for t in range(n_tgt):
            for s in range(n_src):
                if (s, t) not in links:
                    continue
                for dt, ds in steps:
                    new = (s + ds, t + dt)
                    if new in union and new not in links and (src_free(new[0]) or tgt_free(new[1])):
                        links.add(new)
                        added = True
    if method == "grow-diag-final-and":
        for direction in (forward, reverse):
            for t in range(n_tgt):
                for s in range(n_src):
                    if (s, t) in direction and src_free(s) and tgt_free(t):
                        links.add((s, t))
    return links
