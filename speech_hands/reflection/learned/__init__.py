"""The embedded learned reflector: the first-token decision and the MBR rewrite on a CPU.

No omni model fine-tuned with the action tokens runs on a 2-core CPU, so the default agent learns the
decision from what such a model would see. At inference (``SpeechHands.default()``):

1. ``scoring``: every candidate of every tool is scored under each Whisper model (teacher forcing);
2. ``features``: the candidates are pooled (deduplicated after normalisation), rescored with a
   learned linear function, and described by ~30 numbers (scores, agreement, audio statistics);
3. ``mbr``: a posterior over the pool gives each candidate's expected word errors; the ``<rewrite>``
   answer is the minimum-Bayes-risk candidate;
4. ``policy``: :class:`LearnedPolicy` turns the features into P(internal), P(external), P(rewrite)
   (the Bayes decision over the three answers, or a logistic regression) from a versioned JSON
   artifact (``speech_hands/data/reflector/``); ``rescoring`` holds the rewrite strategies.

How it is trained (:mod:`speech_hands.training`, ``speech-hands train-reflector``): a recipe of real
utterances with exact references (plus augmented and synthesized copies) is run through the same
pool once (cached records); gold actions follow the paper's label rule
(:mod:`speech_hands.metrics.labels`); the rescoring weights, the MBR temperature and the reflector are
fitted and cross-validated leaving one real speaker out; the artifact stores the recipe, its hash
and the CV metrics, so the command reproduces the shipped file byte for byte. Recipe, numbers and
caveats: ``docs/reflector.md``.
"""

from speech_hands.reflection.learned.policy import LearnedPolicy, ReflectorArtifact, build_learned

__all__ = ["LearnedPolicy", "ReflectorArtifact", "build_learned"]
