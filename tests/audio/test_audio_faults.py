"""Faults a new user hit with the audio itself: samples that are not numbers."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from helpers import dev_flac

from speech_hands import AudioError
from speech_hands.audio import load_audio


@pytest.mark.parametrize("rate", [16_000, 44_100])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused(tmp_path, rate, bad):
    samples = load_audio(dev_flac("533-1066-0000")).samples[: 2 * 16_000].copy()
    samples[1000:1010] = bad
    path = tmp_path / "broken.wav"
    sf.write(str(path), samples, rate, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite"):
        load_audio(path)
