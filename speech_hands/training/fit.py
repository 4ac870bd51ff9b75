"""The recipe driver: items -> records -> cross-validation -> final fit -> artifact."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any, Callable

from speech_hands.training.evaluate import cross_validate
from speech_hands.training.recipe import Recipe, recipe_items
from speech_hands.training.records import PoolRunner, build_records
from speech_hands.training.train import fit_reflector, make_examples, rescoring_weights

REWRITE_CONFIGS = {"rescore": False, "rescore+prompted": True}


def final_fit(records: list, recipe: Recipe, *, prompted: bool) -> tuple[Any, dict[str, float], dict]:
    weights = rescoring_weights(records, recipe, prompted=prompted)
    examples = make_examples(records, weights, prompted=prompted)
    names = sorted(examples[0].features)
    model, info = fit_reflector(examples, names, recipe.c_grid, recipe.seed)
    return model, weights, info


def run_recipe(
    recipe: Recipe,
    *,
    shared: Path,
    work_dir: Path,
    out: Path | None,
    limit: int | None = None,
    rewrite: str = "auto",
    progress: Callable[[], Any] | None = None,
    console: Any = None,
) -> dict:
    """Run the whole recipe; returns the report (and writes the artifact to ``out`` unless None)."""
    from speech_hands.reflection.learned import ReflectorArtifact

    items = recipe_items(recipe, shared, work_dir, limit=limit)
    cache = work_dir / "records.jsonl"
    if progress is not None:
        with progress() as bar:
            task = bar.add_task("decode + score", total=len(items))
            records = build_records(items, cache, lambda: PoolRunner(recipe.pool), recipe.pool, lambda _: bar.advance(task))
    else:
        records = build_records(items, cache, lambda: PoolRunner(recipe.pool), recipe.pool)
    configs = REWRITE_CONFIGS if rewrite == "auto" else {rewrite: REWRITE_CONFIGS[rewrite]}
    cv: dict[str, dict] = {}
    for name, prompted in configs.items():
        if console is not None:
            console.print(f"cross-validating rewrite config {name} ...")
        cv[name] = cross_validate(records, recipe, prompted=prompted).summary()
    agent = "agent (learned reflector)"
    chosen = min(cv, key=lambda k: (cv[k]["wer"][agent], list(configs).index(k)))
    model, weights, info = final_fit(records, recipe, prompted=configs[chosen])
    counts: dict[str, int] = {}
    for r in records:
        counts[r.item.origin] = counts.get(r.item.origin, 0) + 1
    artifact = ReflectorArtifact(
        features=model.feature_names,
        mean=[round(float(v), 8) for v in model.mean],
        scale=[round(float(v), 8) for v in model.scale],
        coef=[[round(float(v), 8) for v in row] for row in model.coef],
        intercept=[round(float(v), 8) for v in model.intercept],
        temperature=round(model.temperature, 6),
        scorers={recipe.pool.internal_name: recipe.pool.internal, **{n: s for s, n in recipe.pool.externals}},
        weights=weights,
        prompted=configs[chosen],
        recipe=recipe.model_dump(mode="json"),
        recipe_hash=recipe.hash(),
        training={"records": counts, **info, "python": platform.python_version()},
        metrics={k: {kk: v[kk] for kk in ("wer", "agent_over_best_single", "gap_closed", "per_action")} for k, v in cv.items()},
    )
    if out is not None:
        artifact.save(out)
    return {"chosen": chosen, "cv": cv, "artifact_checksum": artifact.checksum(), "weights": weights, "fit": info}
