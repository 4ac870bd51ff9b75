"""The learned reflector: shipped artifact, predictions, calibration, and a tiny run of the recipe code."""

from __future__ import annotations

import random

import numpy as np
import pytest

from speech_hands.audio import virtual_audio
from speech_hands.reflection.base import ReflectionInput
from speech_hands.reflection.decision import ACTIONS, softmax
from speech_hands.reflection.learned.policy import LearnedPolicy, ReflectorArtifact
from speech_hands.reflection.learned.rescoring import RescoringRewriter
from speech_hands.training.corpus import TrainingItem
from speech_hands.training.fitting import fit_temperature
from speech_hands.training.pipeline import final_fit
from speech_hands.training.recipe import Recipe
from speech_hands.training.records import PoolRecord
from speech_hands.types import Action, Hypothesis, ToolOutput


def test_shipped_artifact_loads_and_is_small():
    art = ReflectorArtifact.load()
    assert art.format_version == 1 and len(art.actions) == 3
    assert len(art.coef) == 3 and all(len(row) == len(art.features) for row in art.coef)
    assert len(art.mean) == len(art.scale) == len(art.features)
    assert set(art.scorers) == {"whisper-base", "whisper-tiny.en"}
    assert art.recipe_hash and art.recipe["seed"] == 0
    assert len(art.model_dump_json()) < 50_000  # KBs, not MBs


def _policy(art: ReflectorArtifact) -> LearnedPolicy:
    return LearnedPolicy(art, RescoringRewriter([], weights=art.weights))


def test_predictions_are_probabilities_and_deterministic():
    art = ReflectorArtifact.load()
    policy = _policy(art)
    rng = np.random.default_rng(0)
    for _ in range(20):
        feats = {n: float(m + s * rng.normal()) for n, m, s in zip(art.features, art.mean, art.scale)}
        probs = policy.predict_proba(feats)
        assert set(probs) == set(Action)
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-9)
        assert all(0.0 <= p <= 1.0 for p in probs.values())
        assert policy.predict_proba(feats) == probs


def test_temperature_fit_recovers_overconfidence():
    rng = np.random.default_rng(1)
    true_logits = rng.normal(size=(400, 3))
    y = np.array([rng.choice(3, p=softmax(z)) for z in true_logits])
    assert fit_temperature(true_logits * 3.0, y) == pytest.approx(3.0, rel=0.35)


# ---------------------------------------------------------------- a tiny run of the recipe code path


def _record(uid: str, speaker: str, ref: str, base: list[str], tiny: list[str], seed: int) -> PoolRecord:
    rng = random.Random(seed)
    texts = sorted(set(base) | set(tiny))
    scores = {
        "whisper-base": {
            t: [-0.3 * len(t.split()) - (0 if t == ref else 2 + rng.random()), -0.2, float(len(t.split())), -1.0]
            for t in texts
        },
        "whisper-tiny.en": {
            t: [-0.4 * len(t.split()) - (0 if t == ref else 1 + rng.random()), -0.3, float(len(t.split())), -1.0]
            for t in texts
        },
    }

    def out(tool: str, role: str, hyps: list[str]) -> ToolOutput:
        return ToolOutput(
            tool=tool,
            role=role,
            hypotheses=[Hypothesis(text=t, score=-0.1 * (i + 1), source=tool, rank=i) for i, t in enumerate(hyps)],
        )

    item = TrainingItem(id=uid, group=speaker, origin="librispeech", audio=f"/nonexistent/{uid}.flac", reference=ref)
    return PoolRecord(
        item=item,
        pool_key="test",
        internal=out("whisper-base", "internal", base),
        externals=[out("whisper-tiny.en", "external", tiny)],
        scores=scores,
        audio_stats={"duration_s": 3.0, "snr_proxy": 0.5 + rng.random()},
    )


def _records() -> list[PoolRecord]:
    recs = []
    for k in range(18):
        ref = f"the cat number {k} sat on the mat"
        wrong = f"the cap number {k} sat on a mat"
        if k % 3 == 0:  # internal right
            base, tiny = [ref, wrong], [wrong, ref]
        elif k % 3 == 1:  # external right
            base, tiny = [wrong, ref], [ref, wrong]
        else:  # both right
            base, tiny = [ref], [ref]
        recs.append(_record(f"{k}", f"spk{k % 3}", ref, base, tiny, seed=k))
    return recs


def test_recipe_code_path_is_seeded_and_yields_a_working_policy(tmp_path):
    from speech_hands.training.cross_validation import cross_validate

    recipe = Recipe(c_grid=(0.1, 1.0))
    records = _records()
    # two corpora: speaker spk2 comes from a manifest ("digits"), the others from LibriSpeech
    records = [
        r.model_copy(update={"item": r.item.model_copy(update={"origin": "manifest", "detail": "digits"})})
        if r.item.group == "spk2"
        else r
        for r in records
    ]
    cv = cross_validate(records, recipe, prompted=False)
    report = cv.summary()
    assert report["wer"]["agent (learned reflector)"] <= report["wer"]["internal (whisper-base)"]
    assert set(report["per_action"]) == {a.value for a in ACTIONS}
    # the per-corpus breakdown partitions the same utterances
    assert set(report["per_corpus"]) == {"librispeech", "digits"}
    for system, whole in cv.systems.items():
        parts = [cv.corpora[c][system] for c in ("librispeech", "digits")]
        assert (sum(p.errors for p in parts), sum(p.words for p in parts)) == (whole.errors, whole.words)
    assert report["per_corpus"]["digits"]["words"] == 6 * len(records[2].item.reference.split())
    # per held-out speaker: every utterance once, errors adding up to the corpus totals
    speakers = report["per_speaker"]
    assert set(speakers) == {"spk0", "spk1", "spk2"} and sum(v["items"] for v in speakers.values()) == 18
    assert sum(v["agent_errors"] for v in speakers.values()) == cv.systems["agent (learned reflector)"].errors
    best = min(("internal (whisper-base)", "external top-1 (whisper-tiny.en)"), key=lambda k: report["wer"][k])
    assert sum(v["best_single_errors"] for v in speakers.values()) == cv.systems[best].errors

    model_a, weights_a, _ = final_fit(records, recipe, prompted=False)
    model_b, weights_b, _ = final_fit(records, recipe, prompted=False)
    assert weights_a == weights_b
    np.testing.assert_allclose(model_a.coef, model_b.coef)

    art = ReflectorArtifact(
        features=model_a.feature_names,
        mean=model_a.mean.tolist(),
        scale=model_a.scale.tolist(),
        coef=model_a.coef.tolist(),
        intercept=model_a.intercept.tolist(),
        temperature=model_a.temperature,
        scorers={"whisper-base": "bundled:base", "whisper-tiny.en": "bundled:tiny.en"},
        weights=weights_a,
        prompted=False,
    )
    art.save(tmp_path / "r.json")
    loaded = ReflectorArtifact.load(tmp_path / "r.json")
    assert loaded.checksum() == art.checksum()

    # the policy on a record's candidates, with the stored scores standing in for the models
    rec = records[1]  # external right
    rewriter = RescoringRewriter([], weights=loaded.weights)
    rewriter.scorers = {name: _StoredScorer(rec, name) for name in rec.scores}  # type: ignore[assignment]
    policy = LearnedPolicy(loaded, rewriter)
    inp = ReflectionInput(
        audio=virtual_audio(rec.item.id), question=None, internal=rec.internal, externals=rec.externals
    )
    decision = policy.reflect(inp)
    assert sum(decision.probs.values()) == pytest.approx(1.0)
    assert decision.action in (Action.EXTERNAL, Action.REWRITE)
    assert rewriter.rewrite(inp).text.lower().startswith("the cat number 1")


class _StoredScorer:
    def __init__(self, record: PoolRecord, name: str) -> None:
        self.fn = record.score_fn()
        self.name = name

    def score(self, audio, texts):
        return self.fn(self.name, texts)


def test_mbr_recipe_code_path_fits_alpha_inside_folds_and_is_seeded():
    from speech_hands.training.cross_validation import cross_validate

    recipe = Recipe(c_grid=(1.0,), mbr_alphas=(0.3, 1.0), weight_grid_tiny=(0.0, 0.5), weight_grid_words=(0.0, 1.0))
    records = _records()
    for policy in ("risk", "linear"):
        report = cross_validate(records, recipe, prompted=False, mode="mbr", policy=policy).summary()
        assert report["wer"]["agent (learned reflector)"] <= report["wer"]["internal (whisper-base)"]
        assert all(f["alpha"] in recipe.mbr_alphas for f in report["folds"])  # chosen per fold, from the grid
    model_a, weights_a, info_a = final_fit(records, recipe, prompted=False, mode="mbr", policy="risk")
    _, weights_b, info_b = final_fit(records, recipe, prompted=False, mode="mbr", policy="risk")
    assert (weights_a, info_a) == (weights_b, info_b)
    assert info_a["selection"] == "mbr" and info_a["alpha"] in recipe.mbr_alphas
    assert model_a.feature_names == ["risk_internal", "risk_external", "risk_rewrite"]
    np.testing.assert_array_equal(model_a.coef, -np.eye(3))  # the Bayes decision: no learned weights
    assert model_a.temperature > 0


def test_recipe_trains_on_any_manifest_with_speakers(shared_data, tmp_path):
    """``train-reflector --data`` takes a built-in dataset or a manifest: speakers become CV groups."""
    import json

    from speech_hands.errors import ConfigurationError
    from speech_hands.training.corpus import real_items
    from speech_hands.training.recipe import recipe_items

    fsdd = real_items("fsdd", shared_data)
    assert len(fsdd) == 300 and all(i.real and i.origin == "manifest" for i in fsdd)
    assert {i.group for i in fsdd} == {i.id.split("_")[1] for i in fsdd}  # speaker names, not items
    assert {i.reference for i in fsdd} == {
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
    }
    # the default recipe still reads the LibriSpeech folder
    dev = recipe_items(Recipe(), shared_data, tmp_path)
    assert len(dev) == 60 and all(i.origin == "librispeech" and i.real for i in dev)
    # several corpora: concatenated, each item knows its corpus (CV reports per corpus)
    both = recipe_items(Recipe(data=("librispeech_other_dev", "fsdd")), shared_data, tmp_path)
    assert len(both) == 360 and {i.corpus for i in both} == {"librispeech", "fsdd-test"}
    with pytest.raises(ConfigurationError, match="occurs in more than one"):
        real_items(("fsdd", "fsdd"), shared_data)

    import shutil

    audio = tmp_path / "clips" / "3_theo_0.wav"  # manifest paths are relative to its folder
    audio.parent.mkdir()
    shutil.copy(shared_data / "fsdd" / "recordings" / audio.name, audio)
    rows = [
        {"id": "a", "audio": "clips/3_theo_0.wav", "reference": "three", "speaker": "theo"},
        {"id": "b", "audio": "clips/3_theo_0.wav", "reference": "three"},  # no speaker: its own group
        {"id": "c", "reference": "three", "speaker": "theo"},  # no audio: nothing to decode, skipped
    ]
    manifest = tmp_path / "mine.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    items = recipe_items(Recipe(data=str(manifest)), shared_data, tmp_path)
    assert [(i.id, i.group) for i in items] == [("a", "theo"), ("b", "b")]
    assert items[0].audio == str(audio)

    only_qa = tmp_path / "qa.jsonl"
    only_qa.write_text(
        json.dumps({"id": "q", "audio": "clips/3_theo_0.wav", "question": "what?", "choices": ["x"], "answer": "x"})
        + "\n"
    )
    with pytest.raises(ConfigurationError, match="no items with both audio and a reference"):
        real_items(str(only_qa), shared_data)
    with pytest.raises(ConfigurationError, match="unknown dataset"):
        real_items("no-such-dataset", shared_data)


def test_records_cache_skips_a_half_written_last_line(tmp_path):
    """A recipe killed mid-write leaves a truncated line: the cache still loads, that item is redone."""
    from speech_hands.training.records import load_records

    records = _records()[:2]
    cache = tmp_path / "records.jsonl"
    lines = [r.model_dump_json() for r in records]
    cache.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[1][: len(lines[1]) // 2], encoding="utf-8")
    loaded = load_records(cache)
    assert [r.item.id for r in loaded] == [r.item.id for r in records]
    assert load_records(cache, pool_key="another config") == []


def test_nbest_recipe_code_path_fits_the_posterior_inside_folds_and_uses_no_stored_score():
    """``--rewrite nbest-mbr/risk`` (the fast default's config): the N-best posterior's weights and alpha
    come from the grids, per fold; the stored scores are never read (the agent has none)."""
    from speech_hands.reflection.learned.features import NBEST_SCORER
    from speech_hands.training.cross_validation import cross_validate

    recipe = Recipe(c_grid=(1.0,), mbr_alphas=(0.3, 1.0), weight_grid_tiny=(0.5, 1.0))
    records = [r.model_copy(update={"scores": {}}) for r in _records()]  # no scoring pass at all
    report = cross_validate(records, recipe, prompted=False, mode="mbr", policy="risk", posterior="nbest").summary()
    assert report["wer"]["agent (learned reflector)"] <= report["wer"]["internal (whisper-base)"]
    for fold in report["folds"]:
        assert fold["nbest"]["alpha"] in recipe.mbr_alphas
        assert fold["nbest"]["weights"]["whisper-tiny.en"] in recipe.weight_grid_tiny
        assert fold["weights"] == {NBEST_SCORER: 1.0}
    model, weights, info = final_fit(records, recipe, prompted=False, mode="mbr", policy="risk", posterior="nbest")
    assert final_fit(records, recipe, prompted=False, mode="mbr", policy="risk", posterior="nbest")[2] == info
    art = ReflectorArtifact(
        model="expected-risk-bayes-decision",
        features=model.feature_names,
        mean=model.mean.tolist(),
        scale=model.scale.tolist(),
        coef=model.coef.tolist(),
        intercept=model.intercept.tolist(),
        temperature=model.temperature,
        scorers={},
        weights=weights,
        selection="mbr",
        alpha=info["alpha"],
        prompted=False,
        nbest=info["nbest"],
    )
    # the posterior is part of what decides predictions: another one is another checksum
    other = art.model_copy(update={"nbest": {**info["nbest"], "alpha": 99.0}})
    assert art.checksum() != other.checksum()
    # the policy on a record's candidates, with no scorer
    rec = records[1]  # external right
    policy = LearnedPolicy(art, RescoringRewriter([], weights=art.weights, nbest=art.nbest_posterior()))
    inp = ReflectionInput(
        audio=virtual_audio(rec.item.id), question=None, internal=rec.internal, externals=rec.externals
    )
    decision = policy.reflect(inp)
    assert decision.policy == "learned-reflector" and sum(decision.probs.values()) == pytest.approx(1.0)
