"""The embedded learned reflector: a small trained model that emits the first-token action.

It plays the part of the paper's fine-tuned omni model's first token on a CPU: from what the model
would see (the audio's statistics, its own N-best, every tool's N-best, each candidate scored under
the internal *and* the external Whisper model) it predicts the probabilities of ``<internal>``,
``<external>`` and ``<rewrite>``. The model is a softmax over three linear scores of standardised
features with one calibration temperature (:mod:`speech_hands.training.fitting` says why); its
artifact is a few KB of versioned JSON shipped in ``speech_hands/data/reflector/``. The softmax, the
tie-broken argmax and the majority-sampling draw are :mod:`speech_hands.reflection.decision`'s, the
rule every policy shares.

The policy shares its candidate pool with the rewrite (:class:`RescoringRewriter.analyse`, cached),
so ``<external>`` names the external candidate the rescoring prefers (``external_tool`` /
``external_rank``) and ``<rewrite>`` leads to exactly the candidate the features described. Actions
that would return the same candidate are one choice (:func:`merge_same_answers`).

Two kinds of artifact run through the same code (the ``model`` field says which): a multinomial
logistic regression over all features, or the Bayes decision over the three answers' expected word
errors (``risk_*`` features, coefficients fixed to -1, one fitted temperature), which is what the
MBR rewrite's posterior recommends. The recipe ships whichever cross-validates better.

After a rewrite (round >= 1) the policy accepts it: the rescoring rewrite is a fixed point (rewriting
again returns the same text), so a second round could only repeat the first decision.

Inputs the artifact cannot score (audio over 30 s given to the policy directly, no audio at all, a
scoring pass that raised) fall back to the confidence baseline: the policy name reads
``learned-reflector(fallback:confidence)``, the rationale says why, and the routing graph adds a note.
The agent routes long audio segment by segment (no segment is over 30 s), so it never needs this.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from speech_hands.errors import ConfigurationError
from speech_hands.reflection.base import ReflectionInput
from speech_hands.reflection.decision import (
    ACTIONS,
    accept_rewrite,
    action_probs,
    certain,
    decide,
    draw,
    tuple_hash_seed,
)
from speech_hands.reflection.learned.features import NBestPosterior, audio_statistics, reflector_features, tools_agree
from speech_hands.reflection.learned.mbr import Selection
from speech_hands.reflection.learned.rescoring import RescoringRewriter
from speech_hands.types import Action, Reflection

FORMAT = "speech-hands-reflector"
FORMAT_VERSION = 1
#: the full recipe's artifact (scoring pass under both Whisper models, prompted re-decode; what
#: ``train-reflector`` writes by default); ``ReflectorArtifact.load()`` without a path reads it
DEFAULT_ARTIFACT = "reflector-v1.json"
#: the default agent's artifact: the posterior from the tools' own N-best scores, no scoring pass
#: (``train-reflector --rewrite nbest-mbr/risk``; docs/reflector.md, "Cost")
FAST_ARTIFACT = "reflector-fast-v1.json"
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "data" / "reflector"
#: names of the shipped artifacts (``reflector="fast"`` / ``"full"``); "fast" is the default agent's
SHIPPED_ARTIFACTS = {"fast": FAST_ARTIFACT, "full": DEFAULT_ARTIFACT}


class ReflectorArtifact(BaseModel):
    """The shipped model: everything needed to rebuild the policy, plus how it was made."""

    model_config = ConfigDict(extra="forbid")

    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    name: str = "learned-reflector"
    model: str = "multinomial-logistic-regression"
    actions: list[str] = Field(default_factory=lambda: [a.value for a in Action])
    features: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[list[float]]
    intercept: list[float]
    temperature: float = 1.0
    #: the pool the features assume: scorer name -> model spec, rescoring weights, prompted re-decode
    scorers: dict[str, str]
    weights: dict[str, float]
    #: how the rewrite picks from the scores: "map" (best score) or "mbr" (least expected word
    #: errors under softmax(alpha * score)); alpha also defines the reflector's risk features
    selection: Literal["map", "mbr"] = "map"
    alpha: float = 1.0
    prompted: bool = True
    #: the pool's posterior from the tools' own N-best scores instead of a scoring pass
    #: (:class:`~speech_hands.reflection.learned.features.NBestPosterior`: {"weights": {tool: w}, "alpha": a});
    #: None: the scorers above score every candidate
    nbest: dict[str, Any] | None = None
    normalizer: str = "english"
    recipe: dict[str, Any] = Field(default_factory=dict)
    recipe_hash: str = ""
    training: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)

    def checksum(self) -> str:
        """Hash of the parameters that decide predictions (not of the metadata)."""
        params: list[Any] = [
            self.features,
            self.mean,
            self.scale,
            self.coef,
            self.intercept,
            self.temperature,
            self.weights,
        ]
        if (self.selection, self.alpha) != ("map", 1.0):  # older (MAP-only) artifacts keep their checksum
            params += [self.selection, self.alpha]
        if self.nbest is not None:  # scored artifacts keep theirs
            params += [self.nbest]
        core = json.dumps(params, sort_keys=True)
        return hashlib.sha256(core.encode()).hexdigest()[:16]

    @classmethod
    def load(cls, path: str | Path | None = None) -> ReflectorArtifact:
        """Load ``path``, or the artifact shipped in the package (no path: the full one,
        :data:`DEFAULT_ARTIFACT`; ``"fast"`` / ``"full"``: the shipped artifact of that name, when no file
        of that name exists)."""
        if path is not None and str(path) in SHIPPED_ARTIFACTS and not Path(path).exists():
            path = SHIPPED_DIR / SHIPPED_ARTIFACTS[str(path)]
        try:
            text = Path(path or SHIPPED_DIR / DEFAULT_ARTIFACT).read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ConfigurationError(
                f"reflector artifact not found ({path or DEFAULT_ARTIFACT}); train one with "
                "`speech-hands train-reflector` (docs/reflector.md)"
            ) from exc
        artifact = cls.model_validate_json(text)
        if artifact.format != FORMAT or artifact.format_version != FORMAT_VERSION:
            raise ConfigurationError(
                f"unsupported reflector artifact {artifact.format} v{artifact.format_version} "
                f"(this version reads {FORMAT} v{FORMAT_VERSION})"
            )
        return artifact

    def selection_rule(self) -> Selection:
        return Selection(self.selection, self.alpha)

    def nbest_posterior(self) -> NBestPosterior | None:
        return NBestPosterior(weights=self.nbest["weights"], alpha=self.nbest["alpha"]) if self.nbest else None

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(self.model_dump_json(indent=1) + "\n", encoding="utf-8")


def merge_same_answers(probs: Sequence[float], answers: Sequence[Hashable]) -> np.ndarray:
    """Actions that would return the same answer are one choice: their probability mass goes to the
    first of them in the paper's tie order (:data:`~speech_hands.reflection.decision.ACTIONS`: internal,
    external, rewrite; ``probs`` and ``answers`` are in that order), the others get 0.

    Why: with the rescoring/MBR rewrite, ``<rewrite>`` often names the very candidate ``<internal>``
    (or ``<external>``) returns; splitting the mass between two names of one answer would let a
    distinct, less likely answer win the argmax. ``answers[i]`` identifies action i's answer (a pool
    index or a normalised text; None: unavailable, never merged)."""
    out = np.array(probs, dtype=np.float64)
    for i in range(len(out)):
        if answers[i] is None:
            continue
        for j in range(i):
            if answers[j] is not None and answers[j] == answers[i]:
                out[j] += out[i]
                out[i] = 0.0
                break
    return out


class LearnedPolicy:
    """:class:`~speech_hands.reflection.base.ReflectionPolicy` backed by a :class:`ReflectorArtifact`."""

    def __init__(
        self,
        artifact: ReflectorArtifact,
        rewriter: RescoringRewriter,
        *,
        temperature: float = 1.0,
        gate: int | None = None,
    ) -> None:
        self.artifact = artifact
        self.rewriter = rewriter
        #: skip the scoring pass (answer internal) when the tools agree (:func:`tools_agree` with this many
        #: distinct candidates at most); None: always score. Only a scoring pass is skipped: an
        #: N-best-posterior artifact has none to skip.
        self.gate = gate
        self.name = artifact.name
        self.sample_temperature = temperature
        self._mean = np.asarray(artifact.mean)
        self._scale = np.asarray(artifact.scale)
        self._coef = np.asarray(artifact.coef)
        self._intercept = np.asarray(artifact.intercept)
        self._fallback: Any = None

    def logits(self, features: dict[str, float]) -> np.ndarray:
        missing = [n for n in self.artifact.features if n not in features]
        if missing:  # train/serve skew: the artifact was trained on features this code no longer makes
            raise ConfigurationError(
                f"reflector artifact expects features {missing} that this version does not compute; "
                "retrain it with `speech-hands train-reflector`"
            )
        x = np.array([features[n] for n in self.artifact.features])
        z = (x - self._mean) / self._scale
        return (self._coef @ z + self._intercept) / self.artifact.temperature

    def predict_proba(self, features: dict[str, float]) -> dict[Action, float]:
        return action_probs(self.logits(features).tolist())

    def _baseline(self, inp: ReflectionInput, sample: bool, why: str) -> Reflection:
        if self._fallback is None:
            from speech_hands.reflection.confidence import ConfidencePolicy

            self._fallback = ConfidencePolicy()
        r = self._fallback.reflect(inp, sample=sample)
        # the policy name says so, and the graph notes it (a fallback is never silent)
        update = {
            "rationale": f"{why}; confidence baseline: {r.rationale}",
            "policy": f"{self.name}(fallback:{r.policy})",
        }
        return r.model_copy(update=update)

    def reflect(self, inp: ReflectionInput, sample: bool = False) -> Reflection:
        if inp.round > 0 and inp.previous_rewrites:
            return accept_rewrite(inp, policy=self.name, rationale="the rescoring rewrite is a fixed point: accepted")
        if self.gate is not None and self.rewriter.scorers:
            original = inp.original_internal or inp.internal
            if tools_agree(original, [o for o in inp.externals if o.ok], self.rewriter._normalize, self.gate):
                return certain(
                    Action.INTERNAL,
                    policy=self.name,
                    answer=original.top.text if original is not None and original.top else None,
                    round=inp.round,
                    sample_index=inp.sample_index,
                    rationale=f"gate: the tools' top-1s agree and their N-best lists hold at most {self.gate} "
                    "distinct candidates; scoring pass skipped",
                )
        analysis = self.rewriter.analyse(inp)
        pool = analysis.pool
        if not pool.scored:
            return self._baseline(inp, sample, analysis.failure or "candidates unscored (no audio, or over 30 s)")
        original = inp.original_internal or inp.internal
        externals = [o for o in inp.externals if o.ok]
        feats, chosen = reflector_features(
            pool,
            original,
            externals,
            audio_statistics(inp.audio.samples),
            self.rewriter.weights,
            self.rewriter.selection,
        )
        probs = self.predict_proba(feats)
        if not (pool.internal_tool and chosen["internal"] is not None):
            probs[Action.INTERNAL] = 0.0
        if chosen["external"] is None:
            probs[Action.EXTERNAL] = 0.0
        merged = merge_same_answers([probs[a] for a in ACTIONS], [chosen[a.value] for a in ACTIONS])
        total = float(merged.sum())
        probs = {a: float(p) / total for a, p in zip(ACTIONS, merged)}
        if sample:
            seed = tuple_hash_seed(inp.seed, inp.round, inp.sample_index)
            action = draw(probs, seed=seed, temperature=self.sample_temperature)
        else:
            action = decide(probs)
        external_tool, external_rank = None, 0
        if chosen["external"] is not None:
            cand = pool.candidates[chosen["external"]]
            ranked = sorted((r, t) for t, r in cand.ranks.items() if t in pool.external_tools)
            if ranked:
                external_rank, external_tool = ranked[0]
        index = chosen[action.value]
        answer = pool.candidates[index].surfaces[0] if index is not None else None
        if action is Action.EXTERNAL and external_tool is not None:
            output = next(o for o in externals if o.tool == external_tool)
            answer = output.hypotheses[external_rank].text
        rationale = (
            f"P={', '.join(f'{a.value}:{p:.2f}' for a, p in probs.items())}; "
            f"{len(pool.candidates)} pooled candidates; rewrite ({self.rewriter.selection.mode}) would change "
            f"{feats['dist_int_rew']:.0%} of the internal words (score margin {feats['margin_rew_int']:+.2f}/word); "
            f"expected errors per word: internal {feats['risk_internal']:.2f}, external {feats['risk_external']:.2f}, "
            f"rewrite {feats['risk_rewrite']:.2f}"
        )
        return Reflection(
            action=action,
            probs=probs,
            raw_token=action.token,
            policy=self.name,
            external_tool=external_tool,
            external_rank=external_rank,
            answer=answer,
            round=inp.round,
            sample_index=inp.sample_index,
            rationale=rationale,
        )


def build_learned(
    internal: Any,
    externals: list[Any],
    *,
    artifact: ReflectorArtifact | str | Path | None = None,
    gate: int | None = None,
) -> tuple[LearnedPolicy, RescoringRewriter]:
    """The learned policy and its rescoring rewrite over the given Whisper backends.

    Scorers are matched to the artifact by backend name (``whisper-base``, ``whisper-tiny.en``); a
    backend the artifact does not know is pooled but not used as a scorer. An N-best-posterior
    artifact (``nbest``) runs no scorer and no re-decode; it needs the tools its weights name. ``gate``:
    :attr:`LearnedPolicy.gate` (skip the scoring pass when the tools agree)."""
    from speech_hands.reflection.learned.rescoring import PromptedCandidates
    from speech_hands.reflection.learned.scoring import WhisperScorer

    art = artifact if isinstance(artifact, ReflectorArtifact) else ReflectorArtifact.load(artifact)
    nbest = art.nbest_posterior()
    if nbest is not None:
        tools = [getattr(b, "name", None) for b in [internal, *externals]]
        missing = [n for n, w in nbest.weights.items() if w > 0 and n not in tools]
        if missing:
            raise ConfigurationError(
                f"the reflector artifact's N-best posterior weighs {sorted(nbest.weights)} but the pool lacks "
                f"{missing}; use the models it was trained with, or retrain with `speech-hands train-reflector`"
            )
        rewriter = RescoringRewriter([], weights=art.weights, selection=art.selection_rule(), nbest=nbest)
        return LearnedPolicy(art, rewriter), rewriter
    backends = {b.name: b for b in [internal, *externals] if hasattr(b, "load")}
    missing = [n for n in art.scorers if n not in backends]
    if missing:
        raise ConfigurationError(
            f"the reflector artifact scores with {sorted(art.scorers)} but the pool lacks {missing}; "
            "use the models it was trained with, or retrain with `speech-hands train-reflector`"
        )
    scorers = [WhisperScorer(backends[n]) for n in art.scorers]
    generators = [PromptedCandidates(internal)] if art.prompted else []
    rewriter = RescoringRewriter(scorers, weights=art.weights, selection=art.selection_rule(), generators=generators)
    if not math.isclose(sum(1 for _ in art.actions), 3):
        raise ConfigurationError("reflector artifact must have three actions")
    return LearnedPolicy(art, rewriter, gate=gate), rewriter
