"""Teacher-forced scores of candidate transcripts under a CTranslate2 Whisper model.

The learned reflector and the rescoring rewrite both ask one question of an acoustic model: *how
likely is this exact text given this audio?* A tool's own N-best score answers it only for its own
candidates; scoring every candidate of every tool under the same model makes them comparable (and
scoring them under two models is a cheap ensemble).

How (CTranslate2 4.x): the candidate's tokens are passed as the decoder prompt after the
``<|startoftranscript|><|en|><|transcribe|><|notimestamps|>`` prefix, with ``return_logits_vocab``;
the returned logits hold one row per forced token plus one for the step after the last token, so a
single batched ``generate`` call gives the log-probability of every token **and of end-of-text**.
End-of-text matters: without it the summed log-probability favours candidates that stop early
(picking by the sum alone measured 13.4 % WER in development). ``max_length`` must be about
``2 * (tokens + 1)``: CTranslate2 4.8 returns ``max_length // 2`` logits rows when a prompt is forced
(measured, not documented), and a smaller value silently scores only part of the candidate (the
code checks the row count).

Tokens come from openai-whisper's tiktoken tokenizer: the ``tokenizer.json`` shipped with the
bundled base weights splits words differently from how the model was trained (``" that"`` becomes
``" " + "that"``), which costs several nats per word.

Only one 30 s window is scored: for longer audio :meth:`WhisperScorer.score` returns ``None`` and
callers fall back to features without cross-model scores. Results are cached per (audio sha256,
text), so the reflector and the rewrite share one scoring pass.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from speech_hands.audio import SAMPLE_RATE, AudioInput

#: Longest audio (seconds) scored: one Whisper window.
MAX_SCORED_S = 30.0
#: Candidates scored per ``generate`` call. The logits of every forced step over the whole vocabulary
#: come back at once (~0.2 MB per token per candidate), so a pool of 15 candidates of 70 tokens took
#: ~0.5 GB per scorer in one call; in batches of 4 the scores are the same to the bit (checked on
#: the dev utterances) and the peak stays small.
SCORE_BATCH = 4


@dataclass(frozen=True)
class CandidateScore:
    """Log-probabilities (natural log) of one candidate text under one model."""

    text: str
    n_tokens: int
    logprob: float  #: summed log-probability of the text tokens
    eot_logprob: float  #: log-probability of end-of-text right after the last token
    min_token_logprob: float  #: the least likely token (0.0 for an empty text)

    @property
    def total(self) -> float:
        """log P(text, end-of-text | audio): the whole-sequence score."""
        return self.logprob + self.eot_logprob

    @property
    def mean(self) -> float:
        """Per-token mean including end-of-text (comparable across lengths)."""
        return self.total / (self.n_tokens + 1)


def _target_logprobs(logits: np.ndarray, targets: Sequence[int]) -> np.ndarray:
    """log-softmax(logits[i])[targets[i]] for each row i, without normalising the whole vocabulary.

    Only the targets' entries are needed, so each row costs one max and one sum of exponentials
    (float32 arithmetic, float64 sums): ~20x cheaper than a full float64 log-softmax of 50k-wide
    rows, and equal to it within 1e-7 nats (checked against the full form in the tests).
    """
    rows = logits[: len(targets)]
    top = rows.max(axis=-1, keepdims=True)
    log_norm = top[:, 0].astype(np.float64) + np.log(np.exp(rows - top).sum(axis=-1, dtype=np.float64))
    return rows[np.arange(len(targets)), np.asarray(targets)].astype(np.float64) - log_norm


class WhisperScorer:
    """Scores texts given audio under one Whisper model (a :class:`FasterWhisperASR` or a model spec).

    Thread-safe; keeps an LRU cache of scores keyed by (audio sha256, text), so scoring the same
    utterance twice (reflect, then rewrite) costs nothing the second time. Encoder states come from
    the model's :class:`~speech_hands.backends.faster_whisper.EncoderCache`: perception has usually
    encoded the window already.
    """

    def __init__(self, asr: Any = "bundled:base", *, cache_items: int = 4096, name: str | None = None) -> None:
        from speech_hands.backends.faster_whisper import FasterWhisperASR

        self.asr = asr if not isinstance(asr, str) else FasterWhisperASR(model=asr)
        self.name = name or f"score:{self.asr.name}"
        self._cache: OrderedDict[tuple[str, str], CandidateScore] = OrderedDict()
        self._cache_items = cache_items
        self._lock = threading.Lock()
        self._tokenizer: Any = None

    def _tok(self) -> Any:
        if self._tokenizer is None:
            from whisper.tokenizer import get_tokenizer

            multilingual = self.asr.is_multilingual
            self._tokenizer = get_tokenizer(
                multilingual=multilingual, language="en" if multilingual else None, task="transcribe"
            )
        return self._tokenizer

    def _encode(self, samples: np.ndarray) -> np.ndarray:
        """Encoder states (1, frames, dim): from the model's shared cache when perception already ran."""
        return self.asr.encode_windows([samples])

    def score(self, audio: AudioInput, texts: Sequence[str]) -> list[CandidateScore] | None:
        """Scores of ``texts`` in order; ``None`` when the audio is missing or longer than 30 s."""
        if audio.samples is None or audio.samples.size == 0:
            return None
        if audio.samples.size > MAX_SCORED_S * SAMPLE_RATE:
            return None
        key = audio.ref.sha256 or audio.ref.id
        with self._lock:
            todo = sorted({t for t in texts if (key, t) not in self._cache})
            for i in range(0, len(todo), SCORE_BATCH):
                batch = todo[i : i + SCORE_BATCH]
                for text, score in zip(batch, self._score_uncached(key, audio.samples, batch)):
                    self._cache[(key, text)] = score
            if todo:
                while len(self._cache) > self._cache_items:
                    self._cache.popitem(last=False)
            out = []
            for t in texts:
                self._cache.move_to_end((key, t))
                out.append(self._cache[(key, t)])
            return out

    def _score_uncached(self, key: str, samples: np.ndarray, texts: list[str]) -> list[CandidateScore]:
        import ctranslate2

        tok = self._tok()
        model = self.asr.load()
        encoded = self._encode(samples)
        prefix = list(tok.sot_sequence_including_notimestamps)
        token_lists = [tok.encode(" " + t.strip()) if t.strip() else [] for t in texts]
        features = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.repeat(encoded, len(texts), axis=0)))
        longest = max(len(ids) for ids in token_lists)
        results = model.model.generate(
            features,
            [prefix + ids for ids in token_lists],
            beam_size=1,
            max_length=min(448, 2 * (longest + 1)),
            return_logits_vocab=True,
            length_penalty=0,
            suppress_blank=False,
            suppress_tokens=[],
        )
        scores = []
        for text, ids, result in zip(texts, token_lists, results):
            logits = np.asarray(result.logits[0])
            n = len(ids)
            if logits.shape[0] < n + 1:  # CTranslate2 forced less than the whole prompt: no reliable score
                raise RuntimeError(f"scoring forced {logits.shape[0]} of {n + 1} steps for {text!r}")
            lp = _target_logprobs(logits, [*ids, tok.eot])
            token_lp = lp[:n]
            scores.append(
                CandidateScore(
                    text=text,
                    n_tokens=n,
                    logprob=float(token_lp.sum()),
                    eot_logprob=float(lp[n]),
                    min_token_logprob=float(token_lp.min()) if n else 0.0,
                )
            )
        return scores
