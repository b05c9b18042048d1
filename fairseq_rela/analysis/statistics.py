"""Attention statistics over a data split, from :class:`SentenceAttention` records.

Per attention kind, layer and head:
- ``sparsity``: share of exactly-zero weights among the positions a query may attend to;
- ``null_rate``: share of query rows whose weights are all zero (ReLA's "switch-off");
per layer:
- ``head_jsd``: generalised Jensen–Shannon divergence between the heads' (row-normalised) weight
  distributions, ``H(mean_h p_h) - mean_h H(p_h)`` in nats, averaged over rows (null heads left out);
- ``token_share``: share of attention that goes to each key category (``eos``, ``punct``,
  ``frequent``, ``other``), by weight (mean over heads) and by norm (``‖Σ_h α f‖``), each row
  normalised to 1 — Kobayashi et al.'s "big weight, small norm" for special tokens;
- ``fx_norm_mean``: mean ``‖f(x)‖`` per key category; ``spearman_weight_fx``: rank correlation of
  ``α`` and ``‖f(x)‖`` over all (head, query, key) triples (sampled up to a cap).
"""
import json
import math
import string
from typing import Dict, Iterable, List, Set

import numpy as np

from fairseq_rela.analysis.runner import SentenceAttention

CATEGORIES = ("eos", "punct", "frequent", "other")
_PUNCT = set(string.punctuation) | set("«»„“”‘’–—…")


def strip_subword(token: str) -> str:
    """A token's text without sentencepiece's ``▁`` and subword-nmt's ``@@``."""
    return token.replace("\u2581", "").replace("@@", "")


def is_punct(token: str) -> bool:
    text = strip_subword(token)
    return bool(text) and all(c in _PUNCT for c in text)


def frequent_tokens(dictionary, top: int = 50) -> Set[str]:
    """The ``top`` most frequent word tokens of a fairseq dictionary (specials and punctuation excluded)."""
    pairs = [(c, w) for w, c in zip(dictionary.symbols[dictionary.nspecial:], dictionary.count[dictionary.nspecial:])
             if not is_punct(w) and not w.startswith("madeupword")]
    return {w for _, w in sorted(pairs, reverse=True)[:top]}


def categorise(tokens: List[str], frequent: Set[str]) -> np.ndarray:
    """Index into CATEGORIES for each token."""
    out = []
    for t in tokens:
        out.append(0 if t == "</s>" else 1 if is_punct(t) else 2 if t in frequent else 3)
    return np.array(out)


def _entropy(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(-1)


def head_jsd_rows(weights: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Generalised JSD between heads for each query row; NaN where fewer than 2 heads attend."""
    w = np.where(valid[None], weights, 0.0)
    mass = w.sum(-1, keepdims=True)  # (H,T,1)
    alive = mass[..., 0] > 0  # (H,T)
    p = np.divide(w, mass, out=np.zeros_like(w), where=mass > 0)
    n = alive.sum(0)  # (T,)
    mean = p.sum(0) / np.maximum(n, 1)[:, None]
    mean_entropy = (_entropy(p) * alive).sum(0) / np.maximum(n, 1)
    jsd = _entropy(mean) - mean_entropy
    return np.where(n >= 2, jsd, np.nan)


class AttentionStatistics:
    """Accumulates statistics sentence by sentence; :meth:`result` gives a JSON-ready dict."""

    def __init__(self, src_frequent: Set[str], tgt_frequent: Set[str], correlation_cap: int = 200_000,
                 weights_only: bool = False):
        self.frequent = {"src": src_frequent, "tgt": tgt_frequent}
        self.cap = correlation_cap
        self.weights_only = weights_only  # sparsity and null rate only (cheap, for validation logging)
        self.acc: Dict[tuple, Dict[str, object]] = {}
        self.sentences = 0

    def _slot(self, key, heads: int) -> Dict[str, object]:
        if key not in self.acc:
            self.acc[key] = {
                "zeros": np.zeros(heads), "valid": np.zeros(heads), "null_rows": np.zeros(heads), "rows": 0,
                "jsd_sum": 0.0, "jsd_rows": 0,
                "share_w": np.zeros(len(CATEGORIES)), "share_n": np.zeros(len(CATEGORIES)), "share_rows": 0,
                "fx_sum": np.zeros(len(CATEGORIES)), "fx_count": np.zeros(len(CATEGORIES)),
                "corr_w": [], "corr_f": [], "corr_n": 0,
            }
        return self.acc[key]

    def update(self, sent: SentenceAttention) -> None:
        self.sentences += 1
        for (kind, layer), maps in sent.maps.items():
            w = maps["weights"]
            H, T, S = w.shape
            valid = np.tril(np.ones((T, S), bool)) if kind == "decoder_self" else np.ones((T, S), bool)
            a = self._slot((kind, layer), H)
            a["zeros"] += ((w == 0) & valid).sum((1, 2))
            a["valid"] += valid.sum()
            a["null_rows"] += ((w * valid) == 0).all(-1).sum(-1)
            a["rows"] += T
            if self.weights_only:
                continue
            jsd = head_jsd_rows(w, valid)
            a["jsd_sum"] += float(np.nansum(jsd))
            a["jsd_rows"] += int((~np.isnan(jsd)).sum())
            keys = sent.tokens(kind)[1]
            cats = categorise(keys, self.frequent["src" if kind != "decoder_self" else "tgt"])
            onehot = np.eye(len(CATEGORIES))[cats]  # (S, C)
            mean_w = w.mean(0)
            a["share_w"] += _row_shares(mean_w, onehot)
            if "summed_norm" in maps:
                a["share_n"] += _row_shares(maps["summed_norm"], onehot)
                fx = np.broadcast_to(maps["fx_norm"], w.shape)
                a["fx_sum"] += (np.where(valid[None], fx, 0).sum((0, 1)) @ onehot)
                a["fx_count"] += (np.broadcast_to(valid[None], w.shape).sum((0, 1)) @ onehot)
                if a["corr_n"] < self.cap:
                    sel = np.broadcast_to(valid[None], w.shape)
                    a["corr_w"].append(w[sel])
                    a["corr_f"].append(fx[sel])
                    a["corr_n"] += int(sel.sum())
            a["share_rows"] += T

    def counts_by_kind(self):
        """``(kind, zeros, valid, null_rows, rows)`` summed over layers and heads."""
        for kind in sorted({k for k, _ in self.acc}):
            slots = [a for (k, _), a in self.acc.items() if k == kind]
            yield (kind, float(sum(a["zeros"].sum() for a in slots)), float(sum(a["valid"].sum() for a in slots)),
                   float(sum(a["null_rows"].sum() for a in slots)), float(sum(a["rows"] * len(a["zeros"]) for a in slots)))

    def result(self) -> dict:
        from scipy.stats import spearmanr

        out: Dict[str, dict] = {}
        for (kind, layer), a in sorted(self.acc.items()):
            layer_stats = {
                "sparsity": (a["zeros"] / a["valid"]).tolist(),
                "null_rate": (a["null_rows"] / a["rows"]).tolist(),
                "head_jsd": a["jsd_sum"] / a["jsd_rows"] if a["jsd_rows"] else None,
                "token_share": {c: {"weight": a["share_w"][i] / max(a["share_rows"], 1),
                                    "norm": a["share_n"][i] / max(a["share_rows"], 1)}
                                for i, c in enumerate(CATEGORIES)},
            }
            layer_stats["sparsity_mean"] = float(np.mean(layer_stats["sparsity"]))
            layer_stats["null_rate_mean"] = float(np.mean(layer_stats["null_rate"]))
            if a["corr_w"]:
                ws, fs = np.concatenate(a["corr_w"]), np.concatenate(a["corr_f"])
                rho = spearmanr(ws, fs).statistic if ws.std() > 0 and fs.std() > 0 else None
                layer_stats["spearman_weight_fx"] = None if rho is None or math.isnan(rho) else float(rho)
                layer_stats["fx_norm_mean"] = {c: (a["fx_sum"][i] / a["fx_count"][i] if a["fx_count"][i] else None)
                                               for i, c in enumerate(CATEGORIES)}
            out.setdefault(kind, {})[str(layer)] = layer_stats
        return {"sentences": self.sentences, "attention": out}


def _row_shares(matrix: np.ndarray, onehot: np.ndarray) -> np.ndarray:
    """Sum over rows of each category's share of the row's mass (null rows count as nothing)."""
    mass = matrix.sum(-1, keepdims=True)
    p = np.divide(matrix, mass, out=np.zeros_like(matrix, dtype=float), where=mass > 0)
    return (p @ onehot).sum(0)


def format_table(stats: dict) -> str:
    """A readable table: one line per attention kind and layer."""
    lines = [f"{stats['sentences']} sentences",
             f"{'attention':<13}{'layer':>5} {'sparsity':>9} {'null':>7} {'JSD':>6} "
             f"{'eos w/n':>13} {'punct w/n':>13} {'rho(a,|f|)':>11}"]
    for kind, layers in stats["attention"].items():
        for layer, s in layers.items():
            ts = s["token_share"]
            rho = s.get("spearman_weight_fx")
            lines.append(
                f"{kind:<13}{layer:>5} {s['sparsity_mean']:>9.3f} {s['null_rate_mean']:>7.3f} "
                f"{(s['head_jsd'] or 0):>6.3f} {ts['eos']['weight']:>6.3f}/{ts['eos']['norm']:<6.3f} "
                f"{ts['punct']['weight']:>6.3f}/{ts['punct']['norm']:<6.3f} "
                f"{'' if rho is None else f'{rho:.3f}':>11}")
    return "\n".join(lines)


def compute_statistics(sentences: Iterable[SentenceAttention], src_dict, tgt_dict,
                       top_frequent: int = 50) -> dict:
    stats = AttentionStatistics(frequent_tokens(src_dict, top_frequent), frequent_tokens(tgt_dict, top_frequent))
    for sent in sentences:
        stats.update(sent)
    return stats.result()


def write_json(obj: dict, path: str) -> None:
    """Write JSON atomically (no half-written file on failure)."""
    import os
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, default=float)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # as open() would create it (mkstemp makes 0600)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
