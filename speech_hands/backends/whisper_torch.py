"""CTranslate2 Whisper weights as an openai-whisper PyTorch model, converted losslessly and cached.

The bundled Whisper models (:mod:`speech_hands.backends.weights`) are CTranslate2 directories whose
``model.bin`` stores float16 arrays (binary format version 6, ``WhisperSpec`` revision 3). Fine-tuning
needs the same weights as a PyTorch module, so this module reads ``model.bin`` and maps every array onto
openai-whisper's :class:`whisper.model.Whisper`; nothing is re-quantised, so the PyTorch model computes
what the original checkpoint computes (``load_state_dict(strict=True)``: nothing missing, nothing left).

``model.bin``: a header (uint32 format version, a length-prefixed model name, uint32 spec revision,
uint32 variable count), then per variable a length-prefixed name, uint8 rank, uint32 dimensions, a
uint8 dtype id (0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16), uint32 byte count and the
raw array; then the aliases (``decoder/projection/weight`` -> ``decoder/embeddings/weight``: the output
layer is tied to the token embedding, as in Whisper).

Name mapping (CTranslate2 -> openai-whisper): ``self_attention/linear_0`` is query, key and value
fused along the output axis (the key third of its bias is zero: Whisper's key has no bias), ``linear_1``
the output projection; the decoder's ``attention/linear_0`` is the cross-attention query, ``linear_1``
key and value fused, ``linear_2`` its output; ``ffn/linear_0|1`` are ``mlp.0|2``; each sub-layer's
``layer_norm`` is that block's LN; ``encoder/layer_norm`` is ``ln_post``, ``decoder/layer_norm`` ``ln``.

The converted model is cached as an openai-whisper checkpoint file (``{"dims", "model_state_dict"}``,
what ``whisper.load_model(path)`` reads) in ``<cache>/models/whisper-<name>-torch/``, with a
``source.json`` recording the source ``model.bin``'s sha256 and the checkpoint's own sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from speech_hands.backends.weights import BUNDLED_PREFIX, cache_dir, resolve_model
from speech_hands.errors import ConfigurationError

__all__ = ["WhisperSize", "converted_checkpoint", "ct2_size", "load_torch_whisper", "read_ct2", "sha256_path"]

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: None}
_lock = threading.Lock()


@dataclass(frozen=True)
class WhisperSize:
    """The architecture of a Whisper model: what must match between two models that share a role."""

    n_audio_layer: int
    n_text_layer: int
    n_audio_state: int
    n_text_state: int

    def describe(self) -> str:
        return f"{self.n_audio_layer}+{self.n_text_layer} layers x {self.n_text_state}"


def sha256_path(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class _Reader:
    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh

    def u(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        data = self.fh.read(size)
        if len(data) != size:
            raise EOFError
        return struct.unpack("<" + fmt, data)[0]

    def string(self) -> str:
        length = self.u("H")
        return self.fh.read(length)[:-1].decode("utf-8")


def _walk(path: Path, *, arrays: bool) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """Header, variables (arrays, or ``(shape, dtype id)`` when ``arrays`` is false) and aliases."""
    variables: dict[str, Any] = {}
    aliases: dict[str, str] = {}
    try:
        with path.open("rb") as fh:
            r = _Reader(fh)
            header = {"version": r.u("I"), "name": r.string(), "revision": r.u("I")}
            if header["version"] < 5 or header["name"] != "WhisperSpec":
                raise ConfigurationError(
                    f"{path}: a {header['name']} model (format {header['version']}), not a CTranslate2 Whisper model"
                )
            for _ in range(r.u("I")):
                name = r.string()
                shape = tuple(r.u("I") for _ in range(r.u("B")))
                dtype_id, size = r.u("B"), r.u("I")
                if arrays or not shape:  # scalars (num_heads, flags) are always read
                    dtype = _DTYPES.get(dtype_id)
                    if dtype is None:
                        raise ConfigurationError(f"{path}: variable {name} has dtype id {dtype_id} (bfloat16/unknown)")
                    variables[name] = np.frombuffer(fh.read(size), dtype=dtype).reshape(shape)
                else:
                    fh.seek(size, os.SEEK_CUR)
                    variables[name] = (shape, dtype_id)
            for _ in range(r.u("I")):
                alias = r.string()
                aliases[alias] = r.string()
    except EOFError as exc:
        raise ConfigurationError(f"{path}: truncated CTranslate2 model file") from exc
    return header, variables, aliases


def read_ct2(model_dir: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The header and every array of a CTranslate2 Whisper ``model.bin`` (aliases resolved)."""
    path = Path(model_dir) / "model.bin"
    header, variables, aliases = _walk(path, arrays=True)
    for alias, target in aliases.items():
        variables.setdefault(alias, variables[target])
    return header, variables


def _layers(names: Any, prefix: str) -> int:
    parts = (n.split("/") for n in names if n.startswith(prefix + "/layer_"))
    return len({p[1] for p in parts if p[1].removeprefix("layer_").isdigit()})


def ct2_size(model_dir: str | Path) -> WhisperSize:
    """The architecture of a CTranslate2 Whisper directory, from ``model.bin``'s headers only (fast)."""
    _, variables, _ = _walk(Path(model_dir) / "model.bin", arrays=False)
    width = variables["decoder/embeddings/weight"][0][1]
    return WhisperSize(
        n_audio_layer=_layers(variables, "encoder"),
        n_text_layer=_layers(variables, "decoder"),
        n_audio_state=variables["encoder/conv1/bias"][0][0],
        n_text_state=width,
    )


def _float(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype not in (np.float16, np.float32):
        raise ConfigurationError(
            f"variable {name} is {array.dtype}: a quantised CTranslate2 model cannot be converted losslessly; "
            "convert the original checkpoint with ct2-transformers-converter without --quantization"
        )
    return array


def convert_ct2(model_dir: str | Path) -> tuple[dict[str, int], dict[str, Any]]:
    """openai-whisper ``dims`` and state dict (torch tensors, the stored dtype) of a CTranslate2 Whisper."""
    import torch

    header, v = read_ct2(model_dir)
    if header["revision"] != 3:
        raise ConfigurationError(f"{model_dir}: WhisperSpec revision {header['revision']}; this converter reads 3")
    names = list(v)
    n_audio_layer, n_text_layer = _layers(names, "encoder"), _layers(names, "decoder")
    vocab, width = v["decoder/embeddings/weight"].shape
    audio_width = v["encoder/conv1/bias"].shape[0]
    dims = {
        "n_mels": int(v["encoder/conv1/weight"].shape[1]),
        "n_audio_ctx": int(v["encoder/position_encodings/encodings"].shape[0]),
        "n_audio_state": int(audio_width),
        "n_audio_head": int(v["encoder/num_heads"]),
        "n_audio_layer": n_audio_layer,
        "n_vocab": int(vocab),
        "n_text_ctx": int(v["decoder/position_encodings/encodings"].shape[0]),
        "n_text_state": int(width),
        "n_text_head": int(v["decoder/num_heads"]),
        "n_text_layer": n_text_layer,
    }
    sd: dict[str, Any] = {}

    def put(name: str, array: np.ndarray) -> None:
        sd[name] = torch.from_numpy(np.array(array, copy=True))

    def linear(dst: str, src: str) -> None:
        put(f"{dst}.weight", _float(v[f"{src}/weight"], src))
        if f"{src}/bias" in v:
            put(f"{dst}.bias", v[f"{src}/bias"])

    def norm(dst: str, src: str) -> None:
        put(f"{dst}.weight", _float(v[f"{src}/gamma"], src))
        put(f"{dst}.bias", v[f"{src}/beta"])

    def fused(dsts: list[str], src: str, *, key_index: int | None) -> None:
        w, b = _float(v[f"{src}/weight"], src), v[f"{src}/bias"]
        parts = len(dsts)
        for i, dst in enumerate(dsts):
            rows = slice(i * w.shape[0] // parts, (i + 1) * w.shape[0] // parts)
            put(f"{dst}.weight", w[rows])
            if i != key_index:
                put(f"{dst}.bias", b[rows])
            elif np.any(b[rows] != 0):
                raise ConfigurationError(f"{src}: non-zero key bias; not a Whisper model")

    for part in ("conv1", "conv2"):
        put(f"encoder.{part}.weight", _float(v[f"encoder/{part}/weight"], part))
        put(f"encoder.{part}.bias", v[f"encoder/{part}/bias"])
    put("encoder.positional_embedding", v["encoder/position_encodings/encodings"])
    for i in range(n_audio_layer):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        qkv = [f"{dst}.attn.{p}" for p in ("query", "key", "value")]
        fused(qkv, f"{src}/self_attention/linear_0", key_index=1)
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")
        norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
    norm("encoder.ln_post", "encoder/layer_norm")
    put("decoder.token_embedding.weight", _float(v["decoder/embeddings/weight"], "embeddings"))
    put("decoder.positional_embedding", v["decoder/position_encodings/encodings"])
    for i in range(n_text_layer):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        fused([f"{dst}.attn.{p}" for p in ("query", "key", "value")], f"{src}/self_attention/linear_0", key_index=1)
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
        fused([f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"], f"{src}/attention/linear_1", key_index=0)
        linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
        norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")
        norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
    norm("decoder.ln", "decoder/layer_norm")
    return dims, sd


def _cache_name(spec: str, model_dir: Path) -> str:
    if spec.startswith(BUNDLED_PREFIX):
        return f"whisper-{spec[len(BUNDLED_PREFIX) :]}-torch"
    return f"whisper-{model_dir.name}-torch"


def converted_checkpoint(spec: str) -> tuple[Path, dict[str, Any]]:
    """The openai-whisper checkpoint file of a CTranslate2 Whisper model (``bundled:NAME`` or a local
    directory), converted once and cached; returns its path and ``source.json`` (source and
    checkpoint sha256)."""
    import torch

    model_dir = Path(resolve_model(spec))
    if not (model_dir / "model.bin").is_file():
        raise ConfigurationError(f"{spec!r} is not a local CTranslate2 Whisper model (no model.bin)")
    source_sha = sha256_path(model_dir / "model.bin")
    target = cache_dir() / "models" / _cache_name(spec, model_dir)
    checkpoint, meta_file = target / "model.pt", target / "source.json"
    with _lock:
        if meta_file.is_file() and checkpoint.is_file():
            meta = json.loads(meta_file.read_text())
            if meta.get("source_sha256") == source_sha:
                return checkpoint, meta
        dims, state = convert_ct2(model_dir)
        target.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target, prefix=".model.pt.")
        os.close(fd)
        try:
            torch.save({"dims": dims, "model_state_dict": state}, tmp)
            os.replace(tmp, checkpoint)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        meta = {
            "source": spec,
            "source_dir": str(model_dir),
            "source_sha256": source_sha,
            "checkpoint_sha256": sha256_path(checkpoint),
            "dims": dims,
            "dtype": str(next(iter(state.values())).dtype).removeprefix("torch."),
        }
        meta_file.write_text(json.dumps(meta, indent=1) + "\n")
    return checkpoint, meta


def load_torch_whisper(spec: str, device: str = "cpu", dtype: Any = None) -> tuple[Any, dict[str, Any]]:
    """An openai-whisper model for ``bundled:NAME``, a local CTranslate2 directory or a local
    openai-whisper checkpoint file (``.pt``); returns the model (float32 unless ``dtype``) and where it
    came from (``source``, ``source_sha256``)."""
    import torch
    from whisper.model import ModelDimensions, Whisper

    path = Path(spec).expanduser()
    if path.is_file():
        checkpoint, meta = path, {"source": str(path.resolve()), "source_sha256": sha256_path(path)}
    elif spec.startswith(BUNDLED_PREFIX) or (path.is_dir() and (path / "model.bin").is_file()):
        checkpoint, meta = converted_checkpoint(spec)
    else:
        raise ConfigurationError(
            f"Whisper model {spec!r}: use bundled:base, bundled:tiny.en, a local CTranslate2 Whisper directory "
            "or a local openai-whisper checkpoint file (.pt)"
        )
    data = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or "dims" not in data or "model_state_dict" not in data:
        raise ConfigurationError(
            f"{checkpoint}: not an openai-whisper checkpoint (needs 'dims' and 'model_state_dict')"
        )
    model = Whisper(ModelDimensions(**data["dims"]))
    model.load_state_dict(data["model_state_dict"], strict=True)
    model = model.to(device=device, dtype=dtype or torch.float32)
    return model.eval(), meta
