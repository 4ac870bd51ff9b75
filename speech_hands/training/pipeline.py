"""The recipe driver: items -> records -> cross-validation -> final fit -> artifact."""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from speech_hands.errors import ConfigurationError
from speech_hands.training.cross_validation import cross_validate, nested_selection
from speech_hands.training.fitting import (
    NBEST_SELECTION,
    NBEST_WEIGHTS,
    fit_nbest,
    fit_reflector,
    fit_risk_policy,
    make_examples,
    rescoring_fit,
)
from speech_hands.training.recipe import Recipe, recipe_items
from speech_hands.training.records import PoolRunner, build_records

#: rewrite configurations cross-validated by the recipe: (prompted re-decode in the pool, selection,
#: policy, posterior). Policy "linear" is the logistic-regression reflector over all features; "risk"
#: is the Bayes decision (the action whose answer has the fewest expected word errors under the pool's
#: posterior), only meaningful with MBR selection. Posterior "scores": every candidate scored under
#: both Whisper models (the scoring pass); "nbest": from the tools' own N-best scores, no scoring pass.
REWRITE_CONFIGS: dict[str, tuple[bool, str, str, str]] = {
    "rescore": (False, "map", "linear", "scores"),
    "rescore+prompted": (True, "map", "linear", "scores"),
    "mbr": (False, "mbr", "linear", "scores"),
    "mbr+prompted": (True, "mbr", "linear", "scores"),
    "mbr/risk": (False, "mbr", "risk", "scores"),
    "mbr+prompted/risk": (True, "mbr", "risk", "scores"),
}
#: configurations trained only when asked by name (``--rewrite``), not in ``auto``'s menu (so the full
#: artifact's recipe run is unchanged): the fast default agent's, with no scoring pass at inference
#: (``reflector-fast-v1.json``: ``train-reflector --rewrite nbest-mbr/risk --out ...``)
EXTRA_CONFIGS: dict[str, tuple[bool, str, str, str]] = {
    "nbest-mbr/risk": (False, "mbr", "risk", "nbest"),
}
ALL_CONFIGS = {**REWRITE_CONFIGS, **EXTRA_CONFIGS}

MODEL_NAMES = {"linear": "multinomial-logistic-regression", "risk": "expected-risk-bayes-decision"}


def final_fit(
    records: list,
    recipe: Recipe,
    *,
    prompted: bool,
    mode: str = "map",
    policy: str = "linear",
    posterior: str = "scores",
) -> tuple[Any, dict[str, float], dict]:
    """Rescoring weights, alpha and the reflector on all records; ``info`` holds C, T and alpha (and,
    for ``posterior="nbest"``, the N-best posterior's weights and alpha under ``nbest``)."""
    nbest, extra = None, {}
    if posterior == "nbest":
        nbest, extra = fit_nbest(records, recipe)
        weights, selection = dict(NBEST_WEIGHTS), NBEST_SELECTION
    else:
        weights, selection, _ = rescoring_fit(records, recipe, prompted=prompted, mode=mode)
    examples = make_examples(records, weights, prompted=prompted, selection=selection, nbest=nbest)
    if policy == "risk":
        model, info = fit_risk_policy(examples)
    else:
        model, info = fit_reflector(examples, sorted(examples[0].features), recipe.c_grid, recipe.seed)
    return model, weights, {**info, **extra, "selection": selection.mode, "alpha": selection.alpha, "policy": policy}


def run_recipe(
    recipe: Recipe,
    *,
    shared: Path,
    work_dir: Path,
    out: Path | None,
    limit: int | None = None,
    rewrite: str = "auto",
    nested: bool = False,
    progress: Callable[[], Any] | None = None,
    console: Any = None,
) -> dict:
    """Run the whole recipe; returns the report (and writes the artifact to ``out`` unless None)."""
    from speech_hands.reflection.learned.policy import ReflectorArtifact

    items = recipe_items(recipe, shared, work_dir, limit=limit)
    cache = work_dir / "records.jsonl"
    if progress is not None:
        with progress() as bar:
            task = bar.add_task("decode + score", total=len(items))
            records = build_records(
                items, cache, lambda: PoolRunner(recipe.pool), recipe.pool, lambda _: bar.advance(task)
            )
    else:
        records = build_records(items, cache, lambda: PoolRunner(recipe.pool), recipe.pool)
    if rewrite != "auto" and rewrite not in ALL_CONFIGS:
        raise ConfigurationError(f"unknown rewrite config {rewrite!r}; choose auto or one of {', '.join(ALL_CONFIGS)}")
    configs = REWRITE_CONFIGS if rewrite == "auto" else {rewrite: ALL_CONFIGS[rewrite]}
    reports = {}
    for name, (prompted, mode, policy, posterior) in configs.items():
        if console is not None:
            console.print(f"cross-validating rewrite config {name} ...")
        reports[name] = cross_validate(
            records, recipe, prompted=prompted, mode=mode, policy=policy, posterior=posterior
        )
    cv = {name: rep.summary() for name, rep in reports.items()}
    nested_result = None
    if nested and len(configs) > 1:
        if console is not None:
            console.print("nested config selection (inner CV per held-out speaker) ...")
        nested_result = nested_selection(records, recipe, configs, reports)
    agent = "agent (learned reflector)"
    chosen = min(cv, key=lambda k: (cv[k]["wer"][agent], list(configs).index(k)))
    prompted, mode, policy, posterior = configs[chosen]
    model, weights, info = final_fit(records, recipe, prompted=prompted, mode=mode, policy=policy, posterior=posterior)
    counts: dict[str, int] = {}
    for r in records:
        counts[r.item.origin] = counts.get(r.item.origin, 0) + 1
    artifact = ReflectorArtifact(
        model=MODEL_NAMES[policy],
        features=model.feature_names,
        mean=[round(float(v), 8) for v in model.mean],
        scale=[round(float(v), 8) for v in model.scale],
        coef=[[round(float(v), 8) for v in row] for row in model.coef],
        intercept=[round(float(v), 8) for v in model.intercept],
        temperature=round(model.temperature, 6),
        scorers={}
        if posterior == "nbest"
        else {recipe.pool.internal_name: recipe.pool.internal, **{n: s for s, n in recipe.pool.externals}},
        weights=weights,
        selection=info["selection"],
        alpha=info["alpha"],
        prompted=prompted,
        nbest=info.get("nbest"),
        recipe=recipe.model_dump(mode="json"),
        recipe_hash=recipe.hash(),
        training={"records": counts, **info, "python": platform.python_version()},
        metrics={
            k: {kk: v[kk] for kk in ("wer", "agent_over_best_single", "gap_closed", "per_action")}
            for k, v in cv.items()
        },
    )
    if out is not None:
        artifact.save(out)
    result = {"chosen": chosen, "cv": cv, "artifact_checksum": artifact.checksum(), "weights": weights, "fit": info}
    if nested_result is not None:
        result["nested_selection"] = nested_result
    return result
