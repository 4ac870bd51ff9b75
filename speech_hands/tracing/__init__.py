"""Reading a run back from the checkpointer as a decision trace (``trace``) and showing it in the
terminal (``render``): why an input was routed the way it was, without re-running anything."""
