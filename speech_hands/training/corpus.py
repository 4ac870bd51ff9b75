"""Utterances with known text for training the reflector: real, augmented and synthesized.

Four sources, all with exact references, each item tagged with a ``group`` (the speaker) so that
cross-validation can hold a whole speaker out, augmentations and all:

- ``librispeech``: the real dev utterances (``transcripts.tsv``: utt_id, speaker, audio, text).
- ``manifest``: real utterances of any evaluation manifest with audio, references and speakers: a
  built-in dataset (``fsdd``, ``librispeech-dev``) or your own ``.jsonl``
  (:mod:`speech_hands.datasets.manifest`). Items without a speaker are their own group.
- ``augmented``: a real utterance with ESC-10 environmental noise mixed in at a given SNR and/or a
  speed change (resampling, so pitch moves too). It keeps the source utterance's speaker as group:
  an augmented copy of a held-out speaker never reaches training.
- ``espeak``: sentences read by espeak-ng voices at several rates, optionally with noise. The text
  comes from the LibriSpeech test-other references **minus every utterance of the dev speakers**
  (their chapters overlap the dev sentences). Group ``synth:<voice>``.

Generated audio is written once under the cache directory as 16 kHz WAV and reused.
"""

from __future__ import annotations

import csv
import hashlib
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from speech_hands.audio import SAMPLE_RATE
from speech_hands.errors import ConfigurationError

Origin = Literal["librispeech", "manifest", "augmented", "espeak"]

#: origins of real recorded speech: the held-out items that cross-validation scores
REAL_ORIGINS: frozenset[str] = frozenset({"librispeech", "manifest"})

#: espeak-ng voices (Debian's espeak-ng-data, no mbrola needed) and variants used by the recipe.
ESPEAK_VOICES: tuple[str, ...] = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-029",
    "en-us+f3",
    "en-gb+m3",
    "en-us+klatt4",
)


class TrainingItem(BaseModel):
    """One utterance with its reference text and where it came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    group: str  #: speaker (real and augmented) or ``synth:<voice>``; the unit of cross-validation
    origin: Origin
    audio: str  #: path of the audio file
    reference: str
    source_id: str | None = None  #: the real utterance an augmented copy derives from
    detail: str = ""

    @property
    def corpus(self) -> str:
        """Which real corpus the item belongs to (``librispeech``, or the manifest's name)."""
        return self.detail if self.origin == "manifest" and self.detail else self.origin

    @property
    def real(self) -> bool:
        """Real recorded speech (scored when held out), not an augmented or synthesized copy."""
        return self.origin in REAL_ORIGINS


def librispeech_items(data_dir: Path) -> list[TrainingItem]:
    """The real utterances of a LibriSpeech-style folder with ``transcripts.tsv``."""
    path = data_dir / "transcripts.tsv"
    if not path.exists():
        raise ConfigurationError(f"{path} not found; point --data at a folder with transcripts.tsv")
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [
        TrainingItem(
            id=r["utt_id"],
            group=r["speaker"],
            origin="librispeech",
            audio=str(data_dir / r["audio"]),
            reference=r["text"],
        )
        for r in rows
    ]


def manifest_items(spec: str, shared: Path) -> list[TrainingItem]:
    """The transcribed audio items of a built-in dataset or a manifest ``.jsonl`` (speaker = group).

    Items without audio or reference are skipped: the recipe needs both to decode and to label.
    """
    from speech_hands.datasets.builtin import resolve_manifest

    manifest = resolve_manifest(spec, data_dir=shared)
    items = [
        TrainingItem(
            id=item.id,
            group=item.speaker or item.id,
            origin="manifest",
            audio=str(manifest.audio_path(item)),
            reference=item.reference,
            detail=manifest.name,
        )
        for item in manifest
        if item.audio is not None and item.reference
    ]
    if not items:
        raise ConfigurationError(f"{spec!r} has no items with both audio and a reference transcript to train on")
    return items


def real_items(data: str | Sequence[str], shared: Path) -> list[TrainingItem]:
    """The recipe's real utterances: a folder (under ``shared``) with ``transcripts.tsv``, a built-in
    dataset name or a manifest path; or several of them, concatenated in order."""
    if not isinstance(data, str):
        items = [item for spec in data for item in real_items(spec, shared)]
        seen: set[str] = set()
        for item in items:
            if item.id in seen:
                raise ConfigurationError(f"item id {item.id!r} occurs in more than one of {list(data)}")
            seen.add(item.id)
        return items
    folder = shared / data
    if (folder / "transcripts.tsv").exists():
        return librispeech_items(folder)
    return manifest_items(data, shared)


def _read(path: Path) -> np.ndarray:
    from speech_hands.audio import load_audio

    samples = load_audio(path).samples
    assert samples is not None
    return samples


def _write(path: Path, samples: np.ndarray) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.wav")
    sf.write(str(tmp), np.clip(samples, -1.0, 1.0).astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    tmp.replace(path)


def noise_files(esc10_dir: Path) -> list[Path]:
    files = sorted(esc10_dir.glob("*/*.ogg"))
    if not files:
        raise ConfigurationError(f"no ESC-10 clips (*/*.ogg) under {esc10_dir}")
    return files


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float, rng: random.Random) -> np.ndarray:
    """Add ``noise`` (looped / cut to length at a random offset) to ``speech`` at ``snr_db`` dB."""
    if noise.size == 0 or not np.any(noise):
        return speech
    reps = int(np.ceil(speech.size / noise.size)) + 1
    looped = np.tile(noise, reps)
    start = rng.randrange(0, looped.size - speech.size + 1)
    piece = looped[start : start + speech.size]
    p_speech = float(np.mean(speech**2)) + 1e-12
    p_noise = float(np.mean(piece**2)) + 1e-12
    gain = np.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))
    return (speech + gain * piece).astype(np.float32)


def change_speed(samples: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster (linear-interpolation resampling; pitch changes with it)."""
    if abs(factor - 1.0) < 1e-6:
        return samples
    n_out = round(samples.size / factor)
    positions = np.linspace(0, samples.size - 1, n_out)
    return np.interp(positions, np.arange(samples.size), samples).astype(np.float32)


def augment(
    item: TrainingItem,
    out_dir: Path,
    *,
    noise: Path | None,
    snr_db: float | None,
    speed: float = 1.0,
    seed: int = 0,
) -> TrainingItem:
    """A noisy and/or speed-changed copy of a real item (written once, then reused)."""
    tag = f"{noise.stem if noise else 'clean'}_{snr_db if snr_db is not None else 'inf'}dB_x{speed:g}"
    digest = hashlib.sha1(f"{item.id}|{tag}|{seed}".encode()).hexdigest()[:8]
    path = out_dir / "augmented" / f"{item.id}__{digest}.wav"
    if not path.exists():
        rng = random.Random(f"{item.id}|{tag}|{seed}")
        samples = change_speed(_read(Path(item.audio)), speed)
        if noise is not None and snr_db is not None:
            samples = mix_at_snr(samples, _read(noise), snr_db, rng)
        _write(path, samples)
    return TrainingItem(
        id=f"{item.id}__{digest}",
        group=item.group,
        origin="augmented",
        audio=str(path),
        reference=item.reference,
        source_id=item.id,
        detail=tag,
    )


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def synthesize(text: str, voice: str, rate_wpm: int, path: Path) -> Path:
    """Speak ``text`` with espeak-ng into ``path`` (16 kHz mono WAV); reused if present."""
    if path.exists():
        return path
    if not espeak_available():
        raise ConfigurationError("espeak-ng is not installed (Debian: apt-get install -y espeak-ng)")
    from speech_hands.audio import load_audio

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "out.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(rate_wpm), "-w", str(raw), text],
            check=True,
            capture_output=True,
            timeout=120,
        )
        samples = load_audio(raw).samples  # espeak writes 22.05 kHz; load_audio resamples to 16 kHz
        assert samples is not None
        _write(path, samples)
    return path


def text_sentences(
    ref_tsv: Path, exclude_speakers: Iterable[str], *, min_words: int = 4, max_words: int = 40
) -> list[tuple[str, str]]:
    """(utt_id, text) of a reference TSV (utt_id<TAB>text...), without the excluded speakers."""
    excluded = set(exclude_speakers)
    out = []
    with ref_tsv.open(encoding="utf-8") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2:
                continue
            uid, text = parts[0], parts[1]
            if uid.split("-")[0] in excluded:
                continue
            if min_words <= len(text.split()) <= max_words:
                out.append((uid, text))
    return out


def espeak_items(
    sentences: list[tuple[str, str]],
    out_dir: Path,
    *,
    n: int,
    seed: int,
    noise: list[Path] | None = None,
    snrs: tuple[float, ...] = (),
) -> list[TrainingItem]:
    """``n`` synthesized items: sentence, voice, rate (and noise, when given) drawn with ``seed``."""
    rng = random.Random(seed)
    chosen = rng.sample(sentences, min(n, len(sentences)))
    items = []
    for uid, text in chosen:
        voice = rng.choice(ESPEAK_VOICES)
        rate = rng.choice((130, 150, 170, 190))
        clean = synthesize(text, voice, rate, out_dir / "espeak" / f"{uid}__{voice}__{rate}.wav")
        item = TrainingItem(
            id=f"{uid}__{voice}__{rate}",
            group=f"synth:{voice}",
            origin="espeak",
            audio=str(clean),
            reference=text,
            detail=f"{voice} {rate} wpm",
        )
        if noise and snrs:
            snr = rng.choice(snrs)
            if snr is not None and snr < 100:
                noisy = augment(item, out_dir, noise=rng.choice(noise), snr_db=snr, seed=seed)
                item = noisy.model_copy(update={"origin": "espeak", "group": item.group, "source_id": item.id})
        items.append(item)
    return items
