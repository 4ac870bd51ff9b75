"""Tiny, randomly initialised versions of the paper's models, built offline from their config classes.

No model hub is reachable here, so the backends are proven on models with the real architectures and
the real file layouts (``save_pretrained`` directories, a Whisper checkpoint file, a ``.nemo`` archive)
and random weights. Random weights give random text: tests assert behaviour, not wording.

The tokenizer is a byte-level BPE trained in a few milliseconds on the shared LibriSpeech transcripts
and the prompt templates, wrapped as a ``Qwen2Tokenizer`` with Qwen's special tokens and a Qwen-style
chat template, so the processor, chat template and action-token code paths are the real ones.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from speech_hands.types import ACTION_TOKENS

REPO = Path(__file__).resolve().parents[1]

QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<|IMAGE|>",
    "<|VIDEO|>",
    "<|vision_bos|>",
    "<|vision_eos|>",
]

#: Qwen-style chat template: string or list content, one audio placeholder per audio item.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: AF3's sound placeholder and its chat template (AF3 puts the audio item in the user turn).
AF3_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'audio' %}<sound>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def corpus(shared_data: Path) -> list[str]:
    """Training text for the tiny tokenizers: real transcripts and the prompt templates."""
    with (shared_data / "librispeech_other_dev" / "transcripts.tsv").open(newline="") as fh:
        texts = [row["text"] for row in csv.DictReader(fh, delimiter="\t")]
    texts += [p.read_text(encoding="utf-8") for p in sorted((REPO / "speech_hands" / "prompts").glob("*.txt"))]
    return texts


def build_tokenizer(
    shared_data: Path, *, action_tokens: bool, extra_specials: tuple[str, ...] = (), vocab: int = 700
) -> Any:
    """A Qwen2Tokenizer over a tiny byte-level BPE (trained offline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    specials = QWEN_SPECIALS + list(extra_specials) + (list(ACTION_TOKENS) if action_tokens else [])
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(corpus(shared_data), trainer)
    return Qwen2Tokenizer(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        audio_token="<|AUDIO|>",
        audio_bos_token="<|audio_bos|>",
        audio_eos_token="<|audio_eos|>",
        image_token="<|IMAGE|>",
        video_token="<|VIDEO|>",
        vision_bos_token="<|vision_bos|>",
        vision_eos_token="<|vision_eos|>",
        extra_special_tokens=list(ACTION_TOKENS) if action_tokens else None,
    )


def _text_config(tokenizer: Any, vocab_pad: int = 8) -> dict[str, Any]:
    ids = tokenizer.convert_tokens_to_ids
    return dict(
        vocab_size=len(tokenizer) + vocab_pad,  # padded like Qwen's real vocabulary
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"),
    )


def build_qwen_omni(
    directory: Path, shared_data: Path, *, action_tokens: bool = True, layout: str = "thinker", seed: int = 0
) -> Path:
    """A tiny Qwen2.5-Omni saved like the real one: thinker-only or full (``layout="full"``) weights,
    tokenizer, Whisper-style 128-mel feature extractor, chat template."""
    import torch
    from transformers import (
        Qwen2_5OmniConfig,
        Qwen2_5OmniForConditionalGeneration,
        Qwen2_5OmniThinkerConfig,
        Qwen2_5OmniThinkerForConditionalGeneration,
        WhisperFeatureExtractor,
    )

    from speech_hands.backends.qwen_omni import audio_only_processor_class

    tokenizer = build_tokenizer(shared_data, action_tokens=action_tokens)
    ids = tokenizer.convert_tokens_to_ids
    text = _text_config(tokenizer)
    # mrope_section splits the rotary half-dimension (head_dim 16 -> 8) over time / height / width
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    config = Qwen2_5OmniThinkerConfig(
        text_config=text,
        audio_config=dict(
            num_mel_bins=128, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64, d_model=32, output_dim=64
        ),
        vision_config=dict(
            depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, fullatt_block_indexes=[0]
        ),
        audio_token_index=ids("<|AUDIO|>"),
        image_token_index=ids("<|IMAGE|>"),
        video_token_index=ids("<|VIDEO|>"),
        audio_start_token_id=ids("<|audio_bos|>"),
        audio_end_token_id=ids("<|audio_eos|>"),
        vision_start_token_id=ids("<|vision_bos|>"),
        user_token_id=ids("<|im_start|>"),
    )
    torch.manual_seed(seed)
    if layout == "full":
        model = Qwen2_5OmniForConditionalGeneration(
            Qwen2_5OmniConfig(thinker_config=config.to_dict(), enable_audio_output=False)
        )
    else:
        model = Qwen2_5OmniThinkerForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids("<|im_end|>")
    model.generation_config.pad_token_id = ids("<|endoftext|>")
    model.save_pretrained(directory)
    processor = audio_only_processor_class()(
        feature_extractor=WhisperFeatureExtractor(feature_size=128, sampling_rate=16_000),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(directory)
    return directory


def build_chat_llm(directory: Path, shared_data: Path, *, action_tokens: bool = True, seed: int = 0) -> Path:
    """A tiny Qwen2 causal LM with a chat template (the generic text-only reflector)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tokenizer(shared_data, action_tokens=action_tokens)
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(**_text_config(tokenizer)))
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def build_audio_flamingo3(directory: Path, shared_data: Path, *, seed: int = 0) -> Path:
    """A tiny Audio Flamingo 3 (Whisper-style encoder + projector + Qwen2 LM) with its processor."""
    import torch
    from transformers import (
        AudioFlamingo3Config,
        AudioFlamingo3ForConditionalGeneration,
        AudioFlamingo3Processor,
        WhisperFeatureExtractor,
    )

    tokenizer = build_tokenizer(shared_data, action_tokens=False, extra_specials=("<sound>",))
    text = _text_config(tokenizer)
    text["model_type"] = "qwen2"
    config = AudioFlamingo3Config(
        audio_config=dict(
            num_mel_bins=128, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, hidden_size=32
        ),
        text_config=text,
        audio_token_id=tokenizer.convert_tokens_to_ids("<sound>"),
    )
    torch.manual_seed(seed)
    model = AudioFlamingo3ForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model.save_pretrained(directory)
    processor = AudioFlamingo3Processor(
        feature_extractor=WhisperFeatureExtractor(feature_size=128, sampling_rate=16_000),
        tokenizer=tokenizer,
        chat_template=AF3_CHAT_TEMPLATE,
    )
    processor.save_pretrained(directory)
    return directory


def build_tiny_whisper(path: Path, seed: int = 0) -> Path:
    """A random multilingual-vocabulary Whisper saved the way whisper.load_model reads checkpoints
    (openai-whisper is a core dependency: no extras needed)."""
    from dataclasses import asdict

    import torch
    from whisper.model import ModelDimensions, Whisper

    dims = ModelDimensions(
        n_mels=80,
        n_audio_ctx=1500,
        n_audio_state=64,
        n_audio_head=2,
        n_audio_layer=1,
        n_vocab=51865,
        n_text_ctx=448,
        n_text_state=64,
        n_text_head=2,
        n_text_layer=1,
    )
    torch.manual_seed(seed)
    model = Whisper(dims)
    # Whisper leaves the decoder's positional embedding as torch.empty (a checkpoint always fills it)
    torch.nn.init.normal_(model.decoder.positional_embedding, std=0.02)
    torch.save({"dims": asdict(dims), "model_state_dict": model.state_dict()}, path)
    return path


def build_tiny_tdt(directory: Path, shared_data: Path) -> Path:
    """A tiny random Parakeet-style TDT transducer (FastConformer encoder, TDT joint, SentencePiece BPE
    trained offline on the shared transcripts), saved as a real ``.nemo`` archive. NeMo's import writes
    ``~/.lhotse``: callers point ``HOME`` at a temporary directory first."""
    import sentencepiece
    import torch
    from nemo.collections.asr.models import EncDecRNNTBPEModel
    from omegaconf import OmegaConf

    sp_dir = directory / "tokenizer"
    sp_dir.mkdir(parents=True)
    (sp_dir / "text.txt").write_text("\n".join(t.lower() for t in corpus(shared_data)[:60]))
    sentencepiece.SentencePieceTrainer.train(
        input=str(sp_dir / "text.txt"),
        model_prefix=str(sp_dir / "tokenizer"),
        vocab_size=64,
        model_type="bpe",
        character_coverage=1.0,
        bos_id=-1,
        eos_id=-1,
        unk_id=0,
        minloglevel=2,
    )
    sp = sentencepiece.SentencePieceProcessor(model_file=str(sp_dir / "tokenizer.model"))
    (sp_dir / "vocab.txt").write_text("\n".join(sp.id_to_piece(i) for i in range(sp.get_piece_size())) + "\n")
    durations = [0, 1, 2, 3, 4]
    cfg = OmegaConf.create(
        {
            "sample_rate": 16000,
            "tokenizer": {"dir": str(sp_dir), "type": "bpe"},
            "preprocessor": {
                "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                "sample_rate": 16000,
                "normalize": "per_feature",
                "window_size": 0.025,
                "window_stride": 0.01,
                "features": 80,
                "n_fft": 512,
                "dither": 0.0,
                "pad_to": 0,
            },
            "encoder": {
                "_target_": "nemo.collections.asr.modules.ConformerEncoder",
                "feat_in": 80,
                "n_layers": 1,
                "d_model": 32,
                "subsampling": "dw_striding",
                "subsampling_factor": 8,
                "subsampling_conv_channels": 32,
                "n_heads": 2,
                "ff_expansion_factor": 2,
                "conv_kernel_size": 9,
                "self_attention_model": "rel_pos",
                "xscaling": True,
            },
            "decoder": {
                "_target_": "nemo.collections.asr.modules.RNNTDecoder",
                "normalization_mode": None,
                "random_state_sampling": False,
                "blank_as_pad": True,
                "prednet": {"pred_hidden": 32, "pred_rnn_layers": 1},
            },
            "joint": {
                "_target_": "nemo.collections.asr.modules.RNNTJoint",
                "log_softmax": None,
                "preserve_memory": False,
                "fuse_loss_wer": False,
                "num_extra_outputs": len(durations),
                "jointnet": {"joint_hidden": 32, "activation": "relu", "encoder_hidden": 32, "pred_hidden": 32},
            },
            "model_defaults": {
                "enc_hidden": 32,
                "pred_hidden": 32,
                "joint_hidden": 32,
                "tdt_durations": durations,
                "num_tdt_durations": len(durations),
            },
            "decoding": {
                "strategy": "greedy_batch",
                "model_type": "tdt",
                "durations": durations,
                "greedy": {"max_symbols": 10},
            },
            "loss": {
                "loss_name": "tdt",
                "tdt_kwargs": {
                    "fastemit_lambda": 0.0,
                    "clamp": -1.0,
                    "durations": durations,
                    "sigma": 0.02,
                    "omega": 0.1,
                },
            },
        }
    )
    torch.manual_seed(0)
    model = EncDecRNNTBPEModel(cfg=cfg)
    path = directory / "parakeet-tdt-tiny-random.nemo"
    model.save_to(str(path))
    return path


def steer_first_token(directory: Path, token: str, prompts_hidden: Any, margin: float = 30.0) -> None:
    """Edit a saved model's output row for ``token`` so that it wins the first position for inputs
    whose last hidden state resembles ``prompts_hidden`` (a (n, hidden) tensor of such states): a
    stand-in for fine-tuning that makes a graph edge predictable without training."""
    from safetensors.torch import load_file, save_file

    weights_file = directory / "model.safetensors"
    state = load_file(str(weights_file))
    key = next(k for k in state if k.endswith("lm_head.weight"))
    from transformers import AutoTokenizer

    token_id = AutoTokenizer.from_pretrained(directory).convert_tokens_to_ids(token)
    direction = prompts_hidden.float().mean(dim=0)
    state[key][token_id] = (direction / direction.norm() ** 2 * margin).to(state[key].dtype)
    save_file(state, str(weights_file), metadata={"format": "pt"})


def require(module: str) -> Any:
    """Import an optional dependency of a backend test. Those tests carry the ``extras`` marker and run
    in `make test-extras` (see tests/backends/extras/conftest.py), where a missing package must fail loudly."""
    import importlib

    return importlib.import_module(module)


def last_hidden(model: Any, inputs: Any) -> Any:
    """The final-layer hidden state at the last position (what the first-token logits are read from)."""
    import torch

    with torch.inference_mode():
        out = model(**inputs, output_hidden_states=True, use_cache=False)
    return out.hidden_states[-1][:, -1]
