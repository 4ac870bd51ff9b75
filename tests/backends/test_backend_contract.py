"""The backend contract: every ASR and caption backend keeps the promises of ``backends/base.py`` and
``types.Hypothesis``, and runs as an external tool of a SpeechHands agent.

One suite parametrized over the backends (as LangGraph's checkpoint-conformance suite is over its
savers): a new backend gets every check by adding one case below. What is particular to one backend
(accuracy of the real weights, beam internals, the HTTP wire format, batching) stays in its own module.

An ASR backend promises:

- ``transcribe(audio, n_best)`` returns at most ``n_best`` hypotheses, best first: ranks 0..n-1,
  non-empty texts, ``source`` = the backend's name, duplicates merged (for backends that decode);
- scores are mean log-probabilities per token: finite, <= 0 and, where the list is ordered by them,
  non-increasing; ``None`` only where the backend documents it (a server that reports no
  ``avg_logprob``, recorded outputs without scores), after the scored ones;
- a checkpoint that is not there is a :class:`ConfigurationError` whose message names the fix;
- audio longer than one 30 s window gives a non-empty transcript;
- as an external tool of an agent its N-best is what ``result.candidates`` holds for it, and the
  external edge answers with its top hypothesis.

A caption backend promises the same for ``caption(audio, question)`` (1-best or a few answers).

Backends needing the heavy extras (NeMo, transformers) carry the ``extras`` marker: deselected by
``make test``, run by ``make test-extras``. Their tiny random models give random text: the checks are
about structure, never wording.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import soundfile as sf
from doubles import CountingRewriter, FixedASR, FixedCaption, ScriptedPolicy
from helpers import dev_flac
from loopback import parse_multipart, serve
from tiny_models import build_audio_flamingo3, build_tiny_tdt, build_tiny_whisper

from speech_hands import Action, AgentConfig, SpeechHands
from speech_hands.audio import AudioInput, audio_from_array, load_audio
from speech_hands.backends.composed import ComposedOmni
from speech_hands.backends.faster_whisper import FasterWhisperASR
from speech_hands.backends.openai_server import OpenAIServerASR
from speech_hands.backends.openai_whisper import OpenAIWhisperASR
from speech_hands.backends.replay import ReplayASR, ReplayCaption, ReplayRecord, ReplayStore
from speech_hands.errors import ConfigurationError
from speech_hands.types import Hypothesis

UTT = "1688-142285-0007"
LONG = ("2609-156975-0007", "3331-159605-0008")  # 19.9 s + 21.5 s of real speech
LONG_ID = "long-" + "+".join(LONG)
QUESTION = "What is heard in the recording?\nA. A man reading aloud\nB. A dog barking\nC. Rain on a roof"
N_BEST = 3


@dataclass
class Env:
    """What a case needs to build its backend: temporary directories, the shared data, and a stack
    for what must stay up while the backend is used (a loopback server, an environment variable)."""

    tmp: pytest.TempPathFactory
    shared_data: Path
    stack: ExitStack

    def setenv(self, name: str, value: str) -> None:
        old = os.environ.get(name)
        os.environ[name] = value
        self.stack.callback(lambda: os.environ.pop(name) if old is None else os.environ.__setitem__(name, old))


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Env], Any]
    #: "logprob": every score is a mean log-probability; "logprob-or-none": ``None`` is documented too
    scores: Literal["logprob", "logprob-or-none"]
    #: whether the list is ordered by score (openai-whisper orders by whisper's own length-normalised
    #: ranker, replay keeps the recorded order: their scores need not be monotone)
    ordered_by_score: bool = True
    #: whether the backend merges duplicate texts (every decoding backend does; replay returns records)
    merges_duplicates: bool = True
    #: build the backend from a checkpoint that is not there and use it (None: no checkpoint, a server)
    missing: Callable[[Path], Any] | None = None
    #: what the ConfigurationError's message must name (a regex)
    fix: str = ""
    extras: bool = False


def param(case: Case) -> Any:
    return pytest.param(case, id=case.id, marks=[pytest.mark.extras] if case.extras else [])


# ---------------------------------------------------------------------------------------- the cases


def _faster_whisper(env: Env) -> FasterWhisperASR:
    return FasterWhisperASR(model="bundled:tiny.en", cpu_threads=2)


def _openai_whisper(env: Env) -> OpenAIWhisperASR:
    checkpoint = build_tiny_whisper(env.tmp.mktemp("whisper") / "tiny-random.pt")
    return OpenAIWhisperASR(str(checkpoint), device="cpu", max_tokens=8, beam_size=5)


def _served_whisper(env: Env) -> OpenAIServerASR:
    """An OpenAI-style /v1/audio/transcriptions loopback server wrapping real Whisper tiny.en."""
    local = FasterWhisperASR(model="bundled:tiny.en", cpu_threads=2)

    def handle(handler, body):
        form = parse_multipart(handler.headers["Content-Type"], body)
        samples, rate = sf.read(io.BytesIO(form["file"]), dtype="float32")
        best = local.transcribe(audio_from_array(samples, rate, utterance_id="upload"), n_best=1)
        text = best[0].text if best else ""
        return 200, {"text": text, "segments": [{"avg_logprob": best[0].score}] if best else []}

    url = env.stack.enter_context(serve(handle))
    return OpenAIServerASR("whisper-tiny.en", base_url=url, name="served-whisper")


def _replay_store(env: Env) -> ReplayStore:
    """Recorded outputs for the utterances the suite uses: the references and two variants each, the
    last unscored (recorded outputs may carry no score)."""
    import csv

    with (env.shared_data / "librispeech_other_dev" / "transcripts.tsv").open(newline="") as fh:
        refs = {row["utt_id"]: row["text"].lower() for row in csv.DictReader(fh, delimiter="\t")}

    def nbest(text: str) -> list[dict]:
        words = text.split()
        return [
            {"text": text, "score": -0.1},
            {"text": " ".join(words[:-1]), "score": -0.4},
            {"text": " ".join(words[1:])},
        ]

    texts = {UTT: refs[UTT], LONG_ID: " ".join(refs[u] for u in LONG)}
    return ReplayStore(
        ReplayRecord(id=uid, question=QUESTION, external={"asr": nbest(t), "qa": nbest(t)}) for uid, t in texts.items()
    )


def _replay_asr(env: Env) -> ReplayASR:
    return ReplayASR(_replay_store(env), "asr", name="replay-asr")


def _missing_replay(tool: str) -> Callable[[Path], Any]:
    return lambda tmp: ReplayASR(ReplayStore.from_jsonl(tmp / "absent.jsonl"), tool)


def _nemo(env: Env) -> Any:
    from speech_hands.backends.nemo import NemoASR

    env.setenv("HOME", str(env.tmp.mktemp("nemo-home")))  # NeMo's import writes ~/.lhotse
    nemo_file = build_tiny_tdt(env.tmp.mktemp("nemo"), env.shared_data)
    return NemoASR(str(nemo_file), device="cpu", beam_size=4)


def _missing_nemo(tmp: Path) -> Any:
    from speech_hands.backends.nemo import NemoASR

    return NemoASR(str(tmp / "absent.nemo"), device="cpu").load()


def _replay_caption(env: Env) -> ReplayCaption:
    return ReplayCaption(_replay_store(env), "qa", name="replay-qa")


def _audio_flamingo(env: Env) -> Any:
    from speech_hands.backends.audio_flamingo import AudioFlamingo3

    directory = build_audio_flamingo3(env.tmp.mktemp("af3"), env.shared_data)
    return AudioFlamingo3(str(directory), device="cpu", max_new_tokens=5, num_samples=3, seed=1)


def _missing_audio_flamingo(tmp: Path) -> Any:
    from speech_hands.backends.audio_flamingo import AudioFlamingo3

    return AudioFlamingo3(str(tmp), device="cpu").load()  # a directory without the checkpoint


ASR_CASES = [
    Case(
        "faster-whisper",
        _faster_whisper,
        scores="logprob",
        missing=lambda tmp: FasterWhisperASR(model=str(tmp / "absent-model")).load(),
        fix=r"bundled:tiny\.en|ct2-transformers-converter",
    ),
    Case(
        "openai-whisper",
        _openai_whisper,
        scores="logprob",
        ordered_by_score=False,
        missing=lambda tmp: OpenAIWhisperASR(str(tmp / "absent.pt"), device="cpu").load(),
        fix="official name",
    ),
    # the API gives one transcript; its score is the segments' mean avg_logprob when reported
    Case("openai-transcription-server", _served_whisper, scores="logprob-or-none"),
    Case(
        "replay",
        _replay_asr,
        scores="logprob-or-none",
        ordered_by_score=False,
        merges_duplicates=False,
        missing=_missing_replay("asr"),
        fix="JSONL file of replay records",
    ),
    Case("nemo-tdt", _nemo, scores="logprob", missing=_missing_nemo, fix=r"local \.nemo file", extras=True),
]

CAPTION_CASES = [
    Case(
        "replay",
        _replay_caption,
        scores="logprob-or-none",
        ordered_by_score=False,
        merges_duplicates=False,
        missing=_missing_replay("qa"),
        fix="JSONL file of replay records",
    ),
    Case(
        "audio-flamingo-3",
        _audio_flamingo,
        scores="logprob-or-none",
        missing=_missing_audio_flamingo,
        fix="audio-flamingo-3-hf",
        extras=True,
    ),
]

MISSING_CASES = [c for c in ASR_CASES + CAPTION_CASES if c.missing is not None]


# ------------------------------------------------------------------------------------------ fixtures


def _built(case: Case, tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Iterator[Any]:
    with ExitStack() as stack:
        yield case.build(Env(tmp_path_factory, shared_data, stack))


@pytest.fixture(scope="module", params=[param(c) for c in ASR_CASES])
def asr_case(request) -> Case:
    return request.param


@pytest.fixture(scope="module")
def asr(asr_case, tmp_path_factory, shared_data) -> Iterator[Any]:
    yield from _built(asr_case, tmp_path_factory, shared_data)


@pytest.fixture(scope="module", params=[param(c) for c in CAPTION_CASES])
def caption_case(request) -> Case:
    return request.param


@pytest.fixture(scope="module")
def captioner(caption_case, tmp_path_factory, shared_data) -> Iterator[Any]:
    yield from _built(caption_case, tmp_path_factory, shared_data)


@pytest.fixture(scope="module")
def utterance() -> AudioInput:
    return load_audio(dev_flac(UTT))


@pytest.fixture(scope="module")
def long_audio() -> AudioInput:
    samples = np.concatenate([load_audio(dev_flac(u)).samples for u in LONG])
    audio = audio_from_array(samples, 16_000, utterance_id=LONG_ID)
    assert audio.ref.duration_s > 30
    return audio


def check_list(hyps: list[Hypothesis], backend: Any, case: Case, *, at_most: int | None = None) -> None:
    """The N-best promises of ``backends/base.py`` and ``types.Hypothesis``."""
    assert hyps, f"{backend.name} returned nothing for real speech"
    if at_most is not None:
        assert len(hyps) <= at_most
    assert [h.rank for h in hyps] == list(range(len(hyps))), "ranks 0..n-1, best first"
    assert all(h.source == backend.name for h in hyps)
    assert all(h.text.strip() for h in hyps), "empty candidates are dropped"
    if case.merges_duplicates:
        assert len({h.text for h in hyps}) == len(hyps), "duplicate texts are merged"
    scores = [h.score for h in hyps]
    if case.scores == "logprob":
        assert None not in scores
    assert all(s is None or (math.isfinite(s) and s <= 0) for s in scores), f"mean log-probabilities: {scores}"
    if case.ordered_by_score:
        known = [s for s in scores if s is not None]
        assert scores[: len(known)] == known, "unscored hypotheses come last"
        assert known == sorted(known, reverse=True), f"best first by score: {scores}"


# ----------------------------------------------------------------------------------------- ASR suite


def test_nbest_is_ordered_best_first_and_bounded(asr_case, asr, utterance):
    for n_best in (1, N_BEST):
        hyps = asr.transcribe(utterance, n_best=n_best)
        check_list(hyps, asr, asr_case, at_most=n_best)


@pytest.mark.parametrize("case", [param(c) for c in MISSING_CASES])
def test_missing_checkpoint_is_a_configuration_error_naming_the_fix(case, tmp_path):
    with pytest.raises(ConfigurationError, match=case.fix):
        case.missing(tmp_path)


def test_long_audio_gives_a_transcript(asr_case, asr, long_audio):
    hyps = asr.transcribe(long_audio, n_best=N_BEST)
    check_list(hyps, asr, asr_case, at_most=N_BEST)


def test_runs_as_an_external_tool_of_the_agent(asr, utterance, tmp_path):
    policy = ScriptedPolicy([Action.EXTERNAL])
    omni = ComposedOmni(FixedASR("internal-asr", ["an internal guess"]), policy, CountingRewriter())
    config = AgentConfig(trace_db=str(tmp_path / "traces.sqlite"), n_best=N_BEST)
    with SpeechHands(omni, [asr], config=config) as agent:
        result = agent.invoke(dev_flac(UTT))
    external = next(c for c in result.candidates if c.tool == asr.name)
    assert external.ok and external.role == "external" and external.kind == "asr"
    direct = asr.transcribe(utterance, n_best=N_BEST)
    assert [h.text for h in external.hypotheses] == [h.text for h in direct]
    assert policy.calls[0].externals[0].tool == asr.name  # the reflection saw it
    assert result.action is Action.EXTERNAL and result.answer == direct[0].text


# ------------------------------------------------------------------------------------- caption suite


def test_caption_answers_are_ordered_best_first(caption_case, captioner, utterance):
    check_list(captioner.caption(utterance, QUESTION), captioner, caption_case)
    check_list(captioner.caption(utterance), captioner, caption_case)  # a caption when there is no question


def test_caption_of_long_audio(caption_case, captioner, long_audio):
    check_list(captioner.caption(long_audio, QUESTION), captioner, caption_case)


def test_caption_backend_runs_as_an_external_tool_of_a_qa_agent(captioner, utterance, tmp_path):
    policy = ScriptedPolicy([Action.EXTERNAL])
    omni = ComposedOmni(FixedCaption("internal-qa", ["B. A dog barking"]), policy, CountingRewriter())
    with SpeechHands(omni, [captioner], config=AgentConfig(trace_db=str(tmp_path / "traces.sqlite"))) as agent:
        result = agent.invoke(dev_flac(UTT), QUESTION)
    external = next(c for c in result.candidates if c.tool == captioner.name)
    assert external.ok and external.role == "external" and external.kind == "caption"
    direct = captioner.caption(utterance, QUESTION)
    assert [h.text for h in external.hypotheses] == [h.text for h in direct]
    assert result.action is Action.EXTERNAL and result.answer == direct[0].text
