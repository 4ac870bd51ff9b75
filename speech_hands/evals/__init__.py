"""The evaluation harness (``speech-hands eval``): run an agent over a manifest, resumably
(``runner``), analyse routing against gold actions (``routing``), compare two runs (``compare``),
write reports with tables and plots (``report``), and score JASCO co-reasoning with LLM judges
(``jasco``). The definitions it reports (WER, gold labels, QA matching, intervals) live in
:mod:`speech_hands.metrics`."""
