"""Public API: the agent, the voice assistant over it, and their settings."""

from speech_hands.agent.assistant import TurnResult, VoiceAssistant
from speech_hands.agent.speech_hands import AgentHealth, SpeechHands, StreamEvent
from speech_hands.config import AgentConfig

__all__ = ["AgentConfig", "AgentHealth", "SpeechHands", "StreamEvent", "TurnResult", "VoiceAssistant"]
