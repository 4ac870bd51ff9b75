"""Reading a run back from the checkpointer as a decision trace (``trace``), showing it in the
terminal (``render``), and the trace viewer: every run as a flat record joined with its ``eval run``
report (``runs``, with word diffs from ``diff``), one self-contained HTML page over them (``viewer``)
and that page served on localhost (``server``); without re-running anything."""
