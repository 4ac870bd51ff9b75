"""What the learned reflector sees: the candidate pool, cross-model scores and audio statistics.

The paper's omni model reads the audio, its own first pass and the tools' N-best before emitting
its first token. The embedded reflector gets the same inputs as numbers:

- a **candidate pool**: every hypothesis of every source (internal N-best, each external N-best),
  deduplicated after Whisper English normalisation (surface variants that differ only in case or
  punctuation are one candidate; their probabilities are added up, ``logsumexp``), with each
  source's rank of it;
- **cross-model scores**: every pooled candidate scored under every scorer model
  (:mod:`speech_hands.reflection.learned.scoring`), so the internal model also judges the tool's candidates
  and the other way round;
- **audio statistics** from framewise log-power (level, spread, a signal-to-noise proxy, duration)
  and the speaking rate.

Or, without any scoring pass (:class:`NBestPosterior`, the fast default): each tool's own N-best
scores give a posterior over its list, and the pool's posterior is their weighted mixture. It is
stored in the pool as one pseudo-scorer (``nbest``) whose "total" is ``log p(h)``, so the rescoring,
MBR and reflector code downstream is the same for both kinds of pool.

Any number of candidate sources works: features about "the external side" summarise over all
external tools (best score, mean agreement), so the vector has a fixed length.

:func:`pool_from_outputs` and :func:`reflector_features` are the *only* feature code: training
(:mod:`speech_hands.training`) and inference (:class:`speech_hands.reflection.learned.policy.LearnedPolicy`)
both call them, so no train/serve skew can creep in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from speech_hands.reflection.learned.mbr import Selection, expected_risk, mbr_index, pairwise_word_errors, posterior
from speech_hands.reflection.learned.scoring import CandidateScore
from speech_hands.types import ToolOutput

#: Score lookup: (scorer name, raw candidate texts) -> scores in order, or None when unavailable.
ScoreFn = Callable[[str, Sequence[str]], Sequence[CandidateScore] | None]


@dataclass
class PoolCandidate:
    """One distinct (normalised) candidate text of the pool."""

    words: tuple[str, ...]
    surfaces: list[str] = field(default_factory=list)  #: raw texts that normalise to it, first seen first
    ranks: dict[str, int] = field(default_factory=dict)  #: tool -> best rank it had there
    own_scores: dict[str, float] = field(default_factory=dict)  #: tool -> its own (mean log-prob) score
    totals: dict[str, float] = field(default_factory=dict)  #: scorer -> log P(text, eot | audio)
    n_tokens: dict[str, int] = field(default_factory=dict)
    #: tool -> [(raw text, the tool's own score)] of every hypothesis of that tool normalising to it
    own_hypotheses: dict[str, list[tuple[str, float | None]]] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(self.words)


@dataclass
class CandidatePool:
    """All candidates of one input, with the sources that proposed them."""

    candidates: list[PoolCandidate]
    internal_tool: str | None
    external_tools: list[str]
    scorers: list[str]

    def index_of_rank(self, tool: str, rank: int = 0) -> int | None:
        best = None
        for i, c in enumerate(self.candidates):
            r = c.ranks.get(tool)
            if r is not None and r <= rank and (best is None or r < self.candidates[best].ranks[tool]):
                best = i
        return best

    def support(self, cand: PoolCandidate) -> float:
        """Share of the real sources (internal + external tools) whose N-best holds ``cand``."""
        real = ([self.internal_tool] if self.internal_tool else []) + self.external_tools
        return sum(1 for t in real if t in cand.ranks) / max(1, len(real))

    @property
    def scored(self) -> bool:
        return bool(self.scorers) and all(len(c.totals) == len(self.scorers) for c in self.candidates)


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _score_concurrently(
    score_fn: ScoreFn, scorer_names: Sequence[str], surfaces: list[str]
) -> list[Sequence[CandidateScore] | None]:
    """Every scorer's scores of ``surfaces``, the scorers running at the same time.

    Each scorer is its own CTranslate2 model (they release the GIL and run in parallel); on 2 CPU
    cores scoring under base and tiny.en together takes ~0.84 s instead of ~1.08 s one after the
    other (benchmarks/RESULTS.md). Results come back in ``scorer_names`` order.
    """
    if len(scorer_names) <= 1:
        return [score_fn(name, surfaces) for name in scorer_names]
    with ThreadPoolExecutor(max_workers=len(scorer_names), thread_name_prefix="score") as pool:
        return list(pool.map(lambda name: score_fn(name, surfaces), scorer_names))


def pool_from_outputs(
    internal: ToolOutput | None,
    externals: Sequence[ToolOutput],
    normalize: Callable[[str], str],
    score_fn: ScoreFn | None = None,
    scorer_names: Sequence[str] = (),
    extra: Sequence[ToolOutput] = (),
    nbest: NBestPosterior | None = None,
) -> CandidatePool:
    """Build the pool; ``score_fn`` (if given) scores every surface text under each scorer name.

    ``extra`` outputs (a rewrite's own generators, e.g. prompted re-decoding) add candidates but are
    not tools: they never count as "the external side" in features or in source support. ``nbest``
    (instead of scorers): the pool is scored by the tools' own N-best posterior
    (:meth:`NBestPosterior.fill`), with no model call."""
    by_words: dict[tuple[str, ...], PoolCandidate] = {}
    order: list[PoolCandidate] = []
    outputs = [o for o in [internal, *externals, *extra] if o is not None and o.ok]
    for output in outputs:
        for hyp in output.hypotheses:
            words = tuple(normalize(hyp.text).split())
            cand = by_words.get(words)
            if cand is None:
                cand = PoolCandidate(words=words)
                by_words[words] = cand
                order.append(cand)
            if hyp.text not in cand.surfaces:
                cand.surfaces.append(hyp.text)
            cand.own_hypotheses.setdefault(output.tool, []).append((hyp.text, hyp.score))
            if output.tool not in cand.ranks or hyp.rank < cand.ranks[output.tool]:
                cand.ranks[output.tool] = hyp.rank
                if hyp.score is not None:
                    cand.own_scores[output.tool] = hyp.score
    used: list[str] = []
    if score_fn is not None and order:
        surfaces = [s for c in order for s in c.surfaces]
        for name, scores in zip(scorer_names, _score_concurrently(score_fn, scorer_names, surfaces)):
            if scores is None:
                continue
            lookup = {s.text: s for s in scores}
            for cand in order:
                per = [lookup[s] for s in cand.surfaces]
                cand.totals[name] = _logsumexp([p.total for p in per])
                cand.n_tokens[name] = min(p.n_tokens for p in per)
            used.append(name)
    internal_tool = internal.tool if internal is not None and internal.ok else None
    pool = CandidatePool(
        candidates=order,
        internal_tool=internal_tool,
        external_tools=[o.tool for o in externals if o.ok],
        scorers=used,
    )
    if nbest is not None and not used:
        nbest.fill(pool)
    return pool


def tools_agree(
    internal: ToolOutput | None, externals: Sequence[ToolOutput], normalize: Callable[[str], str], max_distinct: int
) -> bool:
    """The scoring-pass gate's condition: every tool's top-1 normalises to the internal top-1, and all
    the tools' N-best lists together hold at most ``max_distinct`` distinct (normalised) candidates.

    Measured, not proved (docs/reflector.md, "Cost"): on the 60 dev utterances' cached records the full
    learned agent answers the internal top-1 on every such item (17 of 60 with ``max_distinct=3``); a
    looser condition (the top-1s agree, any list) changed one answer for the worse."""
    outputs = [o for o in [internal, *externals] if o is not None and o.ok]
    if internal is None or internal.top is None or len(outputs) < 2:
        return False
    top = normalize(internal.top.text).split()
    if any(o.top is None or normalize(o.top.text).split() != top for o in outputs):
        return False
    return len({tuple(normalize(h.text).split()) for o in outputs for h in o.hypotheses}) <= max_distinct


# ---------------------------------------------------------------- the posterior from the tools' own N-best scores

#: The pseudo-scorer an :class:`NBestPosterior` fills in: ``totals["nbest"] = log p(h)``.
NBEST_SCORER = "nbest"


@lru_cache(maxsize=1)
def _count_tokenizer() -> Any:
    from whisper.tokenizer import get_tokenizer

    return get_tokenizer(multilingual=True, language="en", task="transcribe")


@lru_cache(maxsize=8192)
def token_count(text: str) -> int:
    """Tokens of ``text`` under Whisper's multilingual tokenizer (as the scorer encodes it: a leading
    space). Whisper's beam score is the mean log-probability per token, so ``score * (tokens + 1)``
    (+1: end-of-text) recovers the sequence log-probability."""
    return len(_count_tokenizer().encode(" " + text.strip())) if text.strip() else 0


@dataclass(frozen=True)
class NBestPosterior:
    """A posterior over the pool from the tools' own N-best scores: no scoring pass, no model call.

    Each tool's list gives ``q_t(h) = softmax(alpha * log P_t(h))`` over its distinct (normalised)
    candidates, where ``log P_t(h) = score * (tokens + 1)`` is the tool's own sequence log-probability
    (Whisper's beam score is per token; surface variants of one candidate are summed, as in the
    scored pool); the pool's posterior is the mixture ``p(h) = sum_t w_t q_t(h)`` with the weights
    normalised over the tools present. A tool without scores (``score`` None) contributes a uniform
    ``q_t``; a tool not in ``weights`` contributes nothing. ``weights`` and ``alpha`` are fitted by the
    recipe inside the CV folds (``speech-hands train-reflector --rewrite nbest-mbr/risk``).

    Why it is cheap: perception already ran both beam searches, so this costs a few tokenizer calls
    and one softmax per list. What it cannot see: how the *other* model judges a candidate, and the
    prompted re-decode's extra candidates (the scoring pass's gain; docs/reflector.md measures both)."""

    weights: Mapping[str, float]
    alpha: float = 1.0

    def __post_init__(self) -> None:
        if not self.alpha > 0:
            raise ValueError("the N-best posterior's alpha must be > 0")
        if any(w < 0 for w in self.weights.values()) or not any(w > 0 for w in self.weights.values()):
            raise ValueError("N-best posterior weights must be >= 0, one of them > 0")

    def posterior(self, pool: CandidatePool) -> np.ndarray:
        """``p(h)`` for every pooled candidate (sums to 1 over a non-empty pool with a weighted tool)."""
        tools = [t for t in [pool.internal_tool, *pool.external_tools] if t and self.weights.get(t, 0.0) > 0]
        p = np.zeros(len(pool.candidates))
        total = sum(self.weights[t] for t in tools)
        for tool in tools:
            members = [i for i, c in enumerate(pool.candidates) if tool in c.own_hypotheses]
            if not members:
                continue
            hyps = [pool.candidates[i].own_hypotheses[tool] for i in members]
            if any(score is None for hs in hyps for _, score in hs):
                q = np.full(len(members), 1.0 / len(members))
            else:
                logp = np.array([_logsumexp([s * (token_count(t) + 1) for t, s in hs]) for hs in hyps])  # type: ignore
                z = np.exp(self.alpha * (logp - logp.max()))
                q = z / z.sum()
            p[members] += self.weights[tool] / total * q
        return p

    def fill(self, pool: CandidatePool) -> None:
        """Score the pool with the pseudo-scorer :data:`NBEST_SCORER`: ``totals = log p(h)`` (floored),
        so ``rescore`` with ``{"nbest": 1}`` and an MBR selection with alpha 1 give back ``p``."""
        p = self.posterior(pool)
        if not p.size or p.sum() <= 0:
            return
        for cand, prob in zip(pool.candidates, p):
            cand.totals[NBEST_SCORER] = math.log(max(float(prob), 1e-300))
            cand.n_tokens[NBEST_SCORER] = token_count(cand.surfaces[0])
        pool.scorers = [NBEST_SCORER]

    def to_dict(self) -> dict[str, Any]:
        return {"weights": dict(self.weights), "alpha": self.alpha}


# ---------------------------------------------------------------- rescoring (shared with the rewrite)


def candidate_features(cand: PoolCandidate, pool: CandidatePool) -> dict[str, float]:
    """Named per-candidate features for rescoring (any number of sources).

    Scorer totals are keyed by scorer name (``whisper-base``...); ``mean:<scorer>`` is the per-token
    mean; the rest is tool-agnostic: word count, the share of real sources proposing it, whether the
    internal model proposed it and at which rank, the best rank any external tool gave it, and
    whether only a rewrite generator proposed it."""
    n_best = 5.0
    feats: dict[str, float] = {"words": float(len(cand.words)), "agree": pool.support(cand)}
    for name in pool.scorers:
        feats[name] = cand.totals[name]
        feats[f"mean:{name}"] = cand.totals[name] / (cand.n_tokens[name] + 1)
    internal_rank = cand.ranks.get(pool.internal_tool) if pool.internal_tool else None
    feats["internal_rank"] = float(internal_rank) if internal_rank is not None else n_best
    feats["in_internal"] = float(internal_rank is not None)
    ext = [cand.ranks[t] for t in pool.external_tools if t in cand.ranks]
    feats["external_rank"] = float(min(ext)) if ext else n_best
    feats["in_external"] = float(bool(ext))
    feats["extra_only"] = float(internal_rank is None and not ext)
    return feats


def candidate_score(cand: PoolCandidate, pool: CandidatePool, weights: Mapping[str, float]) -> float:
    """Weighted sum of the candidate's features (:func:`candidate_features`).

    ``weights`` maps feature names to weights, e.g. ``{"whisper-base": 1, "whisper-tiny.en": 0.5,
    "words": 1}``: cross-model log-probabilities plus a per-word bonus. Missing names weigh 0."""
    feats = candidate_features(cand, pool)
    return sum(w * feats.get(name, 0.0) for name, w in weights.items())


def rescore(pool: CandidatePool, weights: Mapping[str, float]) -> list[float]:
    """Scores of every pooled candidate (higher is better); all zero when the pool is unscored."""
    if not pool.scored:
        return [0.0] * len(pool.candidates)
    return [candidate_score(c, pool, weights) for c in pool.candidates]


def pool_risk(pool: CandidatePool, scores: Sequence[float], alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(posterior, expected word errors) of every pooled candidate (:mod:`~speech_hands.reflection.learned.mbr`).

    An unscored pool has no posterior: uniform weights then (the medoid), never used for a pick."""
    p = posterior(scores, alpha if pool.scored else 0.0)
    errors = pairwise_word_errors(tuple(c.words for c in pool.candidates))
    return p, expected_risk(errors, p)


def pick(
    pool: CandidatePool, scores: Sequence[float], risk: np.ndarray, selection: Selection, members=None
) -> int | None:
    """The selection's choice among ``members`` (default: the whole pool); None if there is none.

    MAP: the best score (ties: the earlier candidate); MBR: the least expected risk."""
    idx = list(range(len(pool.candidates))) if members is None else list(members)
    if not idx:
        return None
    if selection.mode == "mbr":
        return mbr_index(risk, scores, idx)
    return max(idx, key=lambda i: (scores[i], -i))


# ---------------------------------------------------------------- word-level distances


def word_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance over words."""
    if not a:
        return len(b)
    if not b:
        return len(a)
    prev = list(range(len(b) + 1))
    for i, wa in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, wb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (wa != wb))
        prev = cur
    return prev[-1]


def normalised_distance(a: Sequence[str], b: Sequence[str]) -> float:
    return word_distance(a, b) / max(1, len(a), len(b))


# ---------------------------------------------------------------- audio statistics

AUDIO_FEATURES: tuple[str, ...] = ("duration_s", "logpow_mean", "logpow_std", "energy_p10", "energy_p90", "snr_proxy")


def audio_statistics(samples: np.ndarray | None) -> dict[str, float]:
    """Frame log-power statistics of the first 30 s: level, spread and a signal-to-noise proxy.

    25 ms frames every 10 ms (Whisper's framing), log10 of the mean power, floored at -10. The
    spread between loud (p90) and quiet (p10) frames is the SNR proxy: noise fills the pauses. Plain
    numpy on strided frames, well under a millisecond for 30 s (a full log-mel pass costs ~50 ms)."""
    if samples is None or samples.size == 0:
        return {name: 0.0 for name in AUDIO_FEATURES}
    window = np.ascontiguousarray(samples[: 30 * 16_000], dtype=np.float32)
    if window.size < 400:
        window = np.pad(window, (0, 400 - window.size))
    frames = np.lib.stride_tricks.sliding_window_view(window, 400)[::160]
    logpow = np.log10(np.maximum((frames.astype(np.float64) ** 2).mean(axis=1), 1e-10))
    p10, p90 = np.percentile(logpow, [10, 90])
    return {
        "duration_s": samples.size / 16_000,
        "logpow_mean": float(logpow.mean()),
        "logpow_std": float(logpow.std()),
        "energy_p10": float(p10),
        "energy_p90": float(p90),
        "snr_proxy": float(p90 - p10),
    }


# ---------------------------------------------------------------- the reflector's feature vector


def _own(output: ToolOutput | None, default: float = math.log(0.7)) -> float:
    if output is None or output.top is None or output.top.score is None:
        return default
    return output.top.score


def reflector_features(
    pool: CandidatePool,
    internal: ToolOutput | None,
    externals: Sequence[ToolOutput],
    audio_stats: Mapping[str, float],
    weights: Mapping[str, float],
    selection: Selection | None = None,
) -> tuple[dict[str, float], dict[str, int | None]]:
    """The named feature vector, and the pool indices of the three actions' answers.

    The indices say which pooled candidate each action would return: ``internal`` (internal top-1),
    ``external`` (the selection's pick among the external tools' N-best lists) and ``rewrite`` (the
    selection's pick over the whole pool): best-rescored under MAP, least expected risk under MBR.
    The ``risk_*`` features are each answer's expected word errors under the pool's posterior (per
    internal word): how wrong each action is likely to be, as the models see it.
    """
    selection = selection or Selection()
    scores = rescore(pool, weights)
    n = len(pool.candidates)
    p, risk = pool_risk(pool, scores, selection.alpha)
    i_int = pool.index_of_rank(pool.internal_tool, 0) if pool.internal_tool else None
    # <external> accepts the external side: the selection's pick among the external tools' N-best
    # lists (the paper's label rule also takes the best external hypothesis, not only top-1)
    ext_members = [i for i, c in enumerate(pool.candidates) if any(t in c.ranks for t in pool.external_tools)]
    if pool.scored and ext_members:
        i_ext = pick(pool, scores, risk, selection, ext_members)
    else:
        tops = [pool.index_of_rank(t, 0) for t in pool.external_tools]
        i_ext = next((i for i in tops if i is not None), None)
    i_rew = pick(pool, scores, risk, selection) if n and pool.scored else i_int
    chosen = {"internal": i_int, "external": i_ext, "rewrite": i_rew}

    def words(i: int | None) -> tuple[str, ...]:
        return pool.candidates[i].words if i is not None else ()

    def sc(i: int | None) -> float:
        return scores[i] if i is not None and pool.scored else 0.0

    w_int, w_ext, w_rew = words(i_int), words(i_ext), words(i_rew)
    ok_externals = [o for o in externals if o.ok]
    ext_top_texts = [o.top.text for o in ok_externals if o.top is not None]
    n_sources = (1 if i_int is not None else 0) + len(ok_externals)
    # how many sources put the internal top-1 anywhere in their N-best
    support_int = pool.support(pool.candidates[i_int]) if i_int is not None else 0.0
    dur = max(0.5, float(audio_stats.get("duration_s", 0.0)) or 0.5)
    feats: dict[str, float] = {
        "own_internal": _own(internal),
        "own_external_best": max((_own(o) for o in ok_externals), default=math.log(0.7)),
        "n_candidates_log": math.log1p(n),
        "n_sources": float(n_sources),
        "support_internal": support_int,
        "dist_int_ext": normalised_distance(w_int, w_ext),
        "dist_int_rew": normalised_distance(w_int, w_rew),
        "dist_ext_rew": normalised_distance(w_ext, w_rew),
        "dist_int_ext_top": float(np.mean([normalised_distance(w_int, tuple(t.split())) for t in ext_top_texts]))
        if ext_top_texts
        else 1.0,
        "int_eq_ext": float(w_int == w_ext),
        "int_eq_rew": float(w_int == w_rew),
        "ext_eq_rew": float(w_ext == w_rew),
        "len_ratio_ext": (len(w_ext) + 1) / (len(w_int) + 1),
        "words_per_s": len(w_int) / dur,
        "margin_rew_int": (sc(i_rew) - sc(i_int)) / max(1, len(w_int)),
        "margin_ext_int": (sc(i_ext) - sc(i_int)) / max(1, len(w_int)),
        "scored": float(pool.scored),
    }
    for k, name in enumerate(pool.scorers[:2]):  # per-scorer margins: internal top-1 vs rewrite pick
        c_int = pool.candidates[i_int] if i_int is not None else None
        c_rew = pool.candidates[i_rew] if i_rew is not None else None
        if c_int is not None and c_rew is not None:
            feats[f"scorer{k}_rew_minus_int"] = (c_rew.totals[name] - c_int.totals[name]) / max(1, len(w_int))
            feats[f"scorer{k}_int_mean"] = c_int.totals[name] / (c_int.n_tokens[name] + 1)
    for k in range(2):
        feats.setdefault(f"scorer{k}_rew_minus_int", 0.0)
        feats.setdefault(f"scorer{k}_int_mean", 0.0)
    for name in AUDIO_FEATURES:
        feats[name] = float(audio_stats.get(name, 0.0))
    per_word = max(1, len(w_int))

    def rk(i: int | None) -> float:
        return float(risk[i]) / per_word if i is not None and pool.scored else 0.0

    feats["risk_internal"] = rk(i_int)
    feats["risk_external"] = rk(i_ext)
    feats["risk_rewrite"] = rk(i_rew)
    feats["posterior_internal"] = float(p[i_int]) if i_int is not None and pool.scored else 0.0
    feats["posterior_top"] = float(p.max()) if p.size and pool.scored else 0.0
    return feats, chosen
