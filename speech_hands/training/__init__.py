"""Training the embedded learned reflector: data recipe, pool records, fitting, cross-validation.

Run it with ``speech-hands train-reflector`` (docs/reflector.md). Needs scikit-learn (a core
dependency) and, for the synthesized part of the recipe, the ``espeak-ng`` program.
"""
