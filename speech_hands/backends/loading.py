"""Device and dtype choices for the torch backends, and the process-wide model cache.

- ``device="auto"`` means the first CUDA GPU when torch sees one, else the CPU; ``"cuda:1"``, ``"cpu"``,
  ``"mps"`` are taken as given (a CUDA device without a GPU is a :class:`ConfigurationError`, not a
  crash deep inside a model).
- ``dtype="auto"`` means bfloat16 on a GPU that supports it (Ampere and newer), else float16 on a GPU,
  and float32 on the CPU (half precision on a CPU is slow or unsupported for many kernels).
- Loading a 7B model takes tens of seconds and gigabytes: every backend loads through
  :func:`shared_model`, so backends built on the same weights and settings share one copy, and the
  graph's parallel branches never load twice. Each entry carries a lock: a model that keeps
  per-call state on the module (Qwen2.5-Omni stores its rope deltas there during ``generate``) must not
  be called from two threads at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Literal

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


def missing_extra(package: str, extra: str, what: str, exc: ImportError) -> ConfigurationError:
    """The error for a backend whose optional dependency is not installed."""
    return ConfigurationError(
        f"{what} needs the {package!r} package ({exc}); install the extra: pip install 'speech-hands[{extra}]'"
    )
