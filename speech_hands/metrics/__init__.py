"""The method's definitions, shared by evaluation and training: word error rates (``wer``), gold
action labels (``labels``), audio-QA answer matching (``qa``) and paired-bootstrap intervals
(``significance``). Pure functions over text and counts; no models, no files."""
