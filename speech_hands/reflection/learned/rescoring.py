"""Rewrite strategies that use the acoustic models again, not only the candidates' text.

The ``<rewrite>`` edge re-derives the transcript from the audio plus ALL candidates. Besides the
text-only alignment vote (:mod:`speech_hands.reflection.rewrite`), two strategies that go back to
the audio:

- :class:`RescoringRewriter` pools every candidate of every source, scores each one under every
  scorer model (by default the internal Whisper base *and* the external tiny.en: a two-model
  ensemble), and scores each with a learned linear function of its features
  (:func:`~speech_hands.reflection.learned.features.candidate_features`: each model's total and per-token
  log-probability, word count, source support, ranks). The word-count weight is the classic word
  insertion bonus: even with the end-of-text probability the raw sum prefers dropping words.
  Weights are fitted by the training recipe on the training folds and shipped in the reflector
  artifact. Two ways to pick from the scores (``selection``): ``map`` returns the best-scored
  candidate (weights: a pairwise logistic ranker); ``mbr`` (minimum Bayes risk,
  :mod:`~speech_hands.reflection.learned.mbr`) turns the scores into a posterior ``softmax(alpha * score)``
  and returns the candidate with the fewest expected word errors against all the others, i.e. the
  consensus of the likely candidates (weights: base + w_t * tiny.en + w_n * words, grid-searched
  with alpha). Over the pool with prompted candidates MBR beat MAP in leave-one-speaker-out CV
  (rewrite alone 9.42 vs 10.89 % WER, docs/reflector.md).
- :class:`PromptedCandidates` re-decodes the audio with the internal model *conditioned on the
  candidates* (the tools' top-1 texts as Whisper's previous-text prompt) and adds its N-best to the
  pool. On its own, prompted decoding copies the prompt's mistakes (measured worse than either
  top-1 on the dev set); as extra candidates for the rescoring it helps. ``RescoringRewriter(...,
  generators=[PromptedCandidates(...)])`` is that combination.

The learned reflector reads the same pool and the same pick (``RescoringRewriter.analyse``), so the
policy's notion of "what a rewrite would give" is exactly what the rewrite node produces.

``RescoringRewriter(scorers=[], nbest=NBestPosterior(...))`` (the fast default) skips the scoring
pass altogether: the pool's posterior comes from the tools' own N-best scores
(:class:`~speech_hands.reflection.learned.features.NBestPosterior`), and the MBR pick is made over it.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from speech_hands.audio import AudioInput
from speech_hands.errors import ToolFailure
from speech_hands.reflection.base import ReflectionInput
from speech_hands.reflection.learned.features import (
    NBEST_SCORER,
    CandidatePool,
    NBestPosterior,
    pick,
    pool_from_outputs,
    pool_risk,
    rescore,
)
from speech_hands.reflection.learned.mbr import Selection
from speech_hands.reflection.learned.scoring import CandidateScore, WhisperScorer
from speech_hands.text import NormalizerName, get_normalizer
from speech_hands.types import Hypothesis, ToolOutput

log = logging.getLogger(__name__)

#: Weights used when no trained artifact provides them (a hand-checked simple form: base, half of
#: tiny.en, one nat per word; the artifact's fitted weights take precedence).
DEFAULT_WEIGHTS: dict[str, float] = {"whisper-base": 1.0, "whisper-tiny.en": 0.5, "words": 1.0}


class PromptedCandidates:
    """Re-decode with a Whisper model, the candidates' top-1 texts as the previous-text prompt."""

    def __init__(self, asr: object, *, n_best: int = 5, name: str = "prompted", prompt_tokens: int = 200) -> None:
        self.asr = asr
        self.n_best = n_best
        self.name = name
        self.prompt_tokens = prompt_tokens
        self._tokenizer = None

    def _tok(self):
        if self._tokenizer is None:
            from whisper.tokenizer import get_tokenizer

            multilingual = self.asr.is_multilingual  # type: ignore[attr-defined]
            self._tokenizer = get_tokenizer(
                multilingual=multilingual, language="en" if multilingual else None, task="transcribe"
            )
        return self._tokenizer

    def generate(self, audio: AudioInput, outputs: Sequence[ToolOutput]) -> ToolOutput | None:
        """The prompted N-best as one more (pseudo) source, or None (no audio, or over 30 s)."""
        import ctranslate2

        samples = audio.samples
        if samples is None or samples.size == 0 or samples.size > 30 * 16_000:
            return None
        # external top-1s first: the prompt's tail weighs most, and the internal view is already in
        # the encoder; the internal top-1 is left out so the re-decode is not pulled back to it
        tops = [o.top.text for o in outputs if o.role == "external" and o.top is not None]
        if not tops:
            return None
        tok = self._tok()
        model = self.asr.load()  # type: ignore[attr-defined]
        # perception encoded this window already: reuse its states (shared per loaded model)
        encoded = ctranslate2.StorageView.from_array(self.asr.encode_windows([samples]))  # type: ignore[attr-defined]
        context = tok.encode(" " + " ".join(t.strip() for t in tops))[-self.prompt_tokens :]
        prompt = [tok.sot_prev, *context, *tok.sot_sequence_including_notimestamps]
        result = model.model.generate(
            encoded,
            [prompt],
            beam_size=max(5, self.n_best),
            num_hypotheses=self.n_best,
            return_scores=True,
            length_penalty=1,
            max_length=448,
            suppress_blank=True,
            suppress_tokens=[-1],
        )[0]
        hyps, seen = [], set()
        for ids, score in zip(result.sequences_ids, result.scores):
            text = tok.decode(ids).strip()
            if text and text not in seen:
                seen.add(text)
                hyps.append(Hypothesis(text=text, score=float(score), source=self.name, rank=len(hyps)))
        return ToolOutput(tool=self.name, role="external", hypotheses=hyps) if hyps else None


@dataclass(frozen=True)
class Analysis:
    """The pool of one input and the rescoring's view of it."""

    pool: CandidatePool
    scores: list[float]
    best: int | None  #: index of the selected candidate (None: empty or unscored pool)
    extra_sources: tuple[str, ...] = ()
    posterior: np.ndarray | None = None  #: softmax(alpha * scores) over the pool (sums to 1)
    risk: np.ndarray | None = None  #: expected word errors of each candidate under the posterior
    failure: str | None = None  #: why the pool is unscored when the scoring pass raised (else None)


class RescoringRewriter:
    """Rewrite = the best candidate of the pooled N-best lists under a weighted multi-model score."""

    name = "rescore"

    def __init__(
        self,
        scorers: Sequence[WhisperScorer],
        *,
        weights: Mapping[str, float] | None = None,
        selection: Selection | None = None,
        generators: Sequence[PromptedCandidates] = (),
        normalizer: NormalizerName = "english",
        cache_items: int = 64,
        nbest: NBestPosterior | None = None,
    ) -> None:
        self.scorers = {s.asr.name: s for s in scorers}
        self.nbest = nbest  #: the posterior from the tools' own N-best scores (then no scorer runs)
        if nbest is not None and not self.scorers:  # score = log p(h), and softmax(1 * score) = p
            weights, selection = weights or {NBEST_SCORER: 1.0}, selection or Selection("mbr", 1.0)
        self.weights = dict(weights or DEFAULT_WEIGHTS)
        self.selection = selection or Selection()
        self.generators = list(generators)
        base = "rescore" if self.selection.mode == "map" else "mbr"
        if nbest is not None and not self.scorers:
            base += "-nbest"
        self.name = "+".join([base, *(g.name for g in self.generators)])
        self._normalize = get_normalizer(normalizer)
        self._normalize("warm up")
        self._cache: OrderedDict[tuple, Analysis] = OrderedDict()
        self._cache_items = cache_items
        self._lock = threading.Lock()

    def _score_fn(self, audio: AudioInput):
        def score(name: str, texts: Sequence[str]) -> Sequence[CandidateScore] | None:
            return self.scorers[name].score(audio, texts)

        return score

    def analyse(self, inp: ReflectionInput) -> Analysis:
        """Pool, scores and pick for this input (cached: the policy and the rewrite node share it)."""
        original = inp.original_internal or inp.internal
        externals = [o for o in inp.externals if o.ok]
        key = (
            inp.audio.ref.sha256 or inp.audio.ref.id,
            tuple((o.tool, tuple(h.text for h in o.hypotheses)) for o in [original, *externals] if o is not None),
        )
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        failure = None
        try:
            extra = []
            for generator in self.generators:
                out = generator.generate(inp.audio, [o for o in [original, *externals] if o is not None and o.ok])
                if out is not None:
                    extra.append(out)
            pool = pool_from_outputs(
                original,
                externals,
                self._normalize,
                self._score_fn(inp.audio),
                list(self.scorers),
                extra=extra,
                nbest=self.nbest,
            )
        except Exception as exc:  # a failing scoring model costs the learned decision, never the utterance
            failure = f"scoring pass failed ({type(exc).__name__}: {exc})"
            log.warning("%s; the policy and the rewrite fall back to their unscored forms", failure)
            extra = []
            pool = pool_from_outputs(original, externals, self._normalize)
        extra_names = tuple(o.tool for o in extra)
        scores = rescore(pool, self.weights)
        p, risk = pool_risk(pool, scores, self.selection.alpha)
        best = pick(pool, scores, risk, self.selection) if scores and pool.scored else None
        analysis = Analysis(
            pool=pool, scores=scores, best=best, extra_sources=extra_names, posterior=p, risk=risk, failure=failure
        )
        with self._lock:
            self._cache[key] = analysis
            while len(self._cache) > self._cache_items:
                self._cache.popitem(last=False)
        return analysis

    def rewrite(self, inp: ReflectionInput) -> Hypothesis:
        analysis = self.analyse(inp)
        if not analysis.pool.candidates:
            raise ToolFailure("rewrite: no candidate to rewrite from (every tool failed or returned nothing)")
        if analysis.best is None:  # unscored (no audio, over 30 s, scoring failed): the alignment vote
            from speech_hands.reflection.rewrite import AlignmentVotingRewriter

            fallback = AlignmentVotingRewriter().rewrite(inp)
            return fallback.model_copy(update={"source": f"rewrite:{self.name}(fallback:alignment-vote)"})
        cand = analysis.pool.candidates[analysis.best]
        first = analysis.pool.scorers[0]
        # a per-token log-probability under the first scorer; the N-best posterior has none (log p(h) is no
        # per-token score)
        mean = cand.totals[first] / (cand.n_tokens[first] + 1) if first != NBEST_SCORER else math.nan
        return Hypothesis(
            text=cand.surfaces[0], score=mean if math.isfinite(mean) else None, source=f"rewrite:{self.name}"
        )


class PromptedRedecodeRewriter:
    """Rewrite = the internal model's top-1 when re-decoding conditioned on the tools' candidates."""

    name = "prompted-redecode"

    def __init__(self, generator: PromptedCandidates) -> None:
        self.generator = generator

    def rewrite(self, inp: ReflectionInput) -> Hypothesis:
        outputs = [o for o in inp.all_candidates()]
        out = self.generator.generate(inp.audio, outputs)
        if out is None or out.top is None:
            from speech_hands.reflection.rewrite import AlignmentVotingRewriter

            fallback = AlignmentVotingRewriter().rewrite(inp)
            return fallback.model_copy(update={"source": f"rewrite:{self.name}(fallback:alignment-vote)"})
        return out.top.model_copy(update={"source": f"rewrite:{self.name}"})
