"""Leave-one-speaker-out cross-validation of the rewrite strategies and the learned agent.

For each real speaker: everything else (the other speakers' real and augmented utterances, all the
synthesized speech) trains; the held-out speaker's *real* utterances test. Augmented copies of the
held-out speaker are excluded from its training set. Rescoring weights, the MBR temperature alpha,
the reflector's C and its temperature are fitted inside the fold (inner folds for C), never on the
test speaker: the reported numbers are nested CV.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from speech_hands.audio import virtual_audio
from speech_hands.metrics.significance import BootstrapInterval, reduction_intervals
from speech_hands.reflection.base import ReflectionInput
from speech_hands.reflection.confidence import ConfidencePolicy
from speech_hands.reflection.decision import ACTIONS
from speech_hands.reflection.rewrite import AlignmentVotingRewriter
from speech_hands.training.fitting import (
    NBEST_SELECTION,
    NBEST_WEIGHTS,
    Example,
    decide,
    fit_nbest,
    fit_reflector,
    fit_risk_policy,
    make_examples,
    matrix,
    rescoring_fit,
    word_errors,
)
from speech_hands.training.recipe import Recipe
from speech_hands.training.records import PoolRecord
from speech_hands.types import Action


@dataclass
class Tally:
    errors: int = 0
    words: int = 0

    def add(self, e: int, n: int) -> None:
        self.errors += e
        self.words += n

    @property
    def wer(self) -> float:
        return 100.0 * self.errors / max(1, self.words)


@dataclass
class CVReport:
    systems: dict[str, Tally] = field(default_factory=dict)
    gold: list[str] = field(default_factory=list)
    predicted: list[str] = field(default_factory=list)
    folds: list[dict] = field(default_factory=list)
    per_utterance: list[dict] = field(default_factory=list)
    corpora: dict[str, dict[str, Tally]] = field(default_factory=dict)  #: the same tallies per corpus

    def add(self, system: str, reference: str, hypothesis: str, corpus: str = "") -> int:
        e, n = word_errors(reference, hypothesis)
        self.systems.setdefault(system, Tally()).add(e, n)
        self.corpora.setdefault(corpus, {}).setdefault(system, Tally()).add(e, n)
        return e

    def intervals(self, wer: dict[str, float]) -> list[BootstrapInterval]:
        """Paired bootstrap of the agent's relative reduction over the best single system (items,
        then speakers), from the held-out answers."""
        if not self.per_utterance:
            return []
        best = _best_single_name(wer)
        single = [u["single_errors"][best] for u in self.per_utterance]
        if sum(single) == 0:
            return []
        agent = [u["agent_errors"] for u in self.per_utterance]
        return reduction_intervals(agent, single, [u["speaker"] for u in self.per_utterance])

    def per_speaker(self, wer: dict[str, float]) -> dict[str, dict[str, int]]:
        """Word errors per held-out speaker: the best single system (overall) vs the agent, to see
        whether a gain is spread over speakers or comes from one."""
        best = _best_single_name(wer)
        out: dict[str, dict[str, int]] = {}
        for u in self.per_utterance:
            row = out.setdefault(u["speaker"], {"items": 0, "best_single_errors": 0, "agent_errors": 0})
            row["items"] += 1
            row["best_single_errors"] += u["single_errors"][best]
            row["agent_errors"] += u["agent_errors"]
        return dict(sorted(out.items()))

    def f1(self) -> dict[str, dict[str, float]]:
        from sklearn.metrics import precision_recall_fscore_support

        labels = [a.value for a in ACTIONS]
        p, r, f, s = precision_recall_fscore_support(self.gold, self.predicted, labels=labels, zero_division=0)
        return {
            lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, lab in enumerate(labels)
        }

    def summary(self, agent: str = "agent (learned reflector)") -> dict:
        wer, best_single, ratio, gap = _headline(self.systems, agent)
        per_corpus = {}
        for corpus, systems in self.corpora.items():
            c_wer, c_best, c_ratio, c_gap = _headline(systems, agent)
            per_corpus[corpus] = {
                "words": systems[agent].words,
                "wer": c_wer,
                "best_single": c_best,
                "agent_over_best_single": c_ratio,
                "gap_closed": c_gap,
            }
        return {
            "wer": wer,
            "best_single": best_single,
            "agent_over_best_single": ratio,
            "gap_closed": gap,
            "reduction_intervals": [i.model_dump() for i in self.intervals(wer)],
            "per_speaker": self.per_speaker(wer),
            "per_action": self.f1(),
            "gold_actions": dict(Counter(self.gold)),
            "predicted_actions": dict(Counter(self.predicted)),
            "per_corpus": per_corpus,
            "folds": self.folds,
        }


def _best_single_name(wer: dict[str, float]) -> str:
    return min(("internal (whisper-base)", "external top-1 (whisper-tiny.en)"), key=lambda k: wer[k])


def _headline(systems: dict[str, Tally], agent: str) -> tuple[dict[str, float], float, float, float]:
    """WER per system, the best single system, agent / best single and the gap closed toward the
    oracle router."""
    wer = {k: round(v.wer, 2) for k, v in systems.items()}
    best_single = wer[_best_single_name(wer)]
    oracle = wer["oracle router (3 actions)"]
    gap = (best_single - wer[agent]) / (best_single - oracle) if best_single > oracle else float("nan")
    ratio = wer[agent] / best_single if best_single > 0 else float("nan")  # nan: nothing to improve on
    return wer, best_single, round(ratio, 4), round(gap, 3)


def _reflection_input(rec: PoolRecord) -> ReflectionInput:
    return ReflectionInput(
        audio=virtual_audio(rec.item.id), question=None, internal=rec.internal, externals=rec.externals
    )


def _oracle(reference: str, texts: Sequence[str]) -> str:
    return min(texts, key=lambda t: word_errors(reference, t)[0]) if texts else ""


def cross_validate(
    records: Sequence[PoolRecord],
    recipe: Recipe,
    *,
    prompted: bool,
    mode: str = "map",
    policy: str = "linear",
    feature_names: Sequence[str] | None = None,
    train_filter: Callable[[PoolRecord], bool] = lambda r: True,
    progress: Callable[[str], None] | None = None,
    posterior: str = "scores",
) -> CVReport:
    """LOSO CV over the real speakers; see the module docstring. ``posterior="nbest"``: the pool's
    posterior from the tools' own N-best scores (its weights and alpha fitted in the fold), no stored
    score used."""
    report = CVReport()
    real = [r for r in records if r.item.real]
    speakers = sorted({r.item.group for r in real})
    voting = AlignmentVotingRewriter()
    confidence = ConfidencePolicy()
    for speaker in speakers:
        train = [r for r in records if r.item.group != speaker and train_filter(r)]
        test = [r for r in real if r.item.group == speaker]
        nbest = None
        if posterior == "nbest":
            nbest, sel_info = fit_nbest(train, recipe)
            weights, selection = NBEST_WEIGHTS, NBEST_SELECTION
        else:
            weights, selection, sel_info = rescoring_fit(train, recipe, prompted=prompted, mode=mode)
        ex_train = make_examples(train, weights, prompted=prompted, selection=selection, nbest=nbest)
        ex_test = make_examples(test, weights, prompted=prompted, selection=selection, nbest=nbest)
        if policy == "risk":
            model, info = fit_risk_policy(ex_train)
        else:
            model, info = fit_reflector(
                ex_train, list(feature_names or sorted(ex_train[0].features)), recipe.c_grid, recipe.seed
            )
        probs = model.predict_proba(matrix(ex_test, model.feature_names))
        actions = decide(probs, ex_test)
        report.folds.append({"speaker": speaker, "weights": weights, **sel_info, **info, "n_train": len(train)})
        for ex, action, p in zip(ex_test, actions, probs):
            _score_systems(report, ex, action, p, voting, confidence)
        if progress:
            progress(speaker)
    return report


def _score_systems(
    report: CVReport,
    ex: Example,
    action: Action,
    p: np.ndarray,
    voting: AlignmentVotingRewriter,
    confidence: ConfidencePolicy,
) -> None:
    rec = ex.record
    ref = rec.item.reference
    corpus = rec.item.corpus
    inp = _reflection_input(rec)
    int_top = rec.internal.top.text if rec.internal.top else ""
    ext_top = rec.externals[0].top.text if rec.externals and rec.externals[0].top else ""
    nbest = [h.text for o in [rec.internal, *rec.externals] for h in o.hypotheses]
    int_errors = report.add("internal (whisper-base)", ref, int_top, corpus)
    ext_errors = report.add("external top-1 (whisper-tiny.en)", ref, ext_top, corpus)
    report.add("oracle between top-1s", ref, _oracle(ref, [int_top, ext_top]), corpus)
    report.add("oracle over all N-best candidates", ref, _oracle(ref, nbest), corpus)
    report.add("oracle over the pool (+prompted)", ref, _oracle(ref, [c.text for c in ex.pool.candidates]), corpus)
    rover = voting.rewrite(inp).text
    report.add("rewrite alone: alignment vote (ROVER)", ref, rover, corpus)
    if rec.extra and rec.extra[0].top is not None:
        report.add("rewrite alone: prompted re-decode top-1", ref, rec.extra[0].top.text, corpus)
    report.add("rewrite alone: rescoring (this config)", ref, ex.answers[Action.REWRITE], corpus)
    best = min(ACTIONS, key=lambda a: (ex.errors[a], ACTIONS.index(a)))
    report.add("oracle router (3 actions)", ref, ex.answers[best], corpus)
    # the previous default: confidence baseline + alignment vote
    base_action = confidence.reflect(inp).action
    base_answer = {Action.INTERNAL: int_top, Action.EXTERNAL: ext_top, Action.REWRITE: rover}[base_action]
    report.add("agent (confidence baseline + alignment vote)", ref, base_answer, corpus)
    e = report.add("agent (learned reflector)", ref, ex.answers[action], corpus)
    report.gold.append(ex.label.value)
    report.predicted.append(action.value)
    report.per_utterance.append(
        {
            "id": rec.item.id,
            "speaker": rec.item.group,
            "gold": ex.label.value,
            "action": action.value,
            "probs": [round(float(v), 4) for v in p],
            "errors": {a.value: ex.errors[a] for a in ACTIONS},
            "agent_errors": e,
            "single_errors": {"internal (whisper-base)": int_errors, "external top-1 (whisper-tiny.en)": ext_errors},
        }
    )


def nested_selection(
    records: Sequence[PoolRecord],
    recipe: Recipe,
    configs: dict[str, tuple[bool, str, str, str]],
    outer: dict[str, CVReport],
    *,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """CV of the recipe's *config choice* itself: for each held-out speaker, the config is picked by
    an inner leave-one-speaker-out CV on the other speakers only, and that config's outer-fold answers
    (``outer``, from :func:`cross_validate`) are scored. Picking the config on the full CV table (what
    the recipe ships) is optimistic by selection; this number is not."""
    agent = "agent (learned reflector)"
    real = [r for r in records if r.item.real]
    speakers = sorted({r.item.group for r in real})
    refs = {r.item.id: r.item.reference for r in real}
    corpus_of = {r.item.id: r.item.corpus for r in real}
    tally = Tally()
    per_corpus: dict[str, Tally] = {}
    choices: dict[str, str] = {}
    inner_errors: dict[str, dict[str, int]] = {}
    for speaker in speakers:
        inner = [r for r in records if r.item.group != speaker]
        errs = {
            name: cross_validate(inner, recipe, prompted=p, mode=m, policy=pol, posterior=post).systems[agent].errors
            for name, (p, m, pol, post) in configs.items()
        }
        best = min(configs, key=lambda k: (errs[k], list(configs).index(k)))
        choices[speaker], inner_errors[speaker] = best, errs
        for u in outer[best].per_utterance:
            if u["speaker"] == speaker:
                words = word_errors(refs[u["id"]], "")[1]
                tally.add(u["agent_errors"], words)
                per_corpus.setdefault(corpus_of[u["id"]], Tally()).add(u["agent_errors"], words)
        if progress:
            progress(speaker)
    return {
        "agent_wer": round(tally.wer, 2),
        "per_corpus": {c: round(t.wer, 2) for c, t in per_corpus.items()},
        "choices": choices,
        "inner_errors": inner_errors,
    }
