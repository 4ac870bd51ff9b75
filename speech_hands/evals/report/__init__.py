"""Evaluation reports: what one run of the agent over a manifest scored, in the files of its folder.

A report holds the systems table (internal top-1, every external top-1, the recorded systems, the
agent, best-of-two, the oracle router and, for ASR, the oracle over all N-best candidates; WER with
error counts for ASR, accuracy per category for AudioQA), per-dataset tables when the manifest mixes
datasets, the agent's relative reduction over the best single system with paired-bootstrap intervals,
the gap closed toward the oracle router, the routing analysis (first-token action vs gold: confusion,
per-action precision/recall/F1) and where the final answers came from. It is written as
``report.json``, ``report.md``, ``items.csv`` (one row per item) and PNG plots.

One job per module, each depending only on those before it: :mod:`.model` (the typed result),
:mod:`.build` (numbers from item results), :mod:`.markdown` and :mod:`.plots` (renderers of the
model) and :mod:`.write` (the folder's files).
"""

from speech_hands.evals.report.build import build_report
from speech_hands.evals.report.model import EvalReport, SystemScore
from speech_hands.evals.report.write import write_report

__all__ = ["EvalReport", "SystemScore", "build_report", "write_report"]
