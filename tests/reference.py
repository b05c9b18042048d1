"""Independent reference implementations, written loop-by-loop from the papers' formulas."""
import copy
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


# ALTI and ALTI+ (Ferrando et al. 2022; mt-upc/transformer-contributions-nmt, wrappers/transformer_wrapper.py), loop by
# loop, independent of fairseq_rela.

def ref_alti_from_terms(terms, output):
    """One output row: terms (n, E) T_i(x_j) (cross: the residual last), output (E,) y_i with its biases.
    max(0, ‖y‖₁ − ‖y − T_j‖₁), normalised to sum 1 ('l1' contributions, 'min_sum' normalisation)."""
    y1 = sum(abs(float(e)) for e in output)
    scores = []
    for t in terms:
        dist = sum(abs(float(a) - float(b)) for a, b in zip(output, t))
        scores.append(max(0.0, y1 - dist))
    total = sum(scores)
    return [s / total for s in scores]


def ref_stock_block_alti(attn, layer_norm, query, key, residual, causal, pre_norm):
    """ALTI of one softmax attention block of a stock fairseq layer, for one sentence (batch 1, no padding), from
    the block's inputs: query/key (T|S, E) the attention's inputs, residual (T, E) the state added back.
    Returns (T, S) shares, or (T, S + 1) for cross-attention (the residual last), like the authors' code."""
    H, d = attn.num_heads, attn.head_dim
    T, S, E = query.shape[0], key.shape[0], query.shape[1]
    q = (query @ attn.q_proj.weight.t() + attn.q_proj.bias) * d ** -0.5
    k = key @ attn.k_proj.weight.t() + attn.k_proj.bias
    v = key @ attn.v_proj.weight.t() + attn.v_proj.bias
    w_o, b_o = attn.out_proj.weight, attn.out_proj.bias
    cross = not causal and attn.encoder_decoder_attention
    rows = []
    for i in range(T):
        alpha = []
        for h in range(H):
            sl = slice(h * d, (h + 1) * d)
            scores = torch.stack([q[i, sl] @ k[m, sl] for m in range(S)])
            if causal:
                scores[i + 1:] = float("-inf")
            alpha.append(torch.softmax(scores, 0))
        terms = []
        for j in range(S):
            c = torch.zeros(E, dtype=torch.double)
            for h in range(H):
                sl = slice(h * d, (h + 1) * d)
                c = c + alpha[h][j] * (w_o[:, sl] @ v[j, sl])
            if not cross and j == i:
                c = c + residual[i]
            terms.append(c)
        if cross:
            terms.append(residual[i])
        u = sum(terms) + b_o
        if pre_norm:
            output = u
        else:  # T_i(x_j) = γ ⊙ (c − mean c) / s(u_i), y_i = Σ T + γ ⊙ (b_O − mean b_O) / s(u_i) + β
            s = torch.sqrt(((u - u.mean()) ** 2).mean() + layer_norm.eps)
            g, beta = layer_norm.weight, layer_norm.bias
            terms = [g * (t - t.mean()) / s for t in terms]
            output = sum(terms) + g * (b_o - b_o.mean()) / s + beta
        rows.append(ref_alti_from_terms(terms, output))
    return torch.tensor(rows, dtype=torch.double)


def ref_stock_model_alti(model, src_tokens, prev_output_tokens, pre_norm):
    """Per-layer ALTI of every block of a stock fairseq transformer, one sentence: {(kind, layer): (T, S[+1])}.
    The blocks' inputs are read with forward pre-hooks, as the authors' trace_forward does."""
    model = copy.deepcopy(model).double()
    inputs, hooks = {}, []

    def keep(key):
        def hook(module, args, kwargs):
            inputs[key] = (kwargs.get("query", args[0] if args else None), kwargs.get("key", args[1] if len(args) > 1
                                                                                       else None))
        return hook

    def keep_ln(key):
        def hook(module, args):
            inputs[key] = args[0]
        return hook

    blocks = []
    for i, layer in enumerate(model.encoder.layers):
        blocks.append(("encoder_self", i, layer.self_attn, layer.self_attn_layer_norm, False))
    for i, layer in enumerate(model.decoder.layers):
        blocks.append(("decoder_self", i, layer.self_attn, layer.self_attn_layer_norm, True))
        blocks.append(("cross", i, layer.encoder_attn, layer.encoder_attn_layer_norm, False))
    for kind, i, attn, ln, _ in blocks:
        hooks.append(attn.register_forward_pre_hook(keep((kind, i, "attn")), with_kwargs=True))
        hooks.append(ln.register_forward_pre_hook(keep_ln((kind, i, "ln"))))
    with torch.no_grad():
        model(src_tokens, src_lengths=torch.tensor([src_tokens.size(1)]), prev_output_tokens=prev_output_tokens)
    for h in hooks:
        h.remove()
    out = {}
    with torch.no_grad():
        for kind, i, attn, ln, causal in blocks:
            query, key = (x[:, 0] for x in inputs[(kind, i, "attn")])
            # the residual: the layer's input — pre-norm: the LayerNorm's input; post-norm: the attention's query
            residual = inputs[(kind, i, "ln")][:, 0] if pre_norm else query
            out[(kind, i)] = ref_stock_block_alti(attn, ln, query, key, residual, causal, pre_norm)
    return out


def ref_alti_plus(enc_layers, dec_self_layers, cross_layers):
    """ALTI+ as the authors' get_contribution_rollout: encoder rollout by compute_joint_attention, then the
    decoder's joint [cross source | self × cross residual] matrices rolled out with the encoder's last layer.
    Inputs: lists of (S,S), (T,T), (T,S+1) (residual last).  Returns (L_dec, T, S + T)."""
    joint = enc_layers[0]
    for c in enc_layers[1:]:
        joint = c @ joint
    enc = joint
    S = enc.shape[0]
    C = []
    for self_c, cross_c in zip(dec_self_layers, cross_layers):
        scaled = self_c * cross_c[:, -1:]  # row t of the self block, times the cross block's residual share
        C.append(torch.cat([cross_c[:, :-1], scaled], -1))
    accum = []
    for i, c in enumerate(C):
        rolled = torch.cat([c[:, :S] @ enc, c[:, S:]], -1)
        if i == 0:
            accum.append(rolled)
            continue
        prev = accum[-1]
        new_tgt = rolled[:, S:] @ prev[:, S:]
        new_src = rolled[:, S:] @ prev[:, :S] + rolled[:, :S]
        new = torch.cat([new_src, new_tgt], -1)
        accum.append(new / new.sum(-1, keepdim=True))
    return torch.stack(accum)


# Value zeroing (Mohebbi et al. 2023), as the authors' scoring/value_zeroing.py: per layer and key token, the
# whole layer rerun on its original input with that token's value vector zeroed (every head, bias included),
# the cosine distance of each token's new output to its original one (sklearn's 1 - a.b / |a||b|), rows
# normalised.  Plain torch in float64 on one sentence without padding, independent of fairseq_rela.

def _ref_layer_norm(ln, x):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return ln.weight.double() * (x - mu) / torch.sqrt(var + ln.eps) + ln.bias.double()


def ref_zeroed_attention(mha, query, key, causal, activation, zero=None):
    """(T, E) attention output for one sentence (query (T, E), key (S, E), float64), with key ``zero``'s value
    vector zeroed in every head; ``mha`` supplies the parameters (and the head normaliser's) only."""
    H, d = mha.num_heads, mha.head_dim
    T, S = query.shape[0], key.shape[0]
    q = (query @ mha.q_proj.weight.double().T + mha.q_proj.bias.double()) * d ** -0.5
    k = key @ mha.k_proj.weight.double().T + mha.k_proj.bias.double()
    v = key @ mha.v_proj.weight.double().T + mha.v_proj.bias.double()
    if zero is not None:
        v = v.clone()
        v[zero] = 0.0
    blocked = torch.triu(torch.ones(T, S, dtype=torch.bool), 1) if causal else torch.zeros(T, S, dtype=torch.bool)
    z = torch.zeros(T, H * d, dtype=torch.double)
    for h in range(H):
        sl = slice(h * d, (h + 1) * d)
        scores = q[:, sl] @ k[:, sl].T
        if activation == "rela":
            alpha = torch.relu(scores.masked_fill(blocked, 0.0))
        else:
            alpha = torch.softmax(scores.masked_fill(blocked, float("-inf")), -1)
        z[:, sl] = alpha @ v[:, sl]
    norm = getattr(mha, "head_norm", None)
    rms = torch.sqrt((z * z).mean(-1, keepdim=True) + getattr(norm, "eps", 0.0))
    if hasattr(norm, "gate"):  # ReLA-g: g ⊙ z / rms(z) ⊙ σ(w ⊙ z)
        z = norm.weight.double() * z / rms * torch.sigmoid(norm.gate.double() * z)
    elif hasattr(norm, "weight"):  # ReLA-i: RMSNorm
        z = norm.weight.double() * z / rms
    return z @ mha.out_proj.weight.double().T + mha.out_proj.bias.double()


def ref_layer(layer, x, encoder_out, activation, ffn_activation, zero=None):
    """One fairseq Transformer layer (encoder: ``encoder_out`` None; decoder: causal self-attention, then
    cross-attention) in float64 on one sentence, post- or pre-norm as ``layer.normalize_before``;
    ``zero = (kind, j)`` zeroes key j's value in that attention ('self' or 'cross')."""
    pre = layer.normalize_before
    decoder = encoder_out is not None

    def block(attn, ln, x, memory, causal, which):
        h = _ref_layer_norm(ln, x) if pre else x
        j = zero[1] if zero is not None and zero[0] == which else None
        u = ref_zeroed_attention(attn, h, h if memory is None else memory, causal, activation, j) + x
        return u if pre else _ref_layer_norm(ln, u)

    x = block(layer.self_attn, layer.self_attn_layer_norm, x, None, decoder, "self")
    if decoder:
        x = block(layer.encoder_attn, layer.encoder_attn_layer_norm, x, encoder_out, False, "cross")
    h = _ref_layer_norm(layer.final_layer_norm, x) if pre else x
    h = ffn_activation(h @ layer.fc1.weight.double().T + layer.fc1.bias.double())
    u = h @ layer.fc2.weight.double().T + layer.fc2.bias.double() + x
    return u if pre else _ref_layer_norm(layer.final_layer_norm, u)


def ref_value_zeroing(layer, x, encoder_out, activation, ffn_activation, which):
    """(T, K) raw cosine distances and their row-normalised matrix for attention ``which`` ('self'/'cross') of
    one layer: one full rerun of the layer per key token, as the authors' loop ``for t in range(seq_length)``."""
    original = ref_layer(layer, x, encoder_out, activation, ffn_activation)
    keys = x.shape[0] if which == "self" else encoder_out.shape[0]
    dist = torch.zeros(x.shape[0], keys, dtype=torch.double)
    for j in range(keys):
        new = ref_layer(layer, x, encoder_out, activation, ffn_activation, zero=(which, j))
        cos = (new * original).sum(-1) / (new.norm(dim=-1) * original.norm(dim=-1))
        dist[:, j] = (1 - cos).clamp(0, 2)
    return dist, dist / dist.sum(-1, keepdim=True)


def ref_model_value_zeroing(model, src_tokens, prev_output_tokens, activation, ffn_activation):
    """{(kind, layer): (raw distances, normalised)} of every attention of an encoder-decoder model (or an
    encoder alone: ``prev_output_tokens`` None) for one sentence (batch 1): each layer's input read with a
    forward pre-hook, then :func:`ref_value_zeroing` on it."""
    model = copy.deepcopy(model).double().eval()
    inputs, hooks = {}, []

    def keep(key):
        def hook(module, args, kwargs):
            inputs[key] = (args, kwargs)
        return hook

    encoder = model.encoder if prev_output_tokens is not None else getattr(model, "encoder", model)
    encoder = getattr(encoder, "sentence_encoder", encoder)  # a roberta's transformer encoder
    for i, layer in enumerate(encoder.layers):
        hooks.append(layer.register_forward_pre_hook(keep(("encoder_self", i)), with_kwargs=True))
    if prev_output_tokens is not None:
        for i, layer in enumerate(model.decoder.layers):
            hooks.append(layer.register_forward_pre_hook(keep(("decoder", i)), with_kwargs=True))
    with torch.no_grad():
        if prev_output_tokens is None:
            model(src_tokens, features_only=True)
        else:
            model(src_tokens, src_lengths=torch.tensor([src_tokens.size(1)]), prev_output_tokens=prev_output_tokens)
    for h in hooks:
        h.remove()
    out = {}
    with torch.no_grad():
        for i, layer in enumerate(encoder.layers):
            args, kwargs = inputs[("encoder_self", i)]
            out[("encoder_self", i)] = ref_value_zeroing(layer, args[0][:, 0], None, activation, ffn_activation,
                                                         "self")
        if prev_output_tokens is not None:
            for i, layer in enumerate(model.decoder.layers):
                args, kwargs = inputs[("decoder", i)]
                x, memory = args[0][:, 0], (args[1] if len(args) > 1 else kwargs["encoder_out"])[:, 0]
                out[("decoder_self", i)] = ref_value_zeroing(layer, x, memory, activation, ffn_activation, "self")
                out[("cross", i)] = ref_value_zeroing(layer, x, memory, activation, ffn_activation, "cross")
    return out


def ref_norm_decomposition(mha, weights, values, z, heads=None):
    """Kobayashi et al.'s vectors with the head normaliser folded in, pair by pair in float64:
    ``f^h_i(x_j) = W_O (s_i ⊙ C(P_h v^h_j))`` with ``N(z_i) = s_i ⊙ C(z_i) + c`` written out from each
    normaliser's formula (gated RMSNorm: ``s_i = g ⊙ σ(w ⊙ z_i) / rms(z_i)``; RMSNorm: ``g / rms(z_i)``;
    LayerNorm: ``g / std(z_i)`` and C centres).  weights (B,H,T,S), values (B',H,S,d) (B' divides B: row b
    uses values[b // (B/B')]), z (T,B,E).  Returns ``(fx_norm (B,H,T,S), summed_norm (B,T,S), vectors (B,T,S,E))``,
    the sum over ``heads`` (None: all)."""
    B, H, T, S = weights.shape
    d, E = mha.head_dim, mha.embed_dim
    norm = mha.head_norm
    W = mha.out_proj.weight.double()
    group = B // values.size(0)
    fx = torch.zeros(B, H, T, S, dtype=torch.double)
    vectors = torch.zeros(B, T, S, W.size(0), dtype=torch.double)
    for b in range(B):
        for i in range(T):
            zi = z[i, b].double()
            g = norm.weight.double()
            centre = hasattr(norm, "bias")
            if hasattr(norm, "gate"):
                s = g * torch.sigmoid(norm.gate.double() * zi) / math.sqrt(float((zi * zi).mean()) + norm.eps)
            elif centre:
                s = g / math.sqrt(float(zi.var(unbiased=False)) + norm.eps)
            else:
                s = g / math.sqrt(float((zi * zi).mean()) + norm.eps)
            for j in range(S):
                for h in range(H):
                    p = torch.zeros(E, dtype=torch.double)
                    p[h * d:(h + 1) * d] = values[b // group, h, j].double()
                    if centre:
                        p = p - p.mean()
                    f = W @ (s * p)
                    fx[b, h, i, j] = f.norm()
                    if heads is None or h in heads:
                        vectors[b, i, j] += float(weights[b, h, i, j]) * f
    return fx, vectors.norm(dim=-1), vectors


# The attention block's decomposition (Kobayashi et al. 2021, eq. 8-10) and its ALTI shares, in float64 from the
# definitions: every term transformed by F_i on its own, every sum taken over the transformed terms.

def ref_block_float64(vectors, bias, residual, self_offset, layer_norm):
    """vectors (B,T,S,E) v_ij, bias (E,), residual (B,T,E); self_offset: query i is key i + offset (None: cross);
    layer_norm: post-norm LayerNorm or None.  Returns a dict of norms (B,T,S), mixing (B,T,3) (attention,
    residual, block), alti (B,T,S) and, cross-attention, residual_norm and alti_residual (B,T)."""
    V, b, x = vectors.double(), bias.double(), residual.double()
    B, T, S, E = V.shape
    C, R = V.clone(), None
    rows = torch.arange(T)
    if self_offset is not None:
        C[:, rows, rows + self_offset] += x
    else:
        R = x
    u = C.sum(2) + b + (0 if R is None else R)

    def ratio(mixed, own):
        m, k = mixed.norm(dim=-1), own.norm(dim=-1)
        return m / (m + k)

    def levels(terms, res):
        if res is not None:
            return ratio(terms.sum(2), res)
        own = terms[:, rows, rows + self_offset]
        return ratio(terms.sum(2) - own, own)

    nan = torch.full((B, T), float("nan"), dtype=torch.double)
    attention = nan if self_offset is None else levels(V, None)
    residual_level = levels(C, R)
    if layer_norm is not None:
        s = ((u - u.mean(-1, keepdim=True)) ** 2).mean(-1, keepdim=True).add(layer_norm.eps).sqrt()
        g, beta = layer_norm.weight.double(), layer_norm.bias.double()

        def F(c, s):
            return g * (c - c.mean(-1, keepdim=True)) / s

        C, R = F(C, s[:, :, None]), None if R is None else F(R, s)
        out_bias = F(b.expand(B, T, E), s) + beta
    else:
        out_bias = b.expand(B, T, E)
    block_level = levels(C, R) if layer_norm is not None else residual_level
    y = C.sum(2) + out_bias + (0 if R is None else R)
    y1 = y.abs().sum(-1)
    d = (y1[..., None] - (y[:, :, None] - C).abs().sum(-1)).clamp_min(0) * C.ne(0).any(-1)
    d_res = None if R is None else (y1 - (y - R).abs().sum(-1)).clamp_min(0)
    total = d.sum(-1) + (0 if d_res is None else d_res)
    out = {"norms": C.norm(dim=-1), "mixing": torch.stack([attention, residual_level, block_level], -1),
           "alti": d / total[..., None]}
    if R is not None:
        out["residual_norm"], out["alti_residual"] = R.norm(dim=-1), d_res / total
    return out
