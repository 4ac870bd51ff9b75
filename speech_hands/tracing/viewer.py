"""The trace viewer: one self-contained HTML page over a :class:`~speech_hands.tracing.runs.RunCatalog`.

The page is the static template ``viewer.html`` (shipped as package data) with the runs embedded as
JSON; its script draws the run list, the filters and each run's detail (audio player, candidates side
by side with word diffs, action probabilities, vote tally, rewrite rounds, the route drawn over the
graph, per-node latency, failed tools and notes). It fetches nothing: ``speech-hands export-html``
writes it to a file, ``speech-hands ui`` (:mod:`speech_hands.tracing.server`) serves it with the
audio. Audio is only linked (``audio_src``), never copied into the page or the trace store.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from speech_hands.tracing.runs import LOW_CONFIDENCE, RunCatalog, RunView

__all__ = ["LAYOUT", "file_audio_src", "page_data", "render_page", "write_page"]

TEMPLATE = Path(__file__).with_name("viewer.html")

#: Where each node of the routing graph is drawn: (column, row). A node missing here (a graph that
#: grew a node) is drawn in an extra row below, so the viewer never hides part of a route.
LAYOUT: dict[str, tuple[int, int]] = {
    "__start__": (0, 0),
    "prepare": (1, 0),
    "perceive": (2, 0),
    "gather": (3, 0),
    "reflect": (4, 0),
    "vote": (5, 0),
    "use_internal": (6, -1),
    "use_external": (6, 0),
    "rewrite": (6, 1),
    "finish": (7, 0),
    "__end__": (8, 0),
}


def file_audio_src(run: RunView) -> str | None:
    """A ``file://`` link to the run's audio (for a page opened from disk)."""
    if not run.audio_path:
        return None
    return Path(run.audio_path).expanduser().resolve().as_uri()


def _layout(nodes: list[str]) -> dict[str, tuple[int, int]]:
    layout = {n: LAYOUT[n] for n in nodes if n in LAYOUT}
    extra = [n for n in nodes if n not in LAYOUT]
    for column, node in enumerate(extra, start=1):
        layout[node] = (column, 2)
    return layout


def page_data(
    catalog: RunCatalog,
    *,
    audio_src: Callable[[RunView], str | None] = file_audio_src,
    low_confidence: float = LOW_CONFIDENCE,
) -> dict[str, Any]:
    """The JSON the page script reads."""
    runs = []
    for run in catalog.runs:
        data = json.loads(run.model_dump_json())  # JSON proper: an infinite score becomes null
        data["audio_src"] = audio_src(run)
        runs.append(data)
    return {
        "trace_db": catalog.trace_db,
        "reports": catalog.reports,
        "low_confidence": low_confidence,
        "graph_nodes": catalog.graph_nodes,
        "graph_edges": [[s, t] for s, t, _ in catalog.graph_edges],
        "layout": _layout(catalog.graph_nodes),
        "runs": runs,
    }


@lru_cache(maxsize=1)
def _template() -> str:
    return TEMPLATE.read_text(encoding="utf-8")


def _script_json(data: Any) -> str:
    """JSON that is safe inside a ``<script>`` element (no ``</script>``, no HTML comment openers)."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def render_page(
    catalog: RunCatalog,
    *,
    title: str = "speech-hands traces",
    audio_src: Callable[[RunView], str | None] = file_audio_src,
    low_confidence: float = LOW_CONFIDENCE,
) -> str:
    """The whole page as one HTML string."""
    data = page_data(catalog, audio_src=audio_src, low_confidence=low_confidence)
    page = _template().replace("__TITLE__", html.escape(title))
    head, marker, tail = page.partition("__VIEWER_DATA__")
    assert marker, "viewer.html lost its data placeholder"
    return head + _script_json(data) + tail


def write_page(catalog: RunCatalog, out: str | Path, **options: Any) -> Path:
    """Write the page to ``out`` (its folder is created); audio is linked by ``file://`` URL."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_page(catalog, **options), encoding="utf-8")
    return out
