"""Peer benchmark: the same person records resolved by Splink 4 (DuckDB), Splink 4 (Spark) and cdp-spark.

    bash benchmarks/peer_splink_venv.sh        # builds .venv-splink once (Splink 4, DuckDB, pyspark 4.1.4)
    export CDP_SPARK_JARS_REPOSITORIES=file:///absolute/path/to/maven-repo   # if your mirror lacks GraphFrames
    .venv/bin/python benchmarks/peer_splink.py --records 100000 1000000 --workdir /tmp/peer-splink \
        [--engines cdp-spark splink-duckdb splink-spark] [--driver-memory 8g]

Per size it prints each engine's wall time (one subprocess per engine, the whole command: Python and JVM
start included), the ratios cdp-spark/Splink-DuckDB and cdp-spark/Splink-Spark, and pairwise
precision/recall/F1 and cluster-level counts of each against the generator's ground truth, all three scored
by one function, ``cdp_spark.identity.evaluate.identity_metrics`` (Splink's ``cluster_id`` stands for
``cdp_id``). Not a test: it prints numbers.

Data (``prepare``, cached in ``--workdir``, skipped when present): ``cdp-spark generate`` (days 3, seed 42)
for about ``N / 3.7 * 1.1`` people (silver holds ~3.7 customer records per person at days=3), then ingest
and standardize into ``people-P/lakehouse``; ``records-N/records.parquet`` is ``silver.customer_records``
(record_id and the columns conf/identity.yaml names) cut to whole people, taken in a seeded random order
while the total stays <= N (so a few records under N, never a person split by the cut);
``records-N/truth.parquet`` is ``record_id, person_id`` of exactly those records. Facts (cookie records) are
not part of it: ``cdp-spark resolve --records`` ignores them.

Engines (each runs in its own virtualenv: Splink never enters the product's dependencies):
- ``cdp-spark``: ``.venv/bin/cdp-spark resolve --records records.parquet --id-column record_id
  --config conf/identity.yaml --out DIR`` (lakehouse root in the work dir for its run metrics).
- ``splink-duckdb`` / ``splink-spark``: this file run by ``.venv-splink/bin/python`` with ``--worker``;
  Splink's Spark backend registers its Scala similarity UDFs from the Spark-4 jar in Splink's wheel.

What "equivalent" means here (every setting is read from the identity config, not copied):
- Probabilistic model: the same ``probabilistic.blocking_rules`` (as SQL strings) and the same comparisons
  with the same levels: ``exact`` -> null / exact / else; ``string`` -> null / exact / Jaro-Winkler >= t
  (highest first) / Levenshtein <= d / else; ``date`` -> null / exact / off by one day / day and month
  swapped (same year) / else. No term-frequency adjustments (cdp-spark has none).
- Training as cdp-spark does it: u from random pairs (``max_pairs_for_u``, seed 42), m by one EM session
  per probabilistic blocking rule (u fixed; Splink leaves out the comparisons the rule reads). Splink 4 does
  not keep lambda from EM, so lambda is fitted as cdp-spark fits it: EM over all candidate pairs of the
  probabilistic rules with m and u fixed, lambda over all N(N-1)/2 pairs (run on the distinct match
  weights of Splink's predictions, a few hundred rows). Pairs with match probability >= ``match_threshold``
  are links.
- Deterministic identifiers (``identifiers`` with a record column: account_id, loyalty_id, email): extra
  blocking rules ``l.<col> = r.<col>`` on a guarded copy of the column, and every pair agreeing on one is a
  link whatever its score. The guard nulls values cdp-spark refuses: the ``blocked`` list, and values held
  by more than ``hot_value_threshold`` records. Not reproduced: cdp-spark's per-profile ``limit``s and the
  split of components larger than ``clustering.max_component_size`` (Splink has neither).
- Clustering: connected components of the links (Splink's ``cluster_pairwise_predictions_at_threshold``).
- Spark settings alike for both Spark engines: ``--master`` (local[2]), ``--driver-memory``,
  ``--shuffle-partitions``; DuckDB uses its default threads (all cores).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ENGINES = ["cdp-spark", "splink-duckdb", "splink-spark"]
RECORDS_PER_PERSON = 3.7  # silver customer records per person at days=3 (11,148 for 3,000 people)
DAYS, SEED = 3, 42
PREPARED = "_PREPARED"  # marker written last by prepare: a half-written folder is redone


# --------------------------------------------------------------------------------------------------
# Orchestrator (product venv)
# --------------------------------------------------------------------------------------------------


def people_for(records: int) -> int:
    """People to generate for about ``records`` silver customer records (10% margin, rounded up to 100)."""
    return math.ceil(records / RECORDS_PER_PERSON * 1.1 / 100) * 100


def run_timed(command: list[str], log: Path, env: dict[str, str] | None = None) -> float:
    """Run one command to completion, output to ``log``; its wall seconds, or an error naming the log."""
    started = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - started
    if code != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise RuntimeError(f"{' '.join(command[:4])} ... exited {code} (log {log}):\n{tail}")
    return seconds


def splink_python() -> str:
    """Build (or reuse: the script keeps a stamp of its pins) .venv-splink and return its python."""
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "peer_splink_venv.sh")], cwd=REPO, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmarks/peer_splink_venv.sh failed:\n{done.stdout}\n{done.stderr}")
    return str(REPO / done.stdout.strip().splitlines()[-1])


def splink_spec(identity_path: str) -> dict[str, Any]:
    """What the Splink workers need from the identity config, validated by cdp-spark's own loader."""
    from cdp_spark.identity.rules import load_identity

    config = load_identity(identity_path)
    prob = config.probabilistic
    if prob is None:
        raise SystemExit(f"{identity_path}: the peer benchmark needs a probabilistic section")
    return {
        "record_id": "record_id",
        "identifiers": [
            {"name": i.name, "column": i.column, "blocked": i.blocked} for i in config.identifiers if i.column
        ],
        "hot_value_threshold": config.hot_value_threshold,
        "blocking_rules": prob.blocking_rules,
        "comparisons": [c.model_dump(mode="json") for c in prob.comparisons],
        "match_threshold": prob.match_threshold,
        "max_pairs_for_u": prob.max_pairs_for_u,
        "em_max_iterations": prob.em_max_iterations,
        "em_tolerance": prob.em_tolerance,
        "prior_match_probability": prob.prior_match_probability,
        "seed": prob.seed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--workdir", default="/tmp/cdp-peer-splink", help="data, outputs and logs (kept)")
    parser.add_argument("--engines", nargs="+", default=ENGINES, choices=ENGINES)
    parser.add_argument("--identity", default="conf/identity.yaml")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    parser.add_argument(
        "--worker", choices=["prepare", "score", "splink-duckdb", "splink-spark"], help=argparse.SUPPRESS
    )
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.workdir).resolve()
    if args.worker == "prepare":
        prepare(work, args.records[0], args)
        return
    if args.worker == "score":
        score(work, args.records[0], args.engines)
        return
    if args.worker:
        splink_resolve(args.worker, work / f"records-{args.records[0]}", Path(args.out), args)
        return

    os.chdir(REPO)
    work.mkdir(parents=True, exist_ok=True)
    spark_args = ["--master", args.master, "--driver-memory", args.driver_memory]
    spark_args += ["--shuffle-partitions", str(args.shuffle_partitions)]
    python_splink = splink_python() if any(e.startswith("splink") for e in args.engines) else None
    results = []
    for n in args.records:
        data = work / f"records-{n}"
        if not (data / PREPARED).exists():
            print(f"prepare {n:,} records ({people_for(n):,} people) in {data} ...", flush=True)
            seconds = run_timed(
                [sys.executable, __file__, "--worker", "prepare", "--records", str(n), "--workdir", str(work),
                 "--identity", args.identity, *spark_args],
                work / f"prepare-{n}.log",
            )  # fmt: skip
            print(f"prepared in {seconds:.0f} s", flush=True)
        spec = data / "splink_spec.json"
        spec.write_text(json.dumps(splink_spec(args.identity), indent=2))
        records = json.loads((data / PREPARED).read_text())["records"]
        row: dict[str, Any] = {"records": records, "seconds": {}}
        for engine in args.engines:
            out = data / f"out-{engine}"
            for leftover in (out, data / f"{engine}-checkpoints", data / "cdp-spark-lakehouse"):
                shutil.rmtree(leftover, ignore_errors=True)
            if engine == "cdp-spark":
                command = [
                    str(REPO / ".venv" / "bin" / "cdp-spark"),
                    "--set", f"lakehouse.root={data / 'cdp-spark-lakehouse'}",
                    "--set", f"spark.master={args.master}",
                    "--set", f"spark.driver_memory={args.driver_memory}",
                    "--set", f"spark.shuffle_partitions={args.shuffle_partitions}",
                    "resolve", "--records", str(data / "records.parquet"), "--id-column", "record_id",
                    "--config", args.identity, "--out", str(out),
                ]  # fmt: skip
            else:
                command = [python_splink, __file__, "--worker", engine, "--records", str(n), "--workdir", str(work),
                           "--out", str(out), *spark_args]  # fmt: skip
            seconds = run_timed(command, data / f"{engine}.log")
            row["seconds"][engine] = round(seconds, 1)
            print(json.dumps({"records": records, "engine": engine, "wall_s": round(seconds, 1)}), flush=True)
        score_log = data / "score.log"
        run_timed(
            [sys.executable, __file__, "--worker", "score", "--records", str(n), "--workdir", str(work),
             "--engines", *args.engines],
            score_log,
        )  # fmt: skip
        row["metrics"] = json.loads((data / "metrics.json").read_text())
        secs = row["seconds"]
        for peer in ("splink-duckdb", "splink-spark"):
            if "cdp-spark" in secs and peer in secs:
                row[f"cdp-spark/{peer}"] = round(secs["cdp-spark"] / secs[peer], 2)
        results.append(row)
        print(json.dumps(row, indent=2), flush=True)
    for row in results:
        print_table(row, args.engines)


def print_table(row: dict[str, Any], engines: list[str]) -> None:
    columns = ["wall_s", "pairwise_precision", "pairwise_recall", "pairwise_f1", "clusters", "people",
               "people_split", "clusters_merging_people"]  # fmt: skip
    print(f"\n{row['records']:,} records")
    print(f"{'engine':<15}" + "".join(f"{c:>25}" for c in columns))
    for engine in engines:
        values = {"wall_s": row["seconds"][engine], **row["metrics"][engine]}
        print(f"{engine:<15}" + "".join(f"{values[c]:>25}" for c in columns))
    for peer in ("splink-duckdb", "splink-spark"):
        if f"cdp-spark/{peer}" in row:
            print(f"wall time cdp-spark/{peer}: {row[f'cdp-spark/{peer}']}")


# --------------------------------------------------------------------------------------------------
# prepare and score (product venv, one Spark session each)
# --------------------------------------------------------------------------------------------------


def prepare(work: Path, n: int, args: argparse.Namespace) -> None:
    """Generate, ingest and standardize enough people; write whole people's records (<= n) and their truth."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from cdp_spark import tables
    from cdp_spark.config import load_config
    from cdp_spark.identity.blocking_rule import parse_blocking_rule
    from cdp_spark.identity.rules import load_identity
    from cdp_spark.ops import configure_logging
    from cdp_spark.pipeline import Context, run_stage

    configure_logging()
    people = people_for(n)
    base = work / f"people-{people}"
    sample, root = base / "sample", base / "lakehouse"
    config = load_config(
        "conf",
        None,
        [f"spark.master={args.master}", f"landing={sample}", f"lakehouse.root={root}",
         f"spark.driver_memory={args.driver_memory}", f"spark.shuffle_partitions={args.shuffle_partitions}"],
    )  # fmt: skip
    ctx = Context(config, argparse.Namespace(people=people, days=DAYS, seed=SEED, out=str(sample)))
    if not (base / PREPARED).exists():  # one people-P folder serves every N that rounds to it
        shutil.rmtree(base, ignore_errors=True)
        run_stage("generate", ctx)
        for stage in ("ingest", "standardize"):
            ctx.args = argparse.Namespace()
            run_stage(stage, ctx)
        (base / PREPARED).write_text("{}")
    identity = load_identity(args.identity)
    wanted = [i.column for i in identity.identifiers if i.column]
    if identity.probabilistic is not None:
        wanted += [c for comparison in identity.probabilistic.comparisons for c in comparison.source_columns]
        wanted += [c for rule in identity.probabilistic.blocking_rules for c in parse_blocking_rule(rule).columns]
    columns = list(dict.fromkeys(["record_id", *wanted]))
    spark = ctx.spark
    silver = tables.read(spark, ctx.root, tables.CUSTOMER_RECORDS).select(*columns)
    truth = spark.read.parquet(str(sample / "_truth" / "records")).select("record_id", "person_id")
    labelled = silver.join(truth, "record_id")
    # whole people in a seeded random order, while the running total of records stays <= n
    per_person = labelled.groupBy("person_id").agg(F.count("*").alias("n"))
    order = Window.orderBy(F.xxhash64("person_id", F.lit(SEED)), "person_id")
    kept = per_person.withColumn("total", F.sum("n").over(order)).where(F.col("total") <= n).select("person_id")
    chosen = labelled.join(kept, "person_id").cache()
    data = work / f"records-{n}"
    shutil.rmtree(data, ignore_errors=True)
    chosen.select(*columns).coalesce(1).write.parquet(str(data / "records.parquet"))
    chosen.select("record_id", "person_id").coalesce(1).write.parquet(str(data / "truth.parquet"))
    counts = chosen.agg(F.count("*").alias("records"), F.countDistinct("person_id").alias("people")).first()
    (data / PREPARED).write_text(json.dumps({"records": counts["records"], "people": counts["people"]}))
    print(json.dumps({"records": counts["records"], "people": counts["people"], "generated_people": people}))


def score(work: Path, n: int, engines: list[str]) -> None:
    """Score every engine's ``record_id, cluster`` output with cdp-spark's identity_metrics; metrics.json."""
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from cdp_spark.identity.evaluate import identity_metrics

    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    data = work / f"records-{n}"
    truth = spark.read.parquet(str(data / "truth.parquet")).select("record_id", F.col("person_id").cast("string"))
    metrics = {}
    for engine in engines:
        if engine == "cdp-spark":
            predicted = spark.read.parquet(str(data / f"out-{engine}" / "identity_map"))
        else:
            predicted = spark.read.parquet(str(data / f"out-{engine}" / "clusters.parquet"))
            predicted = predicted.withColumnRenamed("cluster_id", "cdp_id")
        predicted = predicted.select(F.col("record_id").cast("string"), F.col("cdp_id").cast("string"))
        metrics[engine] = identity_metrics(predicted, truth)
    (data / "metrics.json").write_text(json.dumps(metrics, indent=2))
    spark.stop()


# --------------------------------------------------------------------------------------------------
# Splink workers (.venv-splink)
# --------------------------------------------------------------------------------------------------

_DATE_LEVELS = {
    "off_by_one_day": None,  # Splink's AbsoluteDateDifferenceLevel (below exact, <= 1 day is exactly 1 day)
    "day_month_swapped": "year({l}) = year({r}) and month({l}) = day({r}) and day({l}) = month({r})",
    "same_year_month": "year({l}) = year({r}) and month({l}) = month({r})",
    "same_year": "year({l}) = year({r})",
}


def splink_comparison(spec: dict[str, Any]) -> Any:
    """One cdp-spark comparison as a Splink comparison with the same levels, best first."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    column, kind = spec["column"], spec["kind"]
    if column is None:
        raise SystemExit(f"comparison {spec['name']}: multi-column comparisons are not translated to Splink")
    levels = [cll.NullLevel(column)]
    if kind in ("exact", "date") or spec["exact"]:
        levels.append(cll.ExactMatchLevel(column))
    if kind == "string":
        levels += [cll.JaroWinklerLevel(column, t) for t in sorted(spec["jaro_winkler"] or [], reverse=True)]
        levels += [cll.LevenshteinLevel(column, d) for d in sorted(spec["levenshtein"] or [])]
    elif kind == "date":
        for name in spec["date_levels"] or ["off_by_one_day", "day_month_swapped"]:
            if _DATE_LEVELS[name] is None:
                levels.append(cll.AbsoluteDateDifferenceLevel(column, input_is_string=False, threshold=1, metric="day"))
            else:
                sql = _DATE_LEVELS[name].format(l=f"{column}_l", r=f"{column}_r")
                levels.append(cll.CustomLevel(sql, label_for_charts=name))
    elif kind != "exact":
        raise SystemExit(f"comparison {spec['name']}: kind {kind} is not translated to Splink")
    levels.append(cll.ElseLevel())
    return cl.CustomComparison(comparison_levels=levels, output_column_name=spec["name"])


def guarded_sql(spec: dict[str, Any], table: str) -> str:
    """The records plus ``det_<name>``: each deterministic identifier without blocked and hot values."""
    extra = []
    for identifier in spec["identifiers"]:
        column = identifier["column"]
        blocked = ", ".join("'" + v.replace("'", "''") + "'" for v in identifier["blocked"])
        refused = f"count(*) over (partition by {column}) > {spec['hot_value_threshold']}"
        if blocked:
            refused = f"{column} in ({blocked}) or {refused}"
        extra.append(f"case when {refused} then null else {column} end as det_{identifier['name']}")
    return f"select *, {', '.join(extra)} from {table}"


def fit_lambda(weights: list[tuple[float, int]], spec: dict[str, Any], total_pairs: int) -> float:
    """Lambda by EM over all pairs, m and u fixed (as cdp-spark's final EM): weights are the match weights
    without the prior, each with its number of candidate pairs."""
    observed = sum(count for _, count in weights)
    prior = spec["prior_match_probability"] or 0.1 * observed / total_pairs
    for _ in range(spec["em_max_iterations"]):
        logit = math.log2(prior / (1 - prior))
        matched = sum(count / (1 + 2.0 ** -(weight + logit)) for weight, count in weights)
        new_prior = min(max(matched / total_pairs, 1e-15), 1 - 1e-9)
        change, prior = abs(new_prior - prior) / prior, new_prior
        if change < spec["em_tolerance"]:
            break
    return prior


def splink_resolve(engine: str, data: Path, out: Path, args: argparse.Namespace) -> None:
    """Train Splink as cdp-spark trains, link, cluster; write ``out/clusters.parquet`` (record_id, cluster_id)."""
    from splink import Linker, SettingsCreator
    from splink.clustering import cluster_pairwise_predictions_at_threshold

    spec = json.loads((data / "splink_spec.json").read_text())
    records_path = str(data / "records.parquet")
    if engine == "splink-duckdb":
        import duckdb
        from splink import DuckDBAPI

        con = duckdb.connect()
        con.execute(f"create table raw_records as select * from read_parquet('{records_path}/*.parquet')")
        con.execute(f"create table records as {guarded_sql(spec, 'raw_records')}")
        db_api, records = DuckDBAPI(connection=con), "records"

        def rows(sql: str) -> list[tuple]:
            return con.sql(sql).fetchall()

        def table(sql: str) -> Any:
            return con.sql(sql)

    else:
        from pyspark.sql import SparkSession
        from splink import SparkAPI
        from splink.backends.spark import similarity_jar_location

        spark = (
            SparkSession.builder.master(args.master)
            .appName("splink-peer")
            .config("spark.jars", similarity_jar_location())
            .config("spark.driver.memory", args.driver_memory)
            .config("spark.sql.shuffle.partitions", str(args.shuffle_partitions))
            .config("spark.default.parallelism", str(args.shuffle_partitions))
            .config("spark.ui.enabled", "false")
            .getOrCreate()
        )
        spark.sparkContext.setLogLevel("WARN")
        spark.sparkContext.setCheckpointDir(str(out.parent / f"{engine}-checkpoints"))
        spark.read.parquet(records_path).createOrReplaceTempView("raw_records")
        records = spark.sql(guarded_sql(spec, "raw_records"))
        records.createOrReplaceTempView("records")
        db_api = SparkAPI(spark_session=spark)

        def rows(sql: str) -> list[tuple]:
            return [tuple(r) for r in spark.sql(sql).collect()]

        def table(sql: str) -> Any:
            return spark.sql(sql)

    n = rows("select count(*) from raw_records")[0][0]
    total_pairs = n * (n - 1) // 2
    probabilistic_rules = list(spec["blocking_rules"])
    deterministic_rules = [f"l.det_{i['name']} = r.det_{i['name']}" for i in spec["identifiers"]]
    start_prior = 1e-4  # a placeholder: EM sessions do not keep lambda, fit_lambda replaces it
    settings = SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name=spec["record_id"],
        probability_two_random_records_match=start_prior,
        blocking_rules_to_generate_predictions=probabilistic_rules + deterministic_rules,
        comparisons=[splink_comparison(c) for c in spec["comparisons"]],
        retain_matching_columns=True,
        additional_columns_to_retain=[f"det_{i['name']}" for i in spec["identifiers"]],
        retain_intermediate_calculation_columns=False,
    )
    linker = Linker(records, settings, db_api)
    linker.training.estimate_u_using_random_sampling(max_pairs=spec["max_pairs_for_u"], seed=spec["seed"])
    for rule in probabilistic_rules:
        linker.training.estimate_parameters_using_expectation_maximisation(rule)
    predictions = linker.inference.predict()
    pred = predictions.physical_name
    start_logit = math.log2(start_prior / (1 - start_prior))
    probabilistic_pairs = f"cast(match_key as int) < {len(probabilistic_rules)}"
    weights = rows(
        f"select match_weight - ({start_logit}), count(*) from {pred} where {probabilistic_pairs} group by 1"
    )
    prior = fit_lambda([(float(w), int(c)) for w, c in weights], spec, total_pairs)
    threshold = spec["match_threshold"]
    # p >= threshold  <=>  weight without the prior + logit2(lambda) >= logit2(threshold)
    accept = math.log2(threshold / (1 - threshold)) - math.log2(prior / (1 - prior)) + start_logit
    shared = " or ".join(f"det_{i['name']}_l = det_{i['name']}_r" for i in spec["identifiers"]) or "false"
    edges = table(
        f"select record_id_l, record_id_r, 1.0 as match_probability from {pred} "
        f"where ({probabilistic_pairs} and match_weight >= {accept}) or {shared}"
    )
    nodes = table("select record_id from records")
    clusters = cluster_pairwise_predictions_at_threshold(
        nodes, edges, db_api, node_id_column_name="record_id", threshold_match_probability=None
    )
    out.mkdir(parents=True, exist_ok=True)
    target = out / "clusters.parquet"
    if engine == "splink-duckdb":
        con.execute(
            f"copy (select record_id, cast(cluster_id as varchar) as cluster_id from {clusters.physical_name}) "
            f"to '{target}' (format parquet)"
        )
    else:
        clusters.as_spark_dataframe().selectExpr("record_id", "cast(cluster_id as string) as cluster_id").write.parquet(
            str(target)
        )
    accepted = rows(f"select count(*) from {pred} where {probabilistic_pairs} and match_weight >= {accept}")[0][0]
    print(json.dumps({"engine": engine, "records": n, "lambda": prior, "candidate_pairs": sum(c for _, c in weights),
                      "probabilistic_links": accepted}))  # fmt: skip


if __name__ == "__main__":
    main()
