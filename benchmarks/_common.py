"""What the benchmark scripts share: the dev utterances, loaded once, outside every timed loop."""

from __future__ import annotations

from pathlib import Path

from speech_hands.audio import AudioInput, load_audio
from speech_hands.datasets.builtin import librispeech_dev


def load_dev(data: Path | None, limit: int | None) -> tuple[list[AudioInput], list[str]]:
    """The LibriSpeech dev utterances (decoded audio, references); ``data`` is the shared data folder
    (default: found beside the checkout or via ``$SPEECH_HANDS_SHARED_DATA``)."""
    manifest = librispeech_dev(data).select(limit=limit)
    audios = [load_audio(manifest.audio_path(item), utterance_id=item.id) for item in manifest]
    return audios, [item.reference or "" for item in manifest]
