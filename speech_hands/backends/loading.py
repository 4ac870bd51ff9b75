"""What every model backend needs around its library: devices, dtypes, one lazy shared load, its
default name, and the guarded import of its optional extra. One place each, so the backends differ
only in what is specific to their library.

- ``device="auto"`` means the first CUDA GPU when torch sees one, else the CPU; ``"cuda:1"``, ``"cpu"``,
  ``"mps"`` are taken as given (a CUDA device without a GPU is a :class:`ConfigurationError`, not a
  crash deep inside a model).
- ``dtype="auto"`` means bfloat16 on a GPU that supports it (Ampere and newer), else float16 on a GPU,
  and float32 on the CPU (half precision on a CPU is slow or unsupported for many kernels).
- Loading a 7B model takes tens of seconds and gigabytes: every backend holds its model in a
  :class:`LazyModel`, which loads on first use through :func:`shared_model`, so backends built on the
  same weights and settings share one copy, and the graph's parallel branches never load twice. Each
  entry carries a lock: a model that keeps per-call state on the module (Qwen2.5-Omni stores its rope
  deltas there during ``generate``) must not be called from two threads at once.
- :func:`model_name`: a backend's default name from its model spec (the reflector artifacts and the
  traces match tools by these names, e.g. ``whisper-base``).
- :class:`OptionalExtra`: a heavy library that only some backends need (transformers, NeMo, httpx). A
  backend module declares it once; the backend imports it through it (the error names the
  ``pip install 'speech-hands[extra]'`` fix) and lists it in its class's ``requires``, which assembly
  checks cheaply before constructing, so a missing extra fails while assembling, not on first call.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal, NamedTuple

from speech_hands.errors import ConfigurationError

DtypeName = Literal["auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16"]

_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; checks that a requested GPU exists."""
    import torch

    spec = (device or "auto").strip().lower()
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigurationError(
                f"device {device!r} asked for a GPU but torch sees none (torch {torch.__version__}, "
                f"CUDA build: {torch.version.cuda or 'no'}). Use device='cpu', or install a CUDA build of torch."
            )
        index = int(spec.split(":", 1)[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise ConfigurationError(
                f"device {device!r}: only {torch.cuda.device_count()} GPU(s) visible; check CUDA_VISIBLE_DEVICES"
            )
    elif spec == "mps" and not torch.backends.mps.is_available():
        raise ConfigurationError("device 'mps' is not available on this machine; use 'cpu'")
    elif spec not in ("cpu", "mps") and not spec.startswith("cuda"):
        raise ConfigurationError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return spec


def resolve_dtype(dtype: str = "auto", device: str = "cpu") -> Any:
    """The torch dtype for a name (``auto``, ``bfloat16``/``bf16``, ``float16``/``fp16``, ``float32``)."""
    import torch

    name = _ALIASES.get((dtype or "auto").lower(), (dtype or "auto").lower())
    if name == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in ("float32", "bfloat16", "float16"):
        raise ConfigurationError(f"unknown dtype {dtype!r}; use auto, bfloat16, float16 or float32")
    return getattr(torch, name)


def dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass
class Loaded:
    """A loaded model with everything needed to call it, and the lock that serialises calls to it."""

    model: Any
    extras: dict[str, Any] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)


_cache: dict[Hashable, Loaded] = {}
_cache_lock = threading.Lock()
_loading: dict[Hashable, threading.Lock] = {}


def shared_model(key: Hashable, load: Callable[[], Loaded]) -> Loaded:
    """The process-wide model for ``key``, loaded once by ``load()``. Two threads asking for the same
    key wait for one load; different keys load in parallel."""
    with _cache_lock:
        if key in _cache:
            return _cache[key]
        per_key = _loading.setdefault(key, threading.Lock())
    with per_key:
        with _cache_lock:
            if key in _cache:
                return _cache[key]
        loaded = load()
        with _cache_lock:
            _cache[key] = loaded
            _loading.pop(key, None)
        return loaded


def forget_models() -> int:
    """Drop every cached model (frees memory once no backend holds it); returns how many were cached."""
    with _cache_lock:
        count = len(_cache)
        _cache.clear()
    return count


class ModelRequest(NamedTuple):
    """Which model a backend wants (``key``: everything that makes two loads differ) and how to load it."""

    key: Hashable
    load: Callable[[], Loaded]


class LazyModel:
    """A backend's model, loaded on the first :meth:`get` and only once, from any number of threads.

    ``request`` runs at that first call (not in the backend's constructor: resolving the device imports
    torch, resolving bundled weights may join files) and says which model to load; backends whose
    requests have the same key share one process-wide copy (:func:`shared_model`). The backend keeps
    its copy after :func:`forget_models`; a backend built afterwards loads afresh.
    """

    def __init__(self, request: Callable[[], ModelRequest]) -> None:
        self._request = request
        self._loaded: Loaded | None = None
        self._lock = threading.Lock()

    def get(self) -> Loaded:
        """The loaded model (loading it now on the first call)."""
        loaded = self._loaded
        if loaded is None:
            with self._lock:
                if self._loaded is None:
                    key, load = self._request()
                    self._loaded = shared_model(key, load)
                loaded = self._loaded
        return loaded


def model_name(spec: str, *, prepend: str = "", drop_prefix: str = "", drop_suffix: str = "") -> str:
    """A backend's default name: the last component of its model path or hub id
    (``nvidia/parakeet-tdt-0.6b-v3`` -> ``parakeet-tdt-0.6b-v3``), without ``drop_prefix`` before it is
    split (``bundled:``) and ``drop_suffix`` after (a checkpoint extension, ``.pt``, ``.nemo``), after
    ``prepend`` (``whisper-``: ``bundled:tiny.en`` -> ``whisper-tiny.en``)."""
    last = str(spec).removeprefix(drop_prefix).rstrip("/").split("/")[-1]
    return prepend + last.removesuffix(drop_suffix)


@dataclass(frozen=True)
class OptionalExtra:
    """An optional dependency: the module to import, the pip package that brings it, the
    ``speech-hands[extra]`` that installs it, and which backends need it (for the error)."""

    module: str
    package: str
    extra: str
    what: str

    @property
    def install_hint(self) -> str:
        return f"pip install 'speech-hands[{self.extra}]'"

    def check(self) -> None:
        """A :class:`ConfigurationError` naming the fix when the module is not installed; imports nothing."""
        if importlib.util.find_spec(self.module) is None:
            raise ConfigurationError(
                f"{self.what} needs the {self.package!r} package, which is not installed: {self.install_hint}"
            )

    def import_module(self, name: str | None = None) -> ModuleType:
        """Import the module (or its submodule ``name``); a :class:`ConfigurationError` naming the fix
        when that fails."""
        try:
            return importlib.import_module(name or self.module)
        except ImportError as exc:
            raise ConfigurationError(
                f"{self.what} needs the {self.package!r} package ({exc}); install the extra: {self.install_hint}"
            ) from exc


#: transformers and its companions, shared by every transformers backend (Qwen2.5-Omni, chat LLMs, AF3)
TRANSFORMERS = OptionalExtra(
    module="transformers",
    package="transformers",
    extra="omni",
    what="a transformers backend (Qwen2.5-Omni, chat LLM, Audio Flamingo 3)",
)
