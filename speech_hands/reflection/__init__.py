"""The reflection step: what it sees (``base``), the one decision rule (``decision``), and the
policies and rewrite strategies that emit the first-token action.

- ``action_tokens``: the first-token decision of a model fine-tuned with the three action tokens;
- ``confidence``: the hand-set baseline from the tools' own confidences;
- ``learned``: the trained embedded reflector and its rescoring / MBR rewrite (the default);
- ``chat_llm``: a text chat LLM with the action tokens (the paper's no-audio variant);
- ``alignment`` + ``rewrite``: ROVER-style weighted alignment voting over every candidate;
- ``vote``: the majority vote over sampled reflections.
"""
