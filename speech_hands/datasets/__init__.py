"""Where evaluation and training items come from: the JSONL manifest format (``manifest``) and the
built-in datasets read from the shared data folder, plus the paper's N-best files (``builtin``)."""
