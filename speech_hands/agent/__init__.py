"""Public API: the agent and its settings."""

from speech_hands.agent.speech_hands import SpeechHands, StreamEvent
from speech_hands.config import AgentConfig

__all__ = ["AgentConfig", "SpeechHands", "StreamEvent"]
