"""Cost of the full learned reflector's scoring pass, and the full agent's real-time factor next to base alone.

On the LibriSpeech dev utterances (or ``--limit N`` of them):

1. **decision cost**: the reflector's own work per utterance once the candidates are scored
   (pool features, audio statistics, the linear model), and the classifier alone;
2. **scoring pass**: the prompted re-decode, pooling and scoring every candidate under both Whisper
   models, on encoder states perception already computed (shared by the
   policy and the rewrite; paid once per utterance, before the decision);
3. **real-time factor** (seconds of compute per second of audio): faster-whisper base alone
   (``FasterWhisperASR.transcribe``, 5-best) vs the full agent (``SpeechHands.default(reflector="full")``:
   base and tiny.en in parallel, scoring, learned reflector, routing, SQLite checkpoints; the default
   until the fast artifact). ``benchmarks/cost.py`` compares every configuration, the default included.

WER here is in-sample for the shipped artifact (it was trained on these utterances); the honest
number is the leave-one-speaker-out CV in the artifact / docs/reflector.md.

Run: ``.venv/bin/python benchmarks/reflector.py [--limit N]``; results go to ``benchmarks/RESULTS.md``
between the ``reflector`` markers.
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import tempfile
import time
from collections import Counter
from datetime import date
from pathlib import Path

from _common import load_dev
from rich.console import Console
from rich.progress import track

from speech_hands import SpeechHands
from speech_hands.backends.faster_whisper import FasterWhisperASR
from speech_hands.metrics.wer import corpus_wer
from speech_hands.reflection.base import ReflectionInput
from speech_hands.reflection.learned.features import audio_statistics, pool_risk, reflector_features
from speech_hands.reflection.learned.mbr import pairwise_word_errors

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", type=Path, default=None, help="shared data folder (default: found beside the checkout)"
    )
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    console = Console()

    audios, refs = load_dev(args.data, args.limit)
    audio_s = sum(a.ref.duration_s for a in audios)

    base = FasterWhisperASR(model="bundled:base", name="whisper-base")
    base.transcribe(audios[0], n_best=5)  # load + warm up
    started = time.perf_counter()
    for audio in track(audios, description="faster-whisper base alone", console=console):
        base.transcribe(audio, n_best=5)
    base_s = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        agent = SpeechHands.default(reflector="full", trace_db=str(Path(tmp) / "t.sqlite"))
        agent.invoke(audios[0])  # load + warm up every model
        policy, rewriter = agent.omni.policy, agent.omni.rewriter
        rewriter._cache.clear()
        for scorer in rewriter.scorers.values():
            scorer._cache.clear()
            scorer.asr.encoder_cache.clear()
        started = time.perf_counter()
        results = []
        for audio in track(audios, description="full agent", console=console):
            results.append(agent.invoke(audio))
        agent_s = time.perf_counter() - started

        scoring, decide, classify, risk = [], [], [], []
        for audio, result in track(list(zip(audios, results)), description="decision cost", console=console):
            internal = result.internal
            externals = [o for o in result.externals if o.ok]
            inp = ReflectionInput(audio=audio, question=None, internal=internal, externals=externals)
            rewriter._cache.clear()
            for scorer in rewriter.scorers.values():
                scorer._cache.clear()
                # as in the agent: perception has encoded the window, the scoring pass reuses it
                scorer.asr.encode_windows([audio.samples])
            t0 = time.perf_counter()
            rewriter.analyse(inp)  # pooling + scoring under both models (uncached)
            t1 = time.perf_counter()
            policy.reflect(inp)  # the decision itself, scores cached
            t2 = time.perf_counter()
            analysis = rewriter.analyse(inp)
            feats, _ = reflector_features(
                analysis.pool,
                internal,
                externals,
                audio_statistics(audio.samples),
                rewriter.weights,
                rewriter.selection,
            )
            t3 = time.perf_counter()
            policy.predict_proba(feats)
            t4 = time.perf_counter()
            pairwise_word_errors.cache_clear()
            pool_risk(analysis.pool, analysis.scores, rewriter.selection.alpha)  # MBR: posterior + pairwise jiwer
            t5 = time.perf_counter()
            risk.append(t5 - t4)
            scoring.append(t1 - t0)
            decide.append(t2 - t1)
            classify.append(t4 - t3)
        agent.close()

    wer_base = corpus_wer(refs, [r.internal.top.text if r.internal and r.internal.top else "" for r in results]).wer
    wer_agent = corpus_wer(refs, [r.answer for r in results]).wer
    actions = Counter(r.action.value if r.action else "skipped" for r in results)
    ms = lambda xs: f"{1000 * statistics.mean(xs):.2f} / {1000 * statistics.median(xs):.2f}"  # noqa: E731
    section = f"""<!-- reflector:start -->
## Learned reflector (`benchmarks/reflector.py`)

{date.today().isoformat()}, {platform.machine()}, {__import__("os").cpu_count()} cores, {len(audios)} LibriSpeech test-other
utterances ({audio_s:.1f} s of audio), faster-whisper int8, 5-best, artifact
`speech_hands/data/reflector/reflector-v1.json` (selection: {rewriter.selection.mode}, alpha {rewriter.selection.alpha:g}).

| per utterance (ms, mean / median) | value |
|---|---|
| reflector decision (features + audio statistics + model; candidates already scored) | {ms(decide)} |
| classifier alone (linear softmax over the feature vector) | {ms(classify)} |
| MBR expected risk alone (posterior + pairwise jiwer over the pool, uncached; also inside the scoring pass row) | {ms(risk)} |
| scoring pass (prompted re-decode, pool every candidate, score under base and tiny.en; encoder states reused from perception; shared with the rewrite) | {ms(scoring)} |

| run | wall (s) | real-time factor (s per s of audio) |
|---|---|---|
| faster-whisper base alone (5-best) | {base_s:.2f} | {base_s / audio_s:.4f} |
| full agent (`SpeechHands.default(reflector="full")`, learned reflector + rescoring rewrite) | {agent_s:.2f} | {agent_s / audio_s:.4f} |

Agent / base wall time: {agent_s / base_s:.2f}x. WER (Whisper English normaliser) in this run: base
{100 * wer_base:.2f} %, agent {100 * wer_agent:.2f} % (in-sample: the artifact was trained on these
utterances; see docs/reflector.md for the cross-validated numbers); actions {dict(actions)}.
<!-- reflector:end -->"""
    console.print(section)
    text = args.out.read_text(encoding="utf-8") if args.out.exists() else "# Benchmark results\n"
    pattern = re.compile(r"<!-- reflector:start -->.*?<!-- reflector:end -->", re.S)
    text = pattern.sub(section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
