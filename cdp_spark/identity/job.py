"""`cdp-spark resolve` and `cdp-spark evaluate identity`."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp_spark import stage_inputs, tables, tracking
from cdp_spark.config import ConfigError
from cdp_spark.identity import health, incremental, registry
from cdp_spark.identity.evaluate import identity_metrics
from cdp_spark.identity.health_report import health_section
from cdp_spark.identity.model import FittedModel
from cdp_spark.identity.resolve import IdentityValues, ResolveResult, identity_values, resolve
from cdp_spark.identity.rules import IdentityConfig, load_identity
from cdp_spark.identity.stable_ids import record_changes
from cdp_spark.lakefiles import LakeFiles
from cdp_spark.ops import StageRun, progress
from cdp_spark.pipeline import Context
from cdp_spark.stage_inputs import StageState

log = logging.getLogger("cdp_spark")

FACT_TABLES = {
    "orders": tables.ORDERS,
    "events": tables.EVENTS,
    "support_tickets": tables.SUPPORT_TICKETS,
    "email_engagement": tables.EMAIL_ENGAGEMENT,
}


def _read_records_file(spark: SparkSession, path: str) -> DataFrame:
    if path.endswith(".csv") or Path(path).is_dir() and any(Path(path).glob("*.csv")):
        return spark.read.option("header", "true").csv(path)
    return spark.read.parquet(path)


# What resolve writes (its own output, and the map it starts from).
IDENTITY_TABLES = (
    tables.IDENTITY_MAP,
    tables.IDENTITY_EDGES,
    tables.IDENTITY_LINEAGE,
    tables.IDENTITY_CHANGES,
    tables.HOT_IDENTIFIERS,
    tables.IDENTITY_STATE,
)


def resolve_settings(config: IdentityConfig, model: FittedModel | None, champion_version: str | None) -> dict:
    """What a resolve's result depends on besides its tables: the identity config, the code, the model given to
    score with (None: trained from the records, deterministic for a seed) and the champion a retrain is gated by."""
    return {
        "config": config.model_dump(mode="json"),
        "code": stage_inputs.code_digest("cdp_spark.identity"),
        "model": None if model is None else hashlib.sha256(model.to_json().encode()).hexdigest(),
        "champion": champion_version,
    }


def _stamped(rows: DataFrame, stage: StageRun) -> DataFrame:
    """A log's rows with the run that wrote them and when, materialized (counted, then appended)."""
    return rows.withColumn("run_id", F.lit(stage.run_id)).withColumn("recorded_at", F.current_timestamp()).checkpoint()


def map_transaction(spark: SparkSession, root: str, log: tables.Table) -> dict[str, str]:
    """The Delta transaction of an append to a log of map changes (``log``: lineage, changes): one per identity map
    version the changes start from."""
    app = f"cdp-resolve-{log.name.removeprefix('identity_')}"
    snapshot = tables.log_snapshot(spark, root, tables.IDENTITY_MAP)
    if snapshot.version() < 0:
        return {"txnAppId": f"{app}:new-map", "txnVersion": "0"}
    return {"txnAppId": f"{app}:{snapshot.metadata().id()}", "txnVersion": str(snapshot.version() + 1)}


def given_model(
    ctx: Context, config: IdentityConfig, source: str, tracker: tracking.Tracking | None
) -> FittedModel | None:
    """The model ``--model`` names (a JSON path or a registered model), checked against ``config``; None without it."""
    ref = getattr(ctx.args, "model", None)
    if not ref:
        return None
    if config.probabilistic is None:
        raise ConfigError(f"--model {ref}: {source} has no probabilistic section to score with a model")
    model = registry.load_model(ref, config.probabilistic, source, LakeFiles(ctx.spark), tracker)
    log.info("[resolve] probabilistic model from %s (not trained)", ref)
    return model


def _full_resolve_at(recorded: dict) -> datetime | None:
    """When the last resolve that resolved everyone ended, from a state a resolve recorded (an incremental run
    carries it on); None in a state recorded before this was."""
    at = recorded.get("full_resolve_at")
    return None if at is None else datetime.fromisoformat(at)


def why_full(
    spark: SparkSession,
    root: str,
    state: StageState,
    before: dict,
    last: tuple[str, dict] | None,
    full: bool,
    scoring: FittedModel | None,
    full_rebuild_days: int | None = None,
) -> str | None:
    """Why this run must resolve everyone, or None when it can continue the last successful run incrementally:
    same identity config, code and model (the one given, or the champion that scored that run), its own tables as
    that run left them (an erasure or a restore since: full), and a full run less than ``full_rebuild_days`` ago
    (the model is retrained only by a full run). ``last``: the last successful run's id and recorded state
    (:func:`stage_inputs.last_state`)."""
    if full:
        return "--full (or --force)"
    if last is None:
        return "no successful resolve to continue"
    run_id, recorded = last
    if full_rebuild_days is not None:
        last_full = _full_resolve_at(recorded)
        age = None if last_full is None else datetime.now(UTC).replace(tzinfo=None) - last_full
        if age is None or age.days >= full_rebuild_days:
            when = "no full resolve on record" if age is None else f"the last full resolve is {age.days} days old"
            return f"{when} (full_rebuild_days: {full_rebuild_days})"
    if stage_inputs.normalized(recorded["settings"]) != stage_inputs.normalized(before["settings"]):
        return f"the identity config, code or model changed since run {run_id}"
    own = [t.full_name for t in state.writes]
    if any(recorded["tables"].get(name) != before["tables"].get(name) for name in own):
        return f"identity tables changed since run {run_id} (an erasure or a restore)"
    if not tables.exists(spark, root, tables.IDENTITY_STATE) or not tables.exists(spark, root, tables.IDENTITY_MAP):
        return f"run {run_id} left no identity state"
    if state.settings["config"].get("probabilistic") is not None and scoring is None:
        return "no model to score with"
    return None


def last_health(spark: SparkSession, root: str) -> dict[str, float]:
    """The health metrics of resolve's last successful run (it recorded its inputs); empty when there is none."""
    if not (tables.exists(spark, root, tables.IDENTITY_HEALTH) and tables.exists(spark, root, tables.STAGE_INPUTS)):
        return {}
    succeeded = tables.read(spark, root, tables.STAGE_INPUTS).where(F.col("stage") == "resolve")
    return health.last_successful(tables.read(spark, root, tables.IDENTITY_HEALTH), succeeded)


def check_health(
    spark: SparkSession,
    root: str,
    config: IdentityConfig,
    result: ResolveResult,
    identity_map: DataFrame,
    guarded: DataFrame,
    stage: StageRun,
) -> list[health.Breach]:
    """Measure this run's identity health against the last successful run, record the metrics and the checks'
    verdicts in ops.identity_health (a run about to fail too), add the report's section; return the breaches.

    Read before resolve replaces them: silver.hot_identifiers is still the last run's.
    """
    previous = last_health(spark, root)
    previous_guarded = (
        tables.read(spark, root, tables.HOT_IDENTIFIERS) if tables.exists(spark, root, tables.HOT_IDENTIFIERS) else None
    )
    metrics = health.health_metrics(
        identity_map, result.edges, guarded, previous_guarded, result.model, result.model_change, previous
    )
    found = health.breaches(metrics, config.health)
    metrics.update(health.check_metrics(metrics, config.health, found))
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [(stage.run_id, name, float(value), now) for name, value in sorted(metrics.items())]
    tables.append(tables.rows_frame(spark, rows, tables.IDENTITY_HEALTH.schema), root, tables.IDENTITY_HEALTH)
    stage.sections.append(health_section(metrics, previous, found))
    return found


def run(ctx: Context, stage: StageRun) -> None:
    args = ctx.args
    if getattr(args, "records", None):
        run_on_file(ctx, stage)
        return
    spark, root = ctx.spark, ctx.root
    source = ctx.config.files.identity
    config = load_identity(source)
    tracker = tracking.connect(ctx.config.mlflow) if config.probabilistic is not None else None
    model = given_model(ctx, config, source, tracker)
    champion_version = None
    if model is None and tracker is not None:
        current = tracking.version_by_alias(tracker.client, config.probabilistic.registered_model, tracking.CHAMPION)
        champion_version = None if current is None else str(current.version)
    state = StageState(
        "resolve",
        reads=(tables.CUSTOMER_RECORDS, *(FACT_TABLES[fact.table] for fact in config.facts)),
        writes=IDENTITY_TABLES,
        settings=resolve_settings(config, model, champion_version),
    )
    rebuild = getattr(args, "full", False) or getattr(args, "force", False)
    before, unchanged = stage_inputs.compare(spark, root, stage, state, rebuild)
    if unchanged:
        return
    champion = None
    if champion_version is not None:
        champion_version, champion = registry.champion(tracker, config.probabilistic)
    last = stage_inputs.last_state(spark, root, state.stage)
    full = why_full(spark, root, state, before, last, rebuild, model or champion, config.full_rebuild_days)
    if full is None:
        log.info("[resolve] incremental: new, changed and removed records against the last run's graph")
    else:
        log.info("[resolve] full: %s", full)
    with stage.step("read silver") as counts:
        records = tables.read(spark, root, tables.CUSTOMER_RECORDS)
        facts = {
            fact.table: tables.read(spark, root, FACT_TABLES[fact.table])
            for fact in config.facts
            if tables.exists(spark, root, FACT_TABLES[fact.table])
        }
        previous = (
            tables.read(spark, root, tables.IDENTITY_MAP).select("record_id", "cdp_id")
            if tables.exists(spark, root, tables.IDENTITY_MAP)
            else None
        )
        counts["records"] = records.count()
    with stage.step("resolve") as counts:
        values = identity_values(records, config, facts)
        hashes = incremental.vertex_hashes(values, config)
        counts["incremental"] = int(full is None)
        if full is None:
            result, identity_state = resolve_incremental(spark, root, config, values, hashes, model or champion, stage)
            counts["dirty_vertices"], counts["resolved_vertices"] = result.dirty, result.resolved
        else:
            result = resolve(
                spark,
                records,
                config,
                previous,
                facts,
                run_id=stage.run_id,
                model=model,
                compare_with=champion,
                values=values,
            )
            identity_state = incremental.state_rows(hashes, result.raw_components)
        identity_map = result.identity_map.checkpoint()
        row = identity_map.agg(F.count("*").alias("vertices"), F.countDistinct("cdp_id").alias("cdp_ids")).first()
        counts["vertices"], counts["cdp_ids"] = row["vertices"], row["cdp_ids"]
        identity_state = identity_state.withColumn("run_id", F.lit(stage.run_id)).checkpoint()
    # Hashed: the table is read by people and other stages, and a hot phone can still be someone's.
    guarded = result.guarded_values.select(
        "identifier",
        F.sha2("value", 256).alias("value_hash"),
        "records",
        "reason",
        F.lit(stage.run_id).alias("run_id"),
    ).checkpoint()
    with stage.step("identity health") as counts:
        found = check_health(spark, root, config, result, identity_map, guarded, stage)
        counts["warnings"] = sum(b.level == health.WARN for b in found)
        counts["failures"] = sum(b.level == health.FAIL for b in found)
    for breach in found:
        if breach.level == health.WARN:
            log.warning("[resolve] identity health: %s", breach)
    if any(b.level == health.FAIL for b in found):
        raise health.IdentityHealthFailed(found)  # before any identity table changes: a bad run publishes nothing
    with stage.step("write identity tables") as counts:
        # result.edges is materialized (clustering checkpointed it): counted and written without recomputation.
        edges = result.edges.withColumn("run_id", F.lit(stage.run_id))
        row = edges.agg(
            F.count_if(F.col("status") == "accepted").alias("accepted"),
            F.count_if(F.col("status") != "accepted").alias("refused"),
        ).first()
        counts["edges_accepted"], counts["edges_refused"] = row["accepted"], row["refused"]
        # The lineage and the records' changes of this map change are appended before the map is replaced: a
        # crash in between leaves the old map, so the rerun computes the same rows, and each append is idempotent
        # per map version (Delta transaction id: the map table's id, and its version the changes start from).
        # Written after the map, a crash in between would lose them (the rerun sees the new map: nothing changed).
        lineage = _stamped(result.lineage, stage)
        changes = _stamped(record_changes(previous, identity_map), stage)
        counts["lineage_events"], counts["records_changed"] = lineage.count(), changes.count()
        if counts["lineage_events"]:
            transaction = map_transaction(spark, root, tables.IDENTITY_LINEAGE)
            tables.append(lineage, root, tables.IDENTITY_LINEAGE, options=transaction)
        if counts["records_changed"]:
            transaction = map_transaction(spark, root, tables.IDENTITY_CHANGES)
            tables.append(changes, root, tables.IDENTITY_CHANGES, options=transaction)
        counts["map_changed"] = tables.overwrite_if_changed(identity_map, root, tables.IDENTITY_MAP)
        # Links can change inside a cluster that stays (an email replaced by a probabilistic match): compared apart.
        counts["edges_changed"] = tables.overwrite_if_changed(edges, root, tables.IDENTITY_EDGES, ignore=("run_id",))
        tables.overwrite(guarded, root, tables.HOT_IDENTIFIERS)
        tables.overwrite_if_changed(identity_state, root, tables.IDENTITY_STATE, ignore=("run_id",))
        counts["guarded_values"] = guarded.count()
        counts["oversized_components"] = result.offending.count()
    if result.trained is not None and tracker is not None:
        with stage.step("register identity model") as counts:
            path = registry.model_path(root, stage.run_id)
            registry.save_model_file(LakeFiles(spark), path, result.trained)
            registered = registry.register(
                tracker, result.trained, champion_version, result.model_change, {"cdp.run_id": stage.run_id}, path
            )
            counts["model_version"] = int(registered.version)
            counts["model_promoted"] = int(registered.decision.promoted)
            if registered.decision.promoted:
                champion_version = str(registered.version)
        log.info(
            "[resolve] probabilistic model trained: %s; registered %s version %s (%s: %s); "
            "reuse it with --model %s or --model %s",
            path,
            config.probabilistic.registered_model,
            registered.version,
            registered.decision.alias,
            registered.decision.reason,
            path,
            config.probabilistic.registered_model,
        )
    settings = resolve_settings(config, model, champion_version)
    full_at = datetime.now(UTC).replace(tzinfo=None) if full is not None else _full_resolve_at(last[1])
    extra = {"full_resolve_at": None if full_at is None else full_at.isoformat()}
    stage_inputs.record(spark, root, stage.run_id, state, before, settings, extra)


@dataclass
class IncrementalResult(ResolveResult):
    dirty: int = 0  # vertices new, changed or gone since the last run
    resolved: int = 0  # vertices re-resolved (the scope)


def resolve_incremental(
    spark: SparkSession,
    root: str,
    config: IdentityConfig,
    values: IdentityValues,
    hashes: DataFrame,
    scoring: FittedModel | None,
    stage: StageRun,
) -> tuple[IncrementalResult, DataFrame]:
    """Re-resolve what changed since the last run (:mod:`cdp_spark.identity.incremental`) and merge it into the
    last run's map, edges and state: the whole new map and edges (``identity_map``, ``edges``; the lineage and the
    offending components of the scope only) and the new state (without run id)."""
    previous_map = tables.read(spark, root, tables.IDENTITY_MAP)
    previous_state = tables.read(spark, root, tables.IDENTITY_STATE)
    previous_guarded = (
        tables.read(spark, root, tables.HOT_IDENTIFIERS) if tables.exists(spark, root, tables.HOT_IDENTIFIERS) else None
    )
    hashes = hashes.checkpoint()
    with progress("[resolve] incremental scope (new and changed records, what they reach)"):
        scope, dirty = incremental.scope(
            values,
            hashes,
            config,
            previous_state,
            previous_map.select("record_id", "cdp_id"),
            previous_guarded,
            scoring,
        )
        replaced = scope.record_ids.unionByName(dirty).distinct().checkpoint()
        n_dirty, n_scope = dirty.count(), scope.record_ids.count()
    log.info("[resolve] incremental: %d vertices new, changed or gone; re-resolving %d", n_dirty, n_scope)
    scoped = resolve(
        spark,
        values.records,
        config,
        previous_map.select("record_id", "cdp_id"),
        run_id=stage.run_id,
        model=scoring,
        values=values,
        scope=scope,
    )
    edges = (
        tables.read(spark, root, tables.IDENTITY_EDGES)
        .drop("run_id")
        .join(replaced.select(F.col("record_id").alias("src_record_id")), "src_record_id", "left_anti")
        .join(replaced.select(F.col("record_id").alias("dst_record_id")), "dst_record_id", "left_anti")
        .unionByName(scoped.edges)
    )
    state = incremental.merged(
        previous_state.drop("run_id"),
        replaced,
        incremental.state_rows(hashes.join(scope.record_ids, "record_id", "left_semi"), scoped.raw_components),
    )
    result = IncrementalResult(
        **{f.name: getattr(scoped, f.name) for f in fields(ResolveResult)},
        dirty=n_dirty,
        resolved=n_scope,
    )
    result.identity_map = incremental.merged(previous_map, replaced, scoped.identity_map)
    result.edges = edges.select(*scoped.edges.columns).checkpoint()
    return result, state


def run_on_file(ctx: Context, stage: StageRun) -> None:
    """Resolve any Parquet/CSV file of person records: writes ``record_id, cdp_id`` and the edges to --out."""
    args = ctx.args
    if not (args.id_column and args.config and args.out):
        raise ConfigError("resolve --records needs --id-column, --config and --out")
    spark = ctx.spark
    config = load_identity(args.config).model_copy(update={"record_id": args.id_column})
    needs_registry = getattr(args, "model", None) and registry.is_registry_reference(args.model)
    model = given_model(ctx, config, args.config, tracking.connect(ctx.config.mlflow) if needs_registry else None)
    with stage.step("resolve file") as counts:
        records = _read_records_file(spark, args.records)
        result = resolve(spark, records, config, run_id=stage.run_id, model=model)
        out = args.out.rstrip("/")
        result.identity_map.select(F.col("record_id"), "cdp_id").write.mode("overwrite").parquet(f"{out}/identity_map")
        result.edges.write.mode("overwrite").parquet(f"{out}/edges")
        counts["records"] = spark.read.parquet(f"{out}/identity_map").count()
        if result.trained is not None:
            # no registry for an ad hoc file: the model goes beside the output, for --model next time
            registry.save_model_file(LakeFiles(spark), f"{out}/identity_model.json", result.trained)
            log.info("[resolve] probabilistic model trained: %s/identity_model.json (reuse it with --model)", out)


def evaluate(ctx: Context, stage: StageRun) -> dict:
    """Compare silver.identity_map with ground truth (``--truth``, default the generated sample's); print JSON and
    record the metrics. Only when asked (`cdp-spark evaluate`): a production lakehouse has no truth."""
    spark = ctx.spark
    truth_path = getattr(ctx.args, "truth", None) or str(Path(ctx.config.sample_path) / "_truth" / "records")
    if not LakeFiles(spark).exists(truth_path):
        raise ConfigError(
            f"evaluate: no ground truth at {truth_path} (written by `cdp-spark generate`; or pass --truth PATH)"
        )
    truth = spark.read.parquet(truth_path).select("record_id", F.col("person_id").cast("string"))
    predicted = tables.read(spark, ctx.root, tables.IDENTITY_MAP).select("record_id", "cdp_id")
    with stage.step("evaluate identity") as counts:
        metrics = identity_metrics(predicted, truth)
        counts.update(metrics)
    print(json.dumps(metrics, indent=2))
    return metrics


def run_evaluate(ctx: Context, stage: StageRun) -> None:
    evaluate(ctx, stage)
