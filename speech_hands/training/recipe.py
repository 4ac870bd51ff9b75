"""The reflector's training recipe as data: which utterances, which augmentations, which seed.

Everything that decides the shipped artifact is a field here; the artifact stores the recipe and its
hash, and ``speech-hands train-reflector`` re-runs it end to end (docs/reflector.md).
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from speech_hands.training.corpus import (
    TrainingItem,
    augment,
    espeak_available,
    espeak_items,
    noise_files,
    real_items,
    text_sentences,
)
from speech_hands.training.records import PoolConfig


def default_shared_data() -> Path:
    """The shared data folder (``$SPEECH_HANDS_SHARED_DATA`` or a ``shared/data`` beside the checkout)."""
    from speech_hands.datasets.builtin import shared_data_dir

    return shared_data_dir()


class Recipe(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = 1
    seed: int = 0
    data: str | tuple[str, ...] = Field(
        default="librispeech_other_dev",
        description="real utterances: a folder under the shared data with transcripts.tsv, a built-in "
        "dataset (fsdd, librispeech-dev) or a manifest .jsonl; or several of them",
    )
    noise: str = "esc10"
    text: str = "librispeech_test_other_text/test-other.ref.tsv"
    #: noisy / speed-changed copies per real utterance (ESC-10 noise, SNR and speed drawn with the seed).
    #: Off in the shipped recipe: measured in leave-one-speaker-out CV, adding them made both the
    #: rescoring and the agent worse on the real held-out speakers (docs/reflector.md).
    augment_per_utterance: int = 0
    snrs_db: tuple[float, ...] = (5.0, 10.0, 15.0, 20.0)
    speeds: tuple[float, ...] = (0.9, 1.0, 1.1)
    #: espeak-ng sentences (0 turns synthesis off); four in five get ESC-10 noise. Off in the shipped
    #: recipe for the same reason (measured worse in CV).
    espeak_utterances: int = 0
    pool: PoolConfig = PoolConfig()
    #: reflector fit
    c_grid: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0)
    ranker_c: float = 1.0
    weight_grid_tiny: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    weight_grid_words: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
    #: MBR posterior temperatures tried (softmax(alpha * ranker score)); chosen inside each CV fold
    mbr_alphas: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)

    def hash(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


def recipe_items(recipe: Recipe, shared: Path, work_dir: Path, *, limit: int | None = None) -> list[TrainingItem]:
    """Every training item of the recipe, in a fixed order (real, augmented, synthesized)."""
    real = real_items(recipe.data, shared)
    if limit is not None:
        real = real[:limit]
    rng = random.Random(recipe.seed)
    noises = noise_files(shared / recipe.noise)
    items: list[TrainingItem] = list(real)
    for item in real:
        for k in range(recipe.augment_per_utterance):
            speed = rng.choice(recipe.speeds)
            snr = rng.choice(recipe.snrs_db)
            items.append(
                augment(item, work_dir, noise=rng.choice(noises), snr_db=snr, speed=speed, seed=recipe.seed + k)
            )
    n_synth = recipe.espeak_utterances if limit is None else min(recipe.espeak_utterances, limit)
    if n_synth and espeak_available():
        speakers = {i.group for i in real_items(recipe.data, shared)}
        sentences = text_sentences(shared / recipe.text, exclude_speakers=speakers, max_words=35)
        items += espeak_items(
            sentences, work_dir, n=n_synth, seed=recipe.seed, noise=noises, snrs=(*recipe.snrs_db, 1000.0)
        )
    return items
