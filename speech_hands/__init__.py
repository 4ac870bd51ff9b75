"""speech-hands: self-reflection routing for speech recognition and audio reasoning.

The public surface is small: :class:`SpeechHands` (the agent), :class:`VoiceAssistant` (a multi-turn
conversation over it), :class:`AgentConfig`, and the result types. Everything else lives in sub-packages (``backends``, ``reflection``, ``graphs``, ``evals``, ``training``; docs/architecture.md).
"""

from speech_hands.agent import AgentConfig, SpeechHands, StreamEvent, TurnResult, VoiceAssistant
from speech_hands.errors import AudioError, ConfigurationError, SpeechHandsError
from speech_hands.graphs.context import RunContext
from speech_hands.graphs.events import parse_event
from speech_hands.types import Action, AgentResult, AudioRef, Hypothesis, Reflection, ToolOutput

__version__ = "0.1.0"

__all__ = [
    "Action",
    "AgentConfig",
    "AgentResult",
    "AudioError",
    "AudioRef",
    "ConfigurationError",
    "Hypothesis",
    "Reflection",
    "RunContext",
    "SpeechHands",
    "SpeechHandsError",
    "StreamEvent",
    "ToolOutput",
    "TurnResult",
    "VoiceAssistant",
    "__version__",
    "parse_event",
]
