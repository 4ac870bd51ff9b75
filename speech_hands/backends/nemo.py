"""NVIDIA NeMo ASR models (the paper's Parakeet-TDT-0.6B-v3 and Canary-1b-v2) as an ASRBackend.

Loading: a path ending in ``.nemo`` goes to ``ASRModel.restore_from`` (a local archive); anything else
to ``ASRModel.from_pretrained`` (``nvidia/parakeet-tdt-0.6b-v3``, ``nvidia/canary-1b-v2``; downloads
once into NeMo's cache). ``pip install 'speech-hands[nemo]'`` brings NeMo.

N-best: the model's decoding is switched once to beam search with ``return_best_hypothesis=False``
(``beam.beam_size = max(beam_size, n_best)``), and ``transcribe(..., return_hypotheses=True)`` then
returns every beam. What supports it:

- transducers (Parakeet-TDT and other RNN-T / TDT models): strategy ``beam`` (NeMo's ``BeamTDTInfer`` /
  ``BeamRNNTInfer``, the default here) and the batched ``malsd_batch`` both return all beams with
  nemo_toolkit 3.0 (checked on a tiny TDT model). A greedy strategy (``greedy_batch``) gives a 1-best list.
- attention encoder-decoders (Canary): strategy ``beam`` with ``return_best_hypothesis=False``. Canary
  needs its prompt: ``source_lang`` / ``target_lang`` / ``pnc`` (``prompt={...}`` here, English ASR with
  punctuation by default).
- CTC models have no beam N-best without an external decoder: a 1-best list (``n_best_supported`` is
  False), documented rather than faked.

Scores: NeMo's beam score is the sum of log-probabilities along the path (for transducers including the
blank emissions); each hypothesis's ``score`` here is that sum divided by its number of tokens, and
the list is ordered by it (NeMo's own ``score_norm`` ranking).

NeMo's import writes ``~/.lhotse`` and caches under ``~``; that is NeMo's behaviour, left alone.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from speech_hands.audio import AudioInput
from speech_hands.backends.loading import LazyModel, Loaded, ModelRequest, OptionalExtra, model_name, resolve_device
from speech_hands.errors import ConfigurationError
from speech_hands.types import Hypothesis

DEFAULT_PROMPT = {"source_lang": "en", "target_lang": "en", "pnc": "yes"}

NEMO = OptionalExtra(
    module="nemo", package="nemo_toolkit[asr]", extra="nemo", what="the NeMo ASR backend (Parakeet, Canary)"
)


def _asr_model_class() -> Any:
    return NEMO.import_module("nemo.collections.asr.models").ASRModel


class NemoASR:
    """An ASR backend (``transcribe(audio, n_best)``) over a NeMo ``ASRModel``."""

    #: checked by assembly before constructing
    requires = (NEMO,)

    def __init__(
        self,
        model: str = "nvidia/parakeet-tdt-0.6b-v3",
        *,
        name: str | None = None,
        device: str = "auto",
        beam_size: int = 5,
        strategy: str = "beam",
        batch_size: int = 8,
        prompt: dict[str, str] | None = None,
    ) -> None:
        self.model_spec = str(model)
        self.name = name or model_name(model, drop_suffix=".nemo")
        self.device_spec = device
        self.beam_size = beam_size
        self.strategy = strategy
        self.batch_size = batch_size
        self.prompt = dict(DEFAULT_PROMPT if prompt is None else prompt)
        self._model = LazyModel(self._model_request)

    # ------------------------------------------------------------------ loading

    def load(self) -> Loaded:
        """Load (or fetch the process-wide copy of) the model now; later calls are free."""
        return self._model.get()

    def _model_request(self) -> ModelRequest:
        device = resolve_device(self.device_spec)
        key = ("nemo", self.model_spec, device, self.strategy, self.beam_size)
        return ModelRequest(key, lambda: self._load(device))

    def _load(self, device: str) -> Loaded:
        import torch

        asr_model = _asr_model_class()
        spec = Path(self.model_spec).expanduser()
        try:
            if self.model_spec.endswith(".nemo"):
                if not spec.is_file():
                    raise ConfigurationError(
                        f"NeMo checkpoint not found: {spec}. Give the path of a local .nemo file, or a model "
                        "name (nvidia/parakeet-tdt-0.6b-v3) on a machine that reaches the hub."
                    )
                model = asr_model.restore_from(str(spec), map_location=torch.device(device))
            else:
                model = asr_model.from_pretrained(self.model_spec, map_location=torch.device(device))
        except ConfigurationError:
            raise
        except (OSError, RuntimeError, ValueError, FileNotFoundError) as exc:
            raise ConfigurationError(
                f"cannot load the NeMo model {self.model_spec!r} ({type(exc).__name__}: {exc}). Give a local "
                ".nemo file, or a model name (nvidia/parakeet-tdt-0.6b-v3) on a machine that reaches the hub."
            ) from exc
        model.eval()
        family = self._family(model)
        nbest = self._set_beam(model, family)
        return Loaded(model=model, extras={"family": family, "n_best_supported": nbest})

    @staticmethod
    def _family(model: Any) -> str:
        names = {cls.__name__ for cls in type(model).__mro__}
        if "EncDecMultiTaskModel" in names:
            return "aed"
        if "EncDecRNNTModel" in names:  # includes TDT and the hybrid RNNT-CTC models
            return "transducer"
        if "EncDecCTCModel" in names:
            return "ctc"
        return "other"

    def _set_beam(self, model: Any, family: str) -> bool:
        """Switch to beam search returning all beams; False when this model cannot give an N-best."""
        from omegaconf import OmegaConf, open_dict

        if family in ("ctc", "other"):
            return False
        if self.strategy.startswith("greedy"):
            return False
        decoding = copy.deepcopy(model.cfg.decoding)
        with open_dict(decoding):
            decoding.strategy = self.strategy
            OmegaConf.update(decoding, "beam.beam_size", self.beam_size, force_add=True)
            OmegaConf.update(decoding, "beam.return_best_hypothesis", False, force_add=True)
        try:
            model.change_decoding_strategy(decoding, verbose=False)
        except TypeError:  # older signatures have no verbose argument
            model.change_decoding_strategy(decoding)
        return not self.strategy.startswith("greedy")

    @property
    def n_best_supported(self) -> bool:
        return bool(self.load().extras["n_best_supported"])

    # ------------------------------------------------------------------ decoding

    def _hypotheses(self, result: Any, n_best: int) -> list[Hypothesis]:
        beams = list(result) if isinstance(result, (list, tuple)) else [result]
        if beams and hasattr(beams[0], "n_best_hypotheses"):  # NBestHypotheses wrapper
            beams = list(beams[0].n_best_hypotheses)
        scored: dict[str, float | None] = {}
        for beam in beams:
            text = (beam.text if isinstance(beam.text, str) else "").strip()
            if not text:
                continue
            length = len(beam.y_sequence) if getattr(beam, "y_sequence", None) is not None else 0
            score = float(beam.score) / max(length, 1) if beam.score is not None else None
            if text not in scored or (score is not None and (scored[text] is None or score > scored[text])):
                scored[text] = score
        ordered = sorted(scored.items(), key=lambda kv: -(kv[1] if kv[1] is not None else -1e30))[:n_best]
        return [Hypothesis(text=t, score=s, source=self.name, rank=i) for i, (t, s) in enumerate(ordered)]

    def transcribe_batch(self, audios: list[AudioInput], n_best: int = 5) -> list[list[Hypothesis]]:
        """N-best lists for several inputs in NeMo's own batches."""
        import torch

        loaded = self.load()
        samples = [a.require_samples() for a in audios]
        kwargs: dict[str, Any] = {"batch_size": self.batch_size, "return_hypotheses": True, "verbose": False}
        if loaded.extras["family"] == "aed":
            kwargs.update(self.prompt)
        with loaded.lock, torch.inference_mode():
            out = loaded.model.transcribe(samples, **kwargs)
        if isinstance(out, tuple):  # some versions return (best, all)
            out = out[-1]
        return [self._hypotheses(r, n_best) for r in out]

    def transcribe(self, audio: AudioInput, n_best: int = 5) -> list[Hypothesis]:
        """The N-best list, best first (1-best where the model has no beam N-best, see module docs). It takes
        no text prompt: a conversation's earlier turns do not reach it (the graph notes that)."""
        if audio.require_samples().size == 0:
            return []
        return self.transcribe_batch([audio], n_best)[0]
