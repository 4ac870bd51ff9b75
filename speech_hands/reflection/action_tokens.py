"""The first-token decision of a model fine-tuned with the three action tokens, without any ML library.

Every model backend (transformers in-process, an OpenAI-compatible server) ends in the same few steps:
turn the first generated position's scores for ``<internal>`` / ``<external>`` / ``<rewrite>`` into the
three probabilities, draw an action for majority sampling, build the reflection / rewrite prompt from
a :class:`~speech_hands.reflection.base.ReflectionInput`, and read the answer the model wrote after its token.
They live here, once, so every backend reports probabilities the same way; the softmax, the
tie-broken argmax and the seeded draw themselves are :mod:`speech_hands.reflection.decision`'s, shared
with every other policy.

- **Restriction**: ``P(a) = softmax(z)[a]`` over the three action-token logits ``z`` only (the
  constrained first token), which equals the full-vocabulary softmax renormalised over the three.
  The share of the full first-token mass the three held is kept (``action_mass``): far below 1 means
  the model is not (well) fine-tuned with the tokens, and the trace says so.
- **Sampling**: a draw for majority sampling picks from ``softmax(z / temperature)`` with a
  random generator seeded by ``(seed, round, sample_index)``, so a run is reproducible whatever order
  the parallel draws run in.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from speech_hands.errors import ConfigurationError, ModelOutputError
from speech_hands.prompts import asr_reflection_prompt, audioqa_reflection_prompt, split_question
from speech_hands.reflection import decision
from speech_hands.reflection.base import ReflectionInput
from speech_hands.reflection.decision import ACTIONS
from speech_hands.types import ACTION_TOKENS, Action, Reflection, ToolKind, ToolOutput

_LEADING_TOKEN = re.compile(r"^\s*<\s*(internal|external|rewrite)\s*>", re.IGNORECASE)
_ANY_TOKEN = re.compile(r"<\s*(?:internal|external|rewrite)\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class FirstToken:
    """The first generated position as the reflection step sees it.

    ``logits`` are the three action tokens' scores in :data:`ACTIONS` order (log-probabilities or raw
    logits: only differences matter). ``raw_token`` is what the model would have written unconstrained
    (its argmax token); ``action_mass`` the share of the whole first-token distribution the three action
    tokens hold, ``None`` when unknown."""

    logits: tuple[float, float, float]
    raw_token: str
    action_mass: float | None = None
    missing: tuple[Action, ...] = ()

    def probs(self, temperature: float = 1.0) -> dict[Action, float]:
        """``softmax(logits / temperature)`` over the three action tokens (:func:`decision.action_probs`)."""
        return decision.action_probs(self.logits, temperature)


def from_top_logprobs(generated: tuple[str, float] | None, top: Mapping[str, float]) -> FirstToken:
    """A :class:`FirstToken` from an OpenAI-style ``logprobs`` entry (the first generated token and its
    ``top_logprobs``), as servers return them.

    A server only lists the top-k first tokens (vLLM allows up to 20). Action tokens missing from that
    list are known only to be less likely than the least likely listed token; they get probability 0
    after renormalising over the action tokens that were listed, and ``missing`` names them (the
    reflection's rationale reports it). When none of the three is listed the model is not answering
    with action tokens at all: :class:`~speech_hands.errors.ModelOutputError`."""
    found: dict[Action, float] = {}
    listed = dict(top)
    if generated is not None:
        listed.setdefault(generated[0], generated[1])
    for token, logprob in listed.items():
        stripped = token.strip()
        if stripped in ACTION_TOKENS:
            action = Action.from_token(stripped)
            found[action] = max(found.get(action, -math.inf), float(logprob))
    if not found:
        shown = ", ".join(f"{t!r}" for t in list(listed)[:8])
        raise ModelOutputError(
            f"none of the action tokens {ACTION_TOKENS} is among the first generated token's top "
            f"{len(listed)} candidates ({shown}). The served model is not fine-tuned with the action tokens, "
            "or the chat template / prompt differs from its training; serve the Speech-Hands checkpoint, "
            "or raise top_logprobs."
        )
    logits = tuple(found.get(a, -math.inf) for a in ACTIONS)
    mass = sum(math.exp(v) for v in found.values())
    raw = generated[0] if generated is not None else max(listed, key=listed.__getitem__)
    return FirstToken(
        logits=logits,  # type: ignore[arg-type]
        raw_token=raw,
        action_mass=min(mass, 1.0),
        missing=tuple(a for a in ACTIONS if a not in found),
    )


def draw_seed(seed: int | None, round_: int, sample_index: int, salt: str = "") -> int:
    """A 63-bit seed for one draw, stable across processes (no Python ``hash`` randomisation)."""
    digest = hashlib.sha256(f"{seed}|{round_}|{sample_index}|{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def draw_action(first: FirstToken, *, seed: int, temperature: float = 1.0) -> Action:
    """One majority-sampling draw from ``softmax(logits / temperature)`` (the logits are tempered, then
    :func:`decision.draw` picks)."""
    return decision.draw(first.probs(temperature), seed=seed)


def decide(first: FirstToken) -> Action:
    """The decision itself: the most probable action (:func:`decision.decide`; ties: internal > external >
    rewrite)."""
    return decision.decide(first.probs())


def split_action(text: str) -> tuple[Action | None, str]:
    """``"<rewrite> the text"`` -> ``(Action.REWRITE, "the text")``; no leading token -> ``(None, text)``.
    Any further action tokens in the text are removed (a model may repeat its token)."""
    match = _LEADING_TOKEN.match(text)
    action = Action(match.group(1).lower()) if match else None
    rest = text[match.end() :] if match else text
    return action, clean_answer(rest)


def clean_answer(text: str) -> str:
    """Generated text with action tokens and surrounding whitespace / quotes removed."""
    text = _ANY_TOKEN.sub(" ", text).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return " ".join(text.split())


def rationale(first: FirstToken, chosen: Action) -> str:
    """What the trace says about a decision, including any fallback that happened."""
    parts = []
    if first.raw_token.strip() != chosen.token:
        if first.raw_token.strip() in ACTION_TOKENS:
            parts.append(f"drawn {chosen.token}; the model's own first token was {first.raw_token.strip()}")
        else:
            parts.append(
                f"first token constrained to the action tokens; unconstrained the model would have written "
                f"{first.raw_token!r}"
            )
    if first.action_mass is not None:
        parts.append(f"action tokens hold {first.action_mass:.3f} of the first-token probability")
    if first.missing:
        parts.append(
            "not in the server's top_logprobs (probability taken as 0): " + ", ".join(a.token for a in first.missing)
        )
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------- prompts


def external_hypotheses(inp: ReflectionInput) -> list[str]:
    """Every usable external hypothesis, tool by tool, best first, without duplicates."""
    seen: dict[str, None] = {}
    for output in inp.externals:
        if output.ok:
            for h in output.hypotheses:
                seen.setdefault(h.text, None)
    return list(seen)


def _top(output: ToolOutput | None) -> str:
    return output.top.text if output is not None and output.top is not None else ""


def reflection_prompt(inp: ReflectionInput, kind: ToolKind) -> str:
    """The paper-structured reflection prompt for one input (ASR: N-best + own transcript; AudioQA:
    question, options, the external and the own answer)."""
    internal = _top(inp.internal)
    if kind == "asr":
        return asr_reflection_prompt(internal, external_hypotheses(inp))
    if inp.question is None:
        raise ConfigurationError("an AudioQA reflection needs the question; pass question=... to invoke()")
    stem, options = split_question(inp.question)
    external = next((_top(o) for o in inp.externals if o.ok), "")
    return audioqa_reflection_prompt(stem, options, external, internal)


def rewrite_prompt(inp: ReflectionInput, kind: ToolKind) -> str:
    """The prompt the model continues after ``<rewrite>``: the reflection prompt with ALL candidates
    in the hypothesis list (every external N-best, the rest of the own N-best, earlier rewrites), the
    current own answer as the first pass. It is the training format, so a fine-tuned model writes its
    correction after the token exactly as it learned to."""
    internal = _top(inp.internal)
    candidates: dict[str, None] = {}
    for text in external_hypotheses(inp):
        candidates.setdefault(text, None)
    for output in [inp.original_internal]:
        if output is not None and output.ok:
            for h in output.hypotheses:
                candidates.setdefault(h.text, None)
    for h in inp.previous_rewrites:
        candidates.setdefault(h.text, None)
    candidates.pop(internal, None)
    if kind == "asr":
        return asr_reflection_prompt(internal, list(candidates))
    if inp.question is None:
        raise ConfigurationError("an AudioQA rewrite needs the question; pass question=... to invoke()")
    stem, options = split_question(inp.question)
    external = " | ".join(candidates) if candidates else ""
    return audioqa_reflection_prompt(stem, options, external, internal)


def match_external(answer: str | None, inp: ReflectionInput, normalize) -> tuple[str, int] | None:
    """Which external candidate the text written after ``<external>`` names: ``(tool, rank)`` of the
    first hypothesis equal to it after normalisation, else ``None`` (the graph then takes the top-1)."""
    if not answer:
        return None
    key = normalize(answer)
    for output in inp.externals:
        if not output.ok:
            continue
        for rank, h in enumerate(output.hypotheses):
            if normalize(h.text) == key:
                return output.tool, rank
    return None


def build_reflection(
    inp: ReflectionInput,
    first: FirstToken,
    action: Action,
    answer: str | None,
    *,
    policy: str,
    normalize,
    note: str = "",
) -> Reflection:
    """The :class:`Reflection` every action-token backend returns: the three probabilities from the
    first token, the external candidate ``<external>`` names (by the text written after it, else the
    first usable tool's top-1), and a rationale (the first token's evidence plus ``note``)."""
    usable = [o for o in inp.externals if o.ok]
    tool, rank = (usable[0].tool if usable else None), 0
    if action is Action.EXTERNAL and (named := match_external(answer, inp, normalize)) is not None:
        tool, rank = named
    why = "; ".join(p for p in (rationale(first, action), note) if p)
    return Reflection(
        action=action,
        probs=first.probs(),
        raw_token=first.raw_token,
        policy=policy,
        external_tool=tool,
        external_rank=rank,
        answer=answer,
        round=inp.round,
        sample_index=inp.sample_index,
        rationale=why or None,
    )
