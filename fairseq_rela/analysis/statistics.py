"""Attention statistics over a data split, from :class:`SentenceAttention` records.

Per attention kind, layer and head:
- ``sparsity``: share of exactly-zero weights among the positions a query may attend to;
- ``null_rate``: share of query rows whose weights are all zero (ReLA's "switch-off");
per layer:
- ``head_jsd``: generalised Jensen–Shannon divergence between the heads' (row-normalised) weight
  distributions, ``H(mean_h p_h) - mean_h H(p_h)`` in nats, averaged over rows (null heads left out);
- ``token_share``: share of attention that goes to each key category (``bos``: ``<s>``, a masked
  LM's [CLS]; ``eos``: ``</s>``, its [SEP]; ``punct``, ``frequent``, ``other``), by weight (mean over heads) and by norm (``‖Σ_h α f‖``), each row
  normalised to 1 — Kobayashi et al.'s "big weight, small norm" for special tokens;
- ``fx_norm_mean``: mean ``‖f(x)‖`` per key category; ``spearman_weight_fx``: rank correlation of
  ``α`` and ``‖f(x)‖`` over all (head, query, key) triples (sampled up to a cap);
- ``mixing_ratio``: Kobayashi et al. (2021)'s context-mixing ratio of the attention block (attention,
  + residual, + LayerNorm; by norm, and by weight), when the records hold the block;
- ``alti_mixing``: the same question answered by ALTI (Ferrando et al. 2022): the share of the block's
  output from other tokens (cross-attention: from the source, against the decoder's own state);
- ``value_zeroing_mixing``: the same by value zeroing (Mohebbi et al. 2023), self-attention, when recorded;
per rollout source (:data:`~fairseq_rela.contributions.ROLLOUT_SOURCES` the records allow), over the
whole model (:class:`SourceShare`, under ``contributions``):
- ``own_share``: per encoder layer, a token's share of its own representation after that layer, rolled
  out from the embeddings (a masked LM's only rollout statistic: how much a token stays itself);
- ``source_share``: per decoder layer, ALTI+'s source contribution to each predicted token (the rest is
  the target prefix's), its standard error ``source_share_se`` (sentences as clusters), and
  ``source_share_by_position`` at the last layer, by target position.

Each statistic is one small class (:class:`Statistic`: ``update`` per sentence, ``result`` as JSON
fields, ``columns`` and ``legend`` for ``stats.txt``); :class:`AttentionStatistics` keeps one of each per
attention kind and layer, and one :class:`SourceShare` per rollout source (it needs every layer of a
sentence).  A new statistic is one class added to :data:`STATISTICS`.
"""
import math
import string
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple, Type

import numpy as np

from fairseq_rela.block import MIXING_LEVELS
from fairseq_rela.contributions import ROLLOUT_SOURCES
from fairseq_rela.recording import AttentionRecord, SentenceAttention

CATEGORIES = ("bos", "eos", "punct", "frequent", "other")
NA = "n/a"  # a stats.txt cell whose statistic is undefined there (each table's legend says why)
Column = Tuple[str, Callable[[dict], str]]  # a stats.txt column: header, cell of a layer's JSON fields
_PUNCT = set(string.punctuation) | set("«»„“”‘’–—…")


def strip_subword(token: str) -> str:
    """A token's text without sentencepiece's ``▁`` and subword-nmt's ``@@``."""
    return token.replace("\u2581", "").replace("@@", "")


def is_punct(token: str) -> bool:
    text = strip_subword(token)
    return bool(text) and all(c in _PUNCT for c in text)


def frequent_tokens(dictionary, top: int = 50) -> Set[str]:
    """The ``top`` most frequent word tokens of a fairseq dictionary (specials and punctuation excluded); none
    when its counts are all equal (a dictionary without frequencies, e.g. a converted Hugging Face vocabulary)."""
    pairs = [(c, w) for w, c in zip(dictionary.symbols[dictionary.nspecial:], dictionary.count[dictionary.nspecial:])
             if not is_punct(w) and not w.startswith("madeupword")]
    if len({c for c, _ in pairs}) <= 1:
        return set()
    return {w for _, w in sorted(pairs, reverse=True)[:top]}


def categorise(tokens: List[str], frequent: Set[str]) -> np.ndarray:
    """Index into CATEGORIES for each token."""
    out = []
    for t in tokens:
        out.append(0 if t == "<s>" else 1 if t == "</s>" else 2 if is_punct(t) else 3 if t in frequent else 4)
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


def _row_shares(matrix: np.ndarray, onehot: np.ndarray) -> np.ndarray:
    """Sum over rows of each category's share of the row's mass (null rows count as nothing)."""
    mass = matrix.sum(-1, keepdims=True)
    p = np.divide(matrix, mass, out=np.zeros_like(matrix, dtype=float), where=mass > 0)
    return (p @ onehot).sum(0)


@dataclass
class Keys:
    """What the statistics know of one record's keys: which (query, key) cells may be attended
    (decoder self-attention: up to the query) and each key's category (one-hot, (S, C))."""

    valid: np.ndarray  # (T, S) bool
    categories: np.ndarray  # (S, C)
    counts: tuple  # AttentionRecord.zero_counts(), computed once for every statistic that needs it


class Statistic:
    """One statistic of one attention kind and layer, accumulated sentence by sentence."""

    header = ""  # its stats.txt column ("" for none)
    legend = ""  # what its column means, under the table (a line each)
    needs_norms = False  # updated only when the records hold norms
    needs_block = False  # updated only when the records hold the block decomposition

    def __init__(self, heads: int):
        self.heads = heads

    def update(self, record: AttentionRecord, keys: Keys) -> None:
        raise NotImplementedError

    def result(self) -> dict:
        """JSON fields of ``stats.json`` (none when nothing was seen)."""
        raise NotImplementedError

    @staticmethod
    def format(fields: dict) -> str:
        """Its stats.txt cell for a layer's JSON fields."""
        return ""

    @classmethod
    def columns(cls, rows: List[dict]) -> List[Column]:
        """Its stats.txt columns for the table's ``rows`` (each a layer's JSON fields): none when it has no
        column or no row has its fields (weights only, no norms, no block)."""
        if not cls.header or not any(cls.format(fields).strip() for fields in rows):
            return []
        return [(cls.header, cls.format)]

    @classmethod
    def legend_lines(cls, rows: List[dict]) -> List[str]:
        """Its lines of the legend under a table with these ``rows`` (none when it shows no column)."""
        return cls.legend.split("\n") if cls.columns(rows) else []


class Sparsity(Statistic):
    """Share of exactly-zero weights among the attendable positions, per head."""

    header = f"{'sparsity':>9}"
    legend = ("sparsity: share of exactly-zero weights among the positions a query may attend to (decoder_self: "
              "itself and earlier ones), 0-1; softmax: always 0")

    def __init__(self, heads: int):
        super().__init__(heads)
        self.zeros, self.valid = np.zeros(heads), np.zeros(heads)

    def update(self, record, keys):
        zeros, valid, _, _ = keys.counts
        self.zeros += zeros
        self.valid += valid

    def result(self):
        sparsity = self.zeros / self.valid
        return {"sparsity": sparsity.tolist(), "sparsity_mean": float(np.mean(sparsity))}

    @staticmethod
    def format(fields):
        return f"{fields['sparsity_mean']:>9.3f}" if "sparsity_mean" in fields else ""


class NullRate(Statistic):
    """Share of query rows with no positive weight ("null attention"), per head."""

    header = f"{'null':>7}"
    legend = "null: share of query rows whose weights are all zero (ReLA switches the row off), 0-1; softmax: always 0"

    def __init__(self, heads: int):
        super().__init__(heads)
        self.null_rows, self.rows = np.zeros(heads), 0

    def update(self, record, keys):
        _, _, null_rows, rows = keys.counts
        self.null_rows += null_rows
        self.rows += rows

    def result(self):
        rate = self.null_rows / self.rows
        return {"null_rate": rate.tolist(), "null_rate_mean": float(np.mean(rate))}

    @staticmethod
    def format(fields):
        return f"{fields['null_rate_mean']:>7.3f}" if "null_rate_mean" in fields else ""


class HeadJSD(Statistic):
    """Mean over rows of the generalised Jensen–Shannon divergence between the heads, in nats."""

    header = f"{'JSD':>6}"
    legend = ("JSD: how differently the heads attend: generalised Jensen-Shannon divergence of their row-normalised "
              f"weights, nats, 0 (heads alike) to ln(heads); over rows where 2+ heads attend ({NA}: none did)")

    def __init__(self, heads: int):
        super().__init__(heads)
        self.total, self.rows = 0.0, 0

    def update(self, record, keys):
        jsd = head_jsd_rows(record.weights, keys.valid)
        self.total += float(np.nansum(jsd))
        self.rows += int((~np.isnan(jsd)).sum())

    def result(self):
        return {"head_jsd": self.total / self.rows if self.rows else None}

    @staticmethod
    def format(fields):
        if "head_jsd" not in fields:
            return ""
        jsd = fields["head_jsd"]
        return f"{NA if jsd is None else f'{jsd:.3f}':>6}"


class TokenShare(Statistic):
    """Share of each row's attention per key category, by weight (head mean) and by norm."""

    shown = {"bos": "<s>", "eos": "</s>", "punct": "punctuation"}  # its stats.txt columns: category, key

    @staticmethod
    def present(fields: dict, category: str) -> bool:
        """Whether keys of ``category`` were seen in that layer: its mean ``‖f(x)‖`` (:class:`FxNorm`) is null
        exactly when none was (assumed seen when the records had no norms)."""
        fx = fields.get("fx_norm_mean")
        return fx is None or fx.get(category) is not None

    def __init__(self, heads: int):
        super().__init__(heads)
        self.weight, self.norm, self.rows = np.zeros(len(CATEGORIES)), np.zeros(len(CATEGORIES)), 0

    def update(self, record, keys):
        self.weight += _row_shares(record.matrix("weights"), keys.categories)
        if record.has_norms:
            self.norm += _row_shares(record.matrix("norms"), keys.categories)
        self.rows += record.weights.shape[1]

    def result(self):
        rows = max(self.rows, 1)
        return {"token_share": {c: {"weight": self.weight[i] / rows, "norm": self.norm[i] / rows}
                                for i, c in enumerate(CATEGORIES)}}

    @classmethod
    def cell(cls, fields: dict, category: str) -> str:
        if "token_share" not in fields:
            return ""
        if not cls.present(fields, category):
            return f"{NA:^13}"
        share = fields["token_share"][category]
        return f"{share['weight']:>6.3f}/{share['norm']:<6.3f}"

    @classmethod
    def _shown(cls, rows: List[dict]) -> Tuple[List[str], List[str]]:
        """The categories with a column (seen in some row), and those left out."""
        with_data = [f for f in rows if "token_share" in f]
        seen = [c for c in cls.shown if any(cls.present(f, c) for f in with_data)]
        return seen, ([c for c in cls.shown if c not in seen] if with_data else [])

    @classmethod
    def columns(cls, rows):
        return [(f"{c + ' w/n':>13}", lambda fields, c=c: cls.cell(fields, c)) for c in cls._shown(rows)[0]]

    @classmethod
    def legend_lines(cls, rows):
        seen, left_out = cls._shown(rows)
        lines = []
        if seen:
            lines.append(f"{' / '.join(seen)} w/n: share of each query row's attention on "
                         f"{' / '.join(cls.shown[c] for c in seen)} keys, by weight (alpha, mean over heads) / by norm "
                         f"(||sum_h alpha f(x)||), 0-1 ({NA}: no such key in that attention's input)")
        if left_out:
            lines.append(f"left out: {', '.join(c + ' w/n' for c in left_out)} (no "
                         f"{' or '.join(cls.shown[c] for c in left_out)} among the keys of any attention"
                         f"{'; translation models never feed <s>' if 'bos' in left_out else ''})")
        return lines


class WeightNormCorrelation(Statistic):
    """Spearman's ρ between ``α`` and ``‖f(x)‖`` over (head, query, key) triples: over all of them, or
    over a uniform sample of ``cap`` drawn from the whole split (each triple gets a random priority,
    seeded, and the ``cap`` lowest are kept: not the first ones, which are the shortest sentences)."""

    header = f"{'rho(a,|f|)':>11}"
    legend = ("rho(a,|f|): Spearman rank correlation of weight alpha_ij and norm ||f(x_j)|| over (head, query, key) "
              f"triples, -1..1; negative: big weights on small vectors ({NA}: weights or norms all equal)")
    needs_norms = True
    cap = 200_000

    def __init__(self, heads: int):
        super().__init__(heads)
        self.rng = np.random.default_rng(0)
        self.parts: List[Tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (priority, α, ‖f(x)‖)
        self.kept = 0

    def update(self, record, keys):
        w = record.weights
        sel = np.broadcast_to(keys.valid[None], w.shape)
        ws = w[sel]
        self.parts.append((self.rng.random(ws.size), ws, np.broadcast_to(record.fx_norm, w.shape)[sel]))
        self.kept += ws.size
        if self.kept > 2 * self.cap:
            self._compact()

    def _compact(self) -> None:
        priority, ws, fs = (np.concatenate(column) for column in zip(*self.parts))
        if priority.size > self.cap:
            keep = np.argpartition(priority, self.cap)[: self.cap]
            priority, ws, fs = priority[keep], ws[keep], fs[keep]
        self.parts, self.kept = [(priority, ws, fs)], priority.size

    def result(self):
        if not self.parts:
            return {}
        from scipy.stats import spearmanr

        self._compact()
        _, ws, fs = self.parts[0]
        rho = spearmanr(ws, fs).statistic if ws.std() > 0 and fs.std() > 0 else None
        return {"spearman_weight_fx": None if rho is None or math.isnan(rho) else float(rho)}

    @staticmethod
    def format(fields):
        if "spearman_weight_fx" not in fields:
            return ""
        rho = fields["spearman_weight_fx"]
        return f"{NA if rho is None else f'{rho:.3f}':>11}"


class FxNorm(Statistic):
    """Mean ``‖f(x_j)‖`` per key category."""

    needs_norms = True

    def __init__(self, heads: int):
        super().__init__(heads)
        self.total, self.count = np.zeros(len(CATEGORIES)), np.zeros(len(CATEGORIES))
        self.seen = False

    def update(self, record, keys):
        w = record.weights
        fx = np.broadcast_to(record.fx_norm, w.shape)
        self.total += np.where(keys.valid[None], fx, 0).sum((0, 1)) @ keys.categories
        self.count += np.broadcast_to(keys.valid[None], w.shape).sum((0, 1)) @ keys.categories
        self.seen = True

    def result(self):
        if not self.seen:
            return {}
        return {"fx_norm_mean": {c: (self.total[i] / self.count[i] if self.count[i] else None)
                                 for i, c in enumerate(CATEGORIES)}}


class MixingRatio(Statistic):
    """Context-mixing ratio (Kobayashi et al. 2021, §5), mean over query tokens: the share of the
    block's output that comes from other tokens, ``‖Σ_{j≠i} c_ij‖ / (‖Σ_{j≠i} c_ij‖ + ‖c_ii‖)``, at the
    levels of :data:`~fairseq_rela.block.MIXING_LEVELS` (their Attn-N, AttnRes-N, AttnResLn-N), and by
    weight: ``attention_weights`` = the row's weight on other tokens over its total weight (Attn-W),
    ``residual_weights`` = half of it (AttnRes-W: the residual counted as weight 1).  Cross-attention:
    all source tokens against the decoder token's own state (residual and block levels only)."""

    header = f"{'mix attn/res/blk':>17}"
    legend = ("mix attn/res/blk: context-mixing ratio, the share of a token's new vector that comes from other "
              "tokens, by norm, after the attention / + residual / + LayerNorm, 0-1;\n  cross attn is "
              f"{NA}: no source token is the query's own (res, blk: the source against the decoder token's own state)")
    needs_block = True

    def __init__(self, heads: int):
        super().__init__(heads)
        self.total, self.count = np.zeros(len(MIXING_LEVELS)), np.zeros(len(MIXING_LEVELS))
        self.weight_total, self.weight_rows = 0.0, 0

    def update(self, record, keys):
        ratio = np.asarray(record.mixing_ratio)
        defined = ~np.isnan(ratio)
        self.total += np.where(defined, ratio, 0).sum(0)
        self.count += defined.sum(0)
        if record.kind != "cross":
            w = record.weights.mean(0) * keys.valid  # (T, S)
            T, S = w.shape
            own = w[np.arange(T), np.arange(T) + S - T]
            mass = w.sum(-1)
            alive = mass > 0
            self.weight_total += float(((mass - own)[alive] / mass[alive]).sum())
            self.weight_rows += int(alive.sum())

    def result(self):
        if not self.count.any():
            return {}
        levels = {level: (self.total[i] / self.count[i] if self.count[i] else None)
                  for i, level in enumerate(MIXING_LEVELS)}
        weights = self.weight_total / self.weight_rows if self.weight_rows else None
        return {"mixing_ratio": {**levels, "attention_weights": weights,
                                 "residual_weights": None if weights is None else weights / 2}}

    @staticmethod
    def format(fields):
        mix = fields.get("mixing_ratio")
        if not mix:
            return ""
        return f"{'/'.join(f'{NA:^5}' if mix[k] is None else f'{mix[k]:.3f}' for k in MIXING_LEVELS):>17}"


class AltiMixing(Statistic):
    """ALTI's answer to the mixing ratio, mean over query tokens: the share of the block's output that
    comes from other tokens, ``1 − ALTI_ii`` (self-attention) or from the source tokens, ``1 − r_i``
    (cross-attention: ``r_i`` the decoder state's share).  Rows where ALTI is undefined are left out."""

    header = f"{'alti mix':>9}"
    legend = ("alti mix: ALTI's mixing: the share of a token's block output that comes from other tokens (cross: from "
              "the source, against the decoder token's own state), 0-1")
    needs_block = True

    def __init__(self, heads: int):
        super().__init__(heads)
        self.total, self.rows = 0.0, 0

    def update(self, record, keys):
        if record.alti is None:
            return
        if record.kind == "cross":
            other = 1 - np.asarray(record.alti_residual, np.float64)
        else:
            alti = np.asarray(record.alti, np.float64)
            T, S = alti.shape
            other = 1 - alti[np.arange(T), np.arange(T) + S - T]
        defined = np.isfinite(other)
        self.total += float(other[defined].sum())
        self.rows += int(defined.sum())

    def result(self):
        return {"alti_mixing": self.total / self.rows} if self.rows else {}

    @staticmethod
    def format(fields):
        return f"{fields['alti_mixing']:>9.3f}" if "alti_mixing" in fields else ""


class ValueZeroingMixing(Statistic):
    """Value zeroing's answer (Mohebbi et al. 2023, :mod:`fairseq_rela.value_zeroing`), mean over query tokens
    that some value reaches: the share of the other tokens in a token's row, ``1 − VZ_ii`` (self-attention;
    the decoder's over its prefix).  Cross-attention rows hold source tokens only (the decoder layer's split
    between source and prefix is the rollout's ``src``): no cell."""

    header = f"{'vz mix':>7}"
    legend = ("vz mix: value zeroing's mixing: the other tokens' share of a token's row (how much its layer output "
              "moves when their values are zeroed, against its own), 0-1; self-attention only")

    def __init__(self, heads: int):
        super().__init__(heads)
        self.total, self.rows = 0.0, 0

    def update(self, record, keys):
        if record.value_zeroing is None or record.kind == "cross":
            return
        vz = np.asarray(record.value_zeroing, np.float64)
        T, S = vz.shape
        reached = vz.sum(-1) > 0
        other = 1 - vz[np.arange(T), np.arange(T) + S - T]
        self.total += float(other[reached].sum())
        self.rows += int(reached.sum())

    def result(self):
        return {"value_zeroing_mixing": self.total / self.rows} if self.rows else {}

    @staticmethod
    def format(fields):
        return f"{fields['value_zeroing_mixing']:>7.3f}" if "value_zeroing_mixing" in fields else ""


STATISTICS: Tuple[Type[Statistic], ...] = (Sparsity, NullRate, HeadJSD, TokenShare, WeightNormCorrelation, FxNorm,
                                           MixingRatio, AltiMixing, ValueZeroingMixing)
CHEAP: Tuple[Type[Statistic], ...] = (Sparsity, NullRate)  # weights_only: no per-row work


class _ClusteredMean:
    """Token-weighted means per layer and their standard errors with sentences as clusters (a sentence's
    tokens are not independent): for sentence sums ``a_s`` over ``n_s`` tokens and the mean ``m = Σa/Σn``,
    ``SE² = S/(S−1) · Σ_s (a_s − m·n_s)² / (Σ_s n_s)²`` (the linearised ratio estimator; S sentences)."""

    def __init__(self):
        self.sums: List[np.ndarray] = []  # per sentence: (L,) sums over its tokens
        self.counts: List[np.ndarray] = []  # per sentence: (L,) finite tokens

    def add(self, values: np.ndarray) -> None:
        """``values`` (L, T): one sentence's value of each token at each layer; non-finite values left out."""
        values = np.asarray(values, np.float64)
        defined = np.isfinite(values)
        self.sums.append(np.where(defined, values, 0).sum(-1))
        self.counts.append(defined.sum(-1))

    def means(self) -> List[Optional[float]]:
        if not self.sums:
            return []
        total, count = np.sum(self.sums, 0), np.sum(self.counts, 0)
        return [float(t / c) if c else None for t, c in zip(total, count)]

    def standard_errors(self) -> List[Optional[float]]:
        if not self.sums:
            return []
        a, n = np.stack(self.sums), np.stack(self.counts).astype(np.float64)  # (S, L)
        out = []
        for layer in range(a.shape[1]):
            used = n[:, layer] > 0
            S, N = int(used.sum()), n[used, layer].sum()
            if S < 2:
                out.append(None)
                continue
            m = a[used, layer].sum() / N
            out.append(float(np.sqrt(S / (S - 1) * ((a[used, layer] - m * n[used, layer]) ** 2).sum()) / N))
        return out


class _Mean:
    """Running means of a vector that may grow (positions, layers); non-finite values left out."""

    def __init__(self):
        self.total, self.count = np.zeros(0), np.zeros(0, dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        """``values`` (N,) or (N, M): entry i gets value i (or the M values of row i)."""
        values = np.asarray(values, np.float64)
        values = values.reshape(values.shape[0], -1)
        n = values.shape[0]
        if n > self.total.size:
            self.total, self.count = np.pad(self.total, (0, n - self.total.size)), np.pad(self.count,
                                                                                         (0, n - self.count.size))
        defined = np.isfinite(values)
        self.total[:n] += np.where(defined, values, 0).sum(-1)
        self.count[:n] += defined.sum(-1)

    def means(self) -> List[Optional[float]]:
        return [float(t / c) if c else None for t, c in zip(self.total, self.count)]


class SourceShare:
    """Token contributions rolled out from one source (:meth:`SentenceAttention.contributions`) through the
    whole model, sentence by sentence: per encoder layer the tokens' own share of their representation
    (mean over tokens, then sentences: every token counts), per decoder layer ALTI+'s source share of the
    predicted tokens (with its standard error, sentences as clusters), and at the last decoder layer the
    source share by target position (0-based, the first ``positions``; mean over the sentences that reach it)."""

    positions = 50

    def __init__(self, source: str):
        self.source = source
        self.own, self.by_position = _Mean(), _Mean()  # by layer, by position
        self.share = _ClusteredMean()  # by layer, with its standard error

    def update(self, sent: SentenceAttention) -> None:
        rolled = sent.contributions(self.source)
        enc = rolled.encoder  # (L, S, S)
        self.own.add(np.diagonal(enc, axis1=1, axis2=2))  # (L, S): every token of every layer counts once
        if rolled.decoder is not None:
            share = rolled.decoder[..., : enc.shape[-1]].sum(-1)  # (L, T)
            self.share.add(share)
            self.by_position.add(share[-1][: self.positions])

    def result(self) -> dict:
        out = {"own_share": self.own.means()}
        if self.share.sums:
            out["source_share"] = self.share.means()
            out["source_share_se"] = self.share.standard_errors()
            out["source_share_by_position"] = self.by_position.means()
            out["sentences_by_position"] = self.by_position.count.tolist()
        return out


CONTRIBUTIONS_LEGEND = [
    "own: a token's share of its own encoder representation after that layer, rolled out from the embeddings "
    "(1: untouched by the others), 0-1",
    "src: ALTI+'s source share of the token the decoder predicts after that layer (the rest: the target prefix), 0-1",
    "src ±95%: half-width of src's 95% confidence interval over this split's sentences (1.96 standard errors, "
    "sentences as clusters); training noise is not in it (a model trained with another seed may differ by more)",
    "weights/norms: rollout of (attention + identity)/2, Abnar & Zuidema; block: ||F_i(c_ij)|| row-normalised; "
    "alti: ALTI per block, rolled out (for src: ALTI+, Ferrando et al. 2022); value-zeroing: value zeroing per "
    "layer rolled out without an added identity (Mohebbi et al. 2023; decoder: [cross | self] distances "
    "normalised together)",
    "weights/norms src is 1 - 2^-(layer+1) by construction (the residual is half of every row; only ReLA's null "
    "rows, all residual, lower it): the model's own split is block's and alti's",
    "mean over every token of the split; a source is left out when the records lack it (norms of some heads only, "
    "no block)"]


def format_contributions(contributions: dict) -> List[str]:
    """The ``stats.txt`` lines of :class:`SourceShare` results (``stats["contributions"]``): a per-layer table
    (own share in the encoder, source share in the decoder), source share by target position, a legend."""
    if not contributions:
        return []
    sources = list(contributions)
    first = contributions[sources[0]]
    width = max(8, *(len(s) for s in sources))

    def cell(values: List[Optional[float]], i: int) -> str:
        value = values[i] if i < len(values) else None
        return f"{NA if value is None else f'{value:.3f}':>{width}}"

    lines = ["token contributions through the model, rolled out layer by layer",
             f"{'part':<13}{'layer':>5} " + " ".join(f"{s:>{width}}" for s in sources)]
    for part, name in (("encoder own", "own_share"), ("decoder src", "source_share")):
        for layer in range(len(first.get(name, []))):
            lines.append(f"{part:<13}{layer:>5} " + " ".join(cell(contributions[s][name], layer) for s in sources))
    for layer in range(len(first.get("source_share_se", []))):
        ci = {s: [None if se is None else 1.96 * se for se in contributions[s]["source_share_se"]] for s in sources}
        lines.append(f"{'src ±95%':<13}{layer:>5} " + " ".join(cell(ci[s], layer) for s in sources))
    if "source_share_by_position" in first:
        counts = first["sentences_by_position"]
        lines += ["", f"source share by target position (decoder's last layer; {SourceShare.positions} positions "
                      "at most; sentences: how many reach it)",
                  f"{'position':>8} {'sentences':>9} " + " ".join(f"{s:>{width}}" for s in sources)]
        for t, n in enumerate(counts):
            lines.append(f"{t:>8} {n:>9} " + " ".join(cell(contributions[s]["source_share_by_position"], t)
                                                      for s in sources))
    return lines + [""] + [f"  {line}" for line in CONTRIBUTIONS_LEGEND]


class AttentionStatistics:
    """Accumulates :data:`STATISTICS` sentence by sentence, per attention kind and layer, and a
    :class:`SourceShare` per rollout source the records allow; :meth:`result` gives a JSON-ready dict."""

    def __init__(self, src_frequent: Set[str], tgt_frequent: Set[str], correlation_cap: int = 200_000,
                 weights_only: bool = False):
        self.frequent = {"src": src_frequent, "tgt": tgt_frequent}
        self.cap = correlation_cap
        self.kinds = CHEAP if weights_only else STATISTICS  # weights_only: sparsity and null rate only
        self.acc: Dict[Tuple[str, int], List[Statistic]] = {}
        self.rolled: Dict[str, SourceShare] = {}  # rollout source -> its statistic (not with weights_only)
        self.sentences = 0

    def _statistics(self, key: Tuple[str, int], heads: int) -> List[Statistic]:
        if key not in self.acc:
            self.acc[key] = [cls(heads) for cls in self.kinds]
            for stat in self.acc[key]:
                if isinstance(stat, WeightNormCorrelation):
                    stat.cap = self.cap
        return self.acc[key]

    def update(self, sent: SentenceAttention) -> None:
        self.sentences += 1
        for (kind, layer), record in sent.records.items():
            H, T, S = record.weights.shape
            valid = np.tril(np.ones((T, S), bool)) if kind == "decoder_self" else np.ones((T, S), bool)
            cats = categorise(sent.tokens(kind)[1], self.frequent["src" if kind != "decoder_self" else "tgt"])
            keys = Keys(valid, np.eye(len(CATEGORIES))[cats], record.zero_counts())
            for stat in self._statistics((kind, layer), H):
                if (record.has_norms or not stat.needs_norms) and (record.has_block or not stat.needs_block):
                    stat.update(record, keys)
        if self.kinds is not CHEAP:
            for source in sent.rollout_sources():
                self.rolled.setdefault(source, SourceShare(source)).update(sent)

    def result(self) -> dict:
        out: Dict[str, dict] = {}
        for (kind, layer), stats in sorted(self.acc.items()):
            fields: dict = {}
            for stat in stats:
                fields.update(stat.result())
            out.setdefault(kind, {})[str(layer)] = fields
        result = {"sentences": self.sentences, "attention": out}
        if self.rolled:
            result["contributions"] = {s: self.rolled[s].result() for s in ROLLOUT_SOURCES if s in self.rolled}
        return result


LAYERS_LEGEND = ("layer: counted from 0 (0 = the first, next to the embeddings) as in stats.json, alignment.json, "
                 "--alignment-layer, links/*-L<layer>.txt; papers count from 1 (their layer 2 = 1 here)")


def format_table(stats: dict) -> str:
    """``stats.txt``: one line per attention kind and layer, a column for each statistic that applies to
    some row (``n/a`` where it does not), and a legend of the columns shown."""
    rows = [(kind, layer, fields) for kind, layers in stats["attention"].items() for layer, fields in layers.items()]
    every = [fields for _, _, fields in rows]
    columns = [column for cls in STATISTICS for column in cls.columns(every)]
    subset = f" of {stats['subset']}" if stats.get("subset") else ""
    teacher = (", the reference translation fed to the decoder (teacher forcing)"
               if any(kind != "encoder_self" for kind, _, _ in rows) else "")
    skipped = stats.get("skipped_sentences") or 0
    skipped = (f"; {skipped} more skipped, longer than the model's positions (--skip-invalid-size-inputs-valid-test)"
               if skipped else "")
    lines = [f"{stats['sentences']} sentences{subset}{teacher}{skipped}",
             f"{'attention':<13}{'layer':>5} " + " ".join(header for header, _ in columns)]
    for kind, layer, fields in rows:
        lines.append(f"{kind:<13}{layer:>5} " + " ".join(f"{cell(fields):>{len(header)}}" for header, cell in columns))
    legend = [LAYERS_LEGEND, "each value: mean over the layer's heads (stats.json has every head) and its query rows"]
    legend += [line for cls in STATISTICS for line in cls.legend_lines(every)]
    rolled = format_contributions(stats.get("contributions", {}))
    return "\n".join(lines + [""] + [f"  {line}" for line in legend] + ([""] + rolled if rolled else []))


def compute_statistics(sentences: Iterable[SentenceAttention], src_dict, tgt_dict,
                       top_frequent: int = 50) -> dict:
    stats = AttentionStatistics(frequent_tokens(src_dict, top_frequent), frequent_tokens(tgt_dict, top_frequent))
    for sent in sentences:
        stats.update(sent)
    return stats.result()
