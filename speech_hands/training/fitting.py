"""Fit the rescoring weights and the learned reflector; evaluate with leave-one-speaker-out CV.

Why a multinomial logistic regression (scikit-learn) and not a neural network: the training set is a
few hundred utterances (60 real, their augmented copies, synthesized speech), the features are ~30
engineered numbers, and the method needs *probabilities* of three actions. A linear softmax model
over standardised features fits that size without overfitting, gives reasonably calibrated
probabilities (we add one temperature fitted on out-of-fold predictions), and its whole state is a
3 x F matrix: the shipped artifact is a few KB of JSON, loaded and evaluated with numpy in
microseconds, no pickle and no scikit-learn needed at inference.

Labels follow the paper's rule (docs/method.md section 3, :mod:`speech_hands.metrics.labels`) with one realistic change: "best external" is the external candidate the ``<external>``
action would actually return (best-rescored under MAP, least expected risk under MBR), not an oracle
pick inside the list, so a label never asks for an answer the agent cannot give. Examples are
weighted by regret (``<internal>`` dominates).

Everything tuned (rescoring weights, MBR alpha, the regularisation C, the temperature) is fitted on the training
folds only; the held-out speaker is touched once, for the report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from speech_hands.metrics.labels import decide_asr_action
from speech_hands.metrics.wer import word_errors as harness_word_errors
from speech_hands.reflection import decision
from speech_hands.reflection.decision import ACTIONS
from speech_hands.reflection.learned.features import (
    NBEST_SCORER,
    CandidatePool,
    NBestPosterior,
    pick,
    pool_from_outputs,
    pool_risk,
    reflector_features,
    rescore,
)
from speech_hands.reflection.learned.mbr import Selection
from speech_hands.reflection.learned.policy import merge_same_answers
from speech_hands.text import normalize_english
from speech_hands.training.records import PoolRecord
from speech_hands.types import Action

# ---------------------------------------------------------------- word errors


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(errors, reference words) after Whisper English normalisation, by the evaluation harness."""
    counts = harness_word_errors(reference, hypothesis, normalizer="english")
    return counts.errors, counts.reference_length


def gold_action(w_int: float, w_ext: float, w_rew: float) -> Action:
    """The paper's label rule (the harness's) on per-utterance WERs; ties go to internal, then external."""
    return decide_asr_action(w_int, w_ext, w_rew)


# ---------------------------------------------------------------- examples


@dataclass
class Example:
    record: PoolRecord
    features: dict[str, float]
    answers: dict[Action, str]  #: normalised text each action would return
    errors: dict[Action, int]
    ref_words: int
    label: Action
    pool: CandidatePool

    @property
    def group(self) -> str:
        return self.record.item.group

    @property
    def real(self) -> bool:
        return self.record.item.real


def record_pool(record: PoolRecord, *, prompted: bool, nbest: NBestPosterior | None = None) -> CandidatePool:
    """The pool of a record as the agent builds it: scored by the record's stored scores, or (``nbest``)
    by the tools' own N-best posterior, with no stored score used."""
    if nbest is not None:
        return pool_from_outputs(record.internal, record.externals, normalize_english, nbest=nbest)
    return pool_from_outputs(
        record.internal,
        record.externals,
        normalize_english,
        record.score_fn(),
        list(record.scores),
        extra=record.extra if prompted else (),
    )


def make_examples(
    records: Sequence[PoolRecord],
    weights: Mapping[str, float],
    *,
    prompted: bool,
    selection: Selection | None = None,
    nbest: NBestPosterior | None = None,
) -> list[Example]:
    out = []
    for rec in records:
        pool = record_pool(rec, prompted=prompted, nbest=nbest)
        feats, chosen = reflector_features(pool, rec.internal, rec.externals, rec.audio_stats, weights, selection)
        answers = {a: (pool.candidates[chosen[a.value]].text if chosen[a.value] is not None else "") for a in ACTIONS}
        errs = {}
        ref_words = 0
        for a in ACTIONS:
            errs[a], ref_words = word_errors(rec.item.reference, answers[a])
        wer = {a: errs[a] / max(1, ref_words) for a in ACTIONS}
        label = gold_action(wer[Action.INTERNAL], wer[Action.EXTERNAL], wer[Action.REWRITE])
        out.append(Example(rec, feats, answers, errs, ref_words, label, pool))
    return out


# ---------------------------------------------------------------- rescoring weights


def pick_errors(
    pool: CandidatePool, reference: str, weights: Mapping[str, float], memo: dict, selection: Selection | None = None
) -> int:
    """Word errors of the rewrite's pick (MAP or MBR) on one pool."""
    if not pool.candidates:
        return word_errors(reference, "")[0]
    selection = selection or Selection()
    scores = rescore(pool, weights)
    risk = pool_risk(pool, scores, selection.alpha)[1] if selection.mode == "mbr" else None
    best = pick(pool, scores, risk, selection)  # type: ignore[arg-type]
    text = pool.candidates[best].text  # type: ignore[index]
    key = (id(pool), text)
    if key not in memo:
        memo[key] = word_errors(reference, text)[0]
    return memo[key]


def fit_weights(
    records: Sequence[PoolRecord],
    *,
    prompted: bool,
    grid_tiny: Sequence[float],
    grid_words: Sequence[float],
    internal_scorer: str,
    selections: Sequence[Selection] = (Selection(),),
) -> tuple[dict[str, float], Selection]:
    """Grid search of the rescoring weights (internal scorer fixed at 1) and the selection rule,
    jointly minimising corpus errors of the pick (first grid point wins ties)."""
    pools = [(record_pool(r, prompted=prompted), r.item.reference) for r in records]
    others = sorted({name for r in records for name in r.scores if name != internal_scorer})
    memo: dict = {}
    best: tuple[int, dict[str, float], Selection] | None = None
    for selection in selections:
        for w_other in grid_tiny:
            for w_words in grid_words:
                weights = {internal_scorer: 1.0, **{o: w_other for o in others}, "words": w_words}
                errors = sum(pick_errors(p, ref, weights, memo, selection) for p, ref in pools)
                if best is None or errors < best[0]:
                    best = (errors, weights, selection)
    assert best is not None
    return best[1], best[2]


def fit_alpha(
    records: Sequence[PoolRecord], weights: Mapping[str, float], alphas: Sequence[float], *, prompted: bool
) -> tuple[float, dict[float, int]]:
    """The MBR temperature with the fewest corpus errors of the rewrite pick on ``records`` (which
    are training folds only: the caller never passes the held-out speaker). Ties go to the larger
    alpha (closer to MAP). Returns the alpha and the errors per alpha."""
    pools = [(record_pool(r, prompted=prompted), r.item.reference) for r in records]
    memo: dict = {}
    errors = {a: sum(pick_errors(p, ref, weights, memo, Selection("mbr", a)) for p, ref in pools) for a in alphas}
    return min(alphas, key=lambda a: (errors[a], -a)), errors


def _mbr_text(pool: CandidatePool) -> str:
    if not pool.candidates or not pool.scored:
        return pool.candidates[0].text if pool.candidates else ""
    scores = rescore(pool, NBEST_WEIGHTS)
    best = pick(pool, scores, pool_risk(pool, scores, NBEST_SELECTION.alpha)[1], NBEST_SELECTION)
    return pool.candidates[best].text  # type: ignore[index]


#: rescoring weights and selection of an N-best-posterior pool: score = log p(h), softmax(1 * score) = p
NBEST_WEIGHTS: dict[str, float] = {NBEST_SCORER: 1.0}
NBEST_SELECTION = Selection("mbr", 1.0)


def fit_nbest(records: Sequence[PoolRecord], recipe) -> tuple[NBestPosterior, dict]:
    """The N-best posterior's weights and alpha with the fewest corpus errors of the MBR pick on
    ``records`` (training folds only). Grid: the internal tool's weight 1, every external tool's from
    ``recipe.weight_grid_tiny`` (the same grid as the scored pool's tiny.en weight), alpha from
    ``recipe.mbr_alphas``; the first grid point wins ties."""
    internal = recipe.pool.internal_name
    externals = sorted({o.tool for r in records for o in r.externals})
    memo: dict = {}
    best: tuple[int, NBestPosterior] | None = None
    for w_ext in recipe.weight_grid_tiny:
        for alpha in recipe.mbr_alphas:
            nbest = NBestPosterior(weights={internal: 1.0, **{e: w_ext for e in externals}}, alpha=alpha)
            errors = 0
            for r in records:
                pool = record_pool(r, prompted=False, nbest=nbest)
                text = _mbr_text(pool)
                if (r.item.id, text) not in memo:
                    memo[(r.item.id, text)] = word_errors(r.item.reference, text)[0]
                errors += memo[(r.item.id, text)]
            if best is None or errors < best[0]:
                best = (errors, nbest)
    assert best is not None
    return best[1], {"nbest": best[1].to_dict(), "nbest_train_errors": best[0]}


def fit_ranker(
    records: Sequence[PoolRecord],
    *,
    prompted: bool,
    c: float = 1.0,
    seed: int = 0,
    features: Sequence[str] | None = None,
) -> dict[str, float]:
    """Pairwise logistic regression over candidate features (a RankNet/RankSVM-style linear ranker).

    Every pair of candidates of one utterance whose word errors differ gives one example: the
    feature difference, labelled by which is better, weighted by how many errors separate them.
    The fitted coefficients, divided by the features' scale, are the rescoring weights."""
    from sklearn.linear_model import LogisticRegression

    from speech_hands.reflection.learned.features import candidate_features

    diffs, ys, ws = [], [], []
    names: list[str] | None = list(features) if features else None
    for rec in records:
        pool = record_pool(rec, prompted=prompted)
        if not pool.scored or len(pool.candidates) < 2:
            continue
        feats = [candidate_features(cand, pool) for cand in pool.candidates]
        if names is None:
            names = sorted(feats[0])
        x = np.array([[f.get(n, 0.0) for n in names] for f in feats])
        errs = [word_errors(rec.item.reference, cand.text)[0] for cand in pool.candidates]
        for i in range(len(errs)):
            for j in range(len(errs)):
                if errs[i] < errs[j]:
                    d = x[i] - x[j]
                    diffs += [d, -d]
                    ys += [1, 0]
                    ws += [float(errs[j] - errs[i])] * 2
    assert names is not None
    if not diffs:
        return {names[0]: 1.0}
    xd = np.array(diffs)
    scale = xd.std(axis=0)
    scale[scale < 1e-9] = 1.0
    model = LogisticRegression(C=c, fit_intercept=False, max_iter=5000, random_state=seed)
    model.fit(xd / scale, np.array(ys), sample_weight=np.array(ws))
    return {n: round(float(w), 6) for n, w in zip(names, model.coef_[0] / scale)}


RESCORER = "ranker"


def rescoring_weights(records: Sequence[PoolRecord], recipe, *, prompted: bool) -> dict[str, float]:
    """The recipe's rescoring fit: the pairwise ranker, or the 2-weight grid search."""
    if RESCORER == "grid":
        return fit_weights(
            records,
            prompted=prompted,
            grid_tiny=recipe.weight_grid_tiny,
            grid_words=recipe.weight_grid_words,
            internal_scorer=recipe.pool.internal_name,
        )[0]
    return fit_ranker(records, prompted=prompted, c=recipe.ranker_c, seed=recipe.seed)


def rescoring_fit(
    records: Sequence[PoolRecord], recipe, *, prompted: bool, mode: str
) -> tuple[dict[str, float], Selection, dict]:
    """Rescoring weights and the selection rule, fitted on ``records`` only (training folds).

    MBR: the posterior's score is the log-linear ensemble ``log P_base + w_t log P_tiny + w_n words``
    (both with end-of-text); ``w_t``, ``w_n`` and ``alpha`` are grid-searched jointly for the fewest
    errors of the MBR pick. A log-likelihood-like score is what a posterior needs; the pairwise
    ranker's score (rank and source-support features) made a worse posterior (docs/reflector.md).
    MAP: the recipe's ranker (:func:`rescoring_weights`); alpha, then used only by the risk
    features, from :func:`fit_alpha`."""
    if mode == "mbr":
        weights, sel = fit_weights(
            records,
            prompted=prompted,
            grid_tiny=recipe.weight_grid_tiny,
            grid_words=recipe.weight_grid_words,
            internal_scorer=recipe.pool.internal_name,
            selections=[Selection("mbr", a) for a in recipe.mbr_alphas],
        )
        return weights, sel, {"alpha": sel.alpha}
    weights = rescoring_weights(records, recipe, prompted=prompted)
    alpha, _ = fit_alpha(records, weights, recipe.mbr_alphas, prompted=prompted)
    return weights, Selection("map", alpha), {"alpha": alpha}


# ---------------------------------------------------------------- the reflector model


@dataclass
class LinearReflector:
    """Standardise, then a softmax over three linear scores divided by a temperature."""

    feature_names: list[str]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  #: (3, F)
    intercept: np.ndarray  #: (3,)
    temperature: float = 1.0

    def logits(self, x: np.ndarray) -> np.ndarray:
        z = (np.atleast_2d(x) - self.mean) / self.scale
        return (z @ self.coef.T + self.intercept) / self.temperature

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Row-wise ``softmax(logits)``: :func:`speech_hands.reflection.decision.softmax` vectorised over
        the examples (the logits here are always finite), kept in numpy because the temperature and C
        grid searches call it on whole folds many times."""
        z = self.logits(x)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)


def matrix(examples: Sequence[Example], names: Sequence[str]) -> np.ndarray:
    return np.array([[e.features.get(n, 0.0) for n in names] for e in examples], dtype=np.float64)


def fit_linear(examples: Sequence[Example], names: Sequence[str], c: float, seed: int) -> LinearReflector:
    from sklearn.linear_model import LogisticRegression

    x = matrix(examples, names)
    y = np.array([ACTIONS.index(e.label) for e in examples])
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    present = sorted(set(y.tolist()))
    sample_w = sample_weights(examples, y, present)
    coef = np.zeros((3, len(names)))
    if len(present) == 1:  # one class only (tiny folds): a constant model
        intercept = np.full(3, -30.0)
        intercept[present[0]] = 0.0
        return LinearReflector(list(names), mean, scale, coef, intercept)
    model = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    model.fit(z, y, sample_weight=sample_w)
    intercept = np.full(3, -30.0)  # an action never seen in training gets ~zero probability
    if len(present) == 2:  # binary sklearn model: one row; expand to two classes
        lo, hi = present
        coef[hi], intercept[hi] = model.coef_[0], model.intercept_[0]
        intercept[lo] = 0.0
    else:
        for row, k in enumerate(model.classes_):
            coef[k], intercept[k] = model.coef_[row], model.intercept_[row]
    return LinearReflector(list(names), mean, scale, coef, intercept)


WEIGHTING = "regret"


def sample_weights(examples: Sequence[Example], y: np.ndarray, present: Sequence[int]) -> np.ndarray:
    """Cost-sensitive weights: an example weighs the word errors its label saves over the worst
    action (plus a small floor, so ties still anchor the probabilities); "balanced" instead
    balances the classes (the usual fix for <internal> dominating)."""
    regret = np.array([_regret(e) for e in examples])
    if WEIGHTING == "balanced":
        counts = np.bincount(y, minlength=3).astype(float)
        class_w = {k: len(y) / (len(present) * counts[k]) for k in present}
        return np.array([class_w[k] for k in y]) * (1.0 + np.minimum(3.0, regret))
    if WEIGHTING == "regret":
        return 0.05 + np.minimum(5.0, regret)
    return np.ones(len(y))


def _regret(e: Example) -> float:
    """Word errors saved by the label's action over the worst action (0 when all actions tie)."""
    return float(max(e.errors.values()) - e.errors[e.label])


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The softmax temperature minimising the NLL of out-of-fold logits (1-D grid, log scale)."""
    best_t, best_nll = 1.0, math.inf
    for t in np.exp(np.linspace(math.log(0.25), math.log(8.0), 41)):
        z = logits / t
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        nll = -float(logp[np.arange(len(y)), y].mean())
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t


def routed_errors(examples: Sequence[Example], actions: Sequence[Action]) -> int:
    return sum(e.errors[a] for e, a in zip(examples, actions))


def decide(probs: np.ndarray, examples: Sequence[Example] | None = None) -> list[Action]:
    """The policy's decision for each row of ``probs`` (columns in :data:`ACTIONS` order): the argmax
    with the paper's tie order, by :func:`speech_hands.reflection.decision.decide` itself. With
    ``examples``, actions that return the same answer are one choice first (:func:`merge_same_answers`),
    as in the policy."""
    if examples is not None:
        probs = np.array([merge_same_answers(row, [e.answers[a] for a in ACTIONS]) for row, e in zip(probs, examples)])
    return [decision.decide(dict(zip(ACTIONS, row.tolist()))) for row in probs]


RISK_FEATURES = ("risk_internal", "risk_external", "risk_rewrite")


def fit_risk_policy(examples: Sequence[Example]) -> tuple[LinearReflector, dict[str, float]]:
    """The Bayes decision as a linear reflector: logit(action) = -(expected word errors of its answer
    per internal word) / T. No weights are learned here (the posterior's are: rescoring weights and
    alpha); T only calibrates the probabilities: the NLL of the gold labels under the probabilities
    the policy reports (same-answer actions merged), on a log grid wide enough for per-word risks."""
    names = list(RISK_FEATURES)
    x = matrix(examples, names)
    y = np.array([ACTIONS.index(e.label) for e in examples])
    model = LinearReflector(names, np.zeros(3), np.ones(3), 0.0 - np.eye(3), np.zeros(3))
    best_t, best_nll = 1.0, math.inf
    for t in np.exp(np.linspace(math.log(0.01), math.log(4.0), 61)):
        model.temperature = float(t)
        probs = model.predict_proba(x)
        merged = [merge_same_answers(row, [e.answers[a] for a in ACTIONS]) for row, e in zip(probs, examples)]
        nll = -float(np.mean([math.log(max(1e-12, m[k])) for m, k in zip(merged, y)]))
        if nll < best_nll - 1e-12:
            best_t, best_nll = float(t), nll
    model.temperature = best_t
    train_errors = routed_errors(examples, decide(model.predict_proba(x), examples))
    return model, {"train_errors": float(train_errors), "temperature": best_t, "train_nll": round(best_nll, 4)}


def group_folds(groups: Sequence[str]) -> list[str]:
    return sorted(set(groups))


def fit_reflector(
    examples: Sequence[Example],
    names: Sequence[str],
    c_grid: Sequence[float],
    seed: int,
    *,
    progress: Callable[[], None] | None = None,
) -> tuple[LinearReflector, dict[str, float]]:
    """Choose C by inner leave-one-group-out CV on routed errors (real speakers as groups; synthetic
    items always stay in training), fit a temperature on the out-of-fold logits, refit on all."""
    real_groups = sorted({e.group for e in examples if e.real})
    best_c, best_err = c_grid[0], math.inf
    oof_logits: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    for c in c_grid:
        errs = 0
        logits, labels = [], []
        for g in real_groups:
            train = [e for e in examples if e.group != g]
            test = [e for e in examples if e.group == g and e.real]
            if not test or len({e.label for e in train}) < 1:
                continue
            model = fit_linear(train, names, c, seed)
            x = matrix(test, names)
            errs += routed_errors(test, decide(model.predict_proba(x), test))
            logits.append(model.logits(x))
            labels += [ACTIONS.index(e.label) for e in test]
        if progress:
            progress()
        if logits:
            oof_logits[c] = (np.vstack(logits), np.array(labels))
        if errs < best_err:
            best_c, best_err = c, errs
    model = fit_linear(examples, names, best_c, seed)
    if best_c in oof_logits:
        model.temperature = fit_temperature(*oof_logits[best_c])
    return model, {"C": best_c, "inner_cv_errors": float(best_err), "temperature": model.temperature}
