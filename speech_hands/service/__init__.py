"""The HTTP service (``speech-hands serve``, extra ``serve``): the agent behind an OpenAI-compatible
transcription endpoint and the Speech-Hands authors' ``/v1/process`` contract.

Usage::

    from speech_hands import SpeechHands
    from speech_hands.service import ServiceSettings, create_app

    app = create_app(SpeechHands.default().load(), ServiceSettings(api_key="secret"))
    # uvicorn.run(app, host="127.0.0.1", port=8000)

Modules: :mod:`~speech_hands.service.app` (the FastAPI factory and its routes),
:mod:`~speech_hands.service.schemas` (the request / response models),
:mod:`~speech_hands.service.limits` (settings, the request size limit, the concurrency gate),
:mod:`~speech_hands.service.openai_format` (a result in OpenAI's response formats),
:mod:`~speech_hands.service.nbest` (a caller's N-best as one request's extra external tool),
:mod:`~speech_hands.service.cli` (the ``serve`` command). FastAPI is imported only by ``app`` (lazily
here), so ``import speech_hands`` stays light. The endpoints and limits are in ``docs/serve.md``.
"""

from __future__ import annotations

from typing import Any

from speech_hands.service.limits import ServiceSettings

__all__ = ["ServiceSettings", "create_app"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """:func:`speech_hands.service.app.create_app` (imports FastAPI; a clear error when it is missing)."""
    from speech_hands.service.app import create_app as factory

    return factory(*args, **kwargs)
