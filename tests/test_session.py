"""Proof that the jars load in the test session: Delta write/read/MERGE and GraphFrames connected components; the
session's settings, and the Python worker daemon of local masters."""

import sys
import zipfile
import zipimport

import pandas as pd
from chispa import assert_df_equality
from delta.tables import DeltaTable
from graphframes import GraphFrame
from pyspark.sql.functions import pandas_udf

from cdp_spark import worker_daemon
from cdp_spark.config import SparkConfig
from cdp_spark.session import DELTA_PACKAGE, GRAPHFRAMES_PACKAGE, LOG4J2_CONF, embedded_conf


def test_delta_write_read_merge(spark, tmp_path):
    path = str(tmp_path / "people")
    spark.createDataFrame([(1, "ann"), (2, "bob")], "id long, name string").write.format("delta").save(path)
    updates = spark.createDataFrame([(2, "robert"), (3, "cy")], "id long, name string")
    (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(updates.alias("s"), "t.id = s.id")
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .execute()
    )
    expected = spark.createDataFrame([(1, "ann"), (2, "robert"), (3, "cy")], "id long, name string")
    assert_df_equality(spark.read.format("delta").load(path), expected, ignore_row_order=True)
    assert DeltaTable.forPath(spark, path).history().count() == 2


def test_graphframes_connected_components(spark):
    vertices = spark.createDataFrame([(i,) for i in range(1, 7)], "id long")
    edges = spark.createDataFrame([(1, 2), (2, 3), (4, 5)], "src long, dst long")
    components = GraphFrame(vertices, edges).connectedComponents(algorithm="graphx", max_iter=20)
    expected = spark.createDataFrame([(1, 1), (2, 1), (3, 1), (4, 4), (5, 4), (6, 6)], "id long, component long")
    assert_df_equality(components.select("id", "component"), expected, ignore_row_order=True, ignore_nullable=True)


def test_embedded_conf_names_packages_and_extra_repositories(monkeypatch):
    monkeypatch.setenv("CDP_SPARK_JARS_REPOSITORIES", "file:///opt/maven, https://mirror.example/maven2")
    conf = embedded_conf(SparkConfig(packages=["org.postgresql:postgresql:42.7.4"]))
    assert conf["spark.jars.packages"].split(",") == [
        DELTA_PACKAGE,
        GRAPHFRAMES_PACKAGE,
        "org.postgresql:postgresql:42.7.4",
    ]
    assert conf["spark.jars.repositories"] == "file:///opt/maven,https://mirror.example/maven2"
    assert conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    # Delta's snapshot rebuilds and VACUUM's folder listing in as many tasks as a shuffle, not 50 and 10,000.
    assert conf["spark.databricks.delta.snapshotPartitions"] == "8"
    assert conf["spark.sql.sources.parallelPartitionDiscovery.parallelism"] == "8"


def test_the_driver_jvm_logs_through_the_masking_configuration_and_it_masks_messages_and_stack_traces(spark):
    """The test session is the embedded runtime: its JVM runs with the shipped log4j2 file, whose console layout
    masks what cdp_spark.redact masks in a message and in the exception a failed task logs."""
    jvm = spark._jvm
    configuration = jvm.org.apache.logging.log4j.LogManager.getContext(False).getConfiguration()
    assert configuration.getConfigurationSource().getLocation() == str(LOG4J2_CONF)
    thrown = jvm.java.lang.RuntimeException(
        "[CAST_INVALID_INPUT] The value 'jane.doe@example.com' of the type STRING; jdbc:postgresql://u:s3cr3t@db/x?"
        "password=hunter2; call +1 415 555 2671"
    )
    event = (
        jvm.org.apache.logging.log4j.core.impl.Log4jLogEvent.newBuilder()
        .setLoggerName("org.apache.spark.scheduler.TaskSetManager")
        .setLevel(jvm.org.apache.logging.log4j.Level.WARN)
        .setMessage(jvm.org.apache.logging.log4j.message.SimpleMessage("Lost task 0.0 for JANE.DOE@example.com"))
        .setThrown(thrown)
        .build()
    )
    logged = configuration.getAppender("console").getLayout().toSerializable(event)
    assert "WARN TaskSetManager: Lost task 0.0 for ***@example.com" in logged
    assert "java.lang.RuntimeException: [CAST_INVALID_INPUT] The value '***@example.com' of the type" in logged
    assert "jdbc:postgresql://u:***@db/x?password=***; call +***" in logged
    assert "\tat " in logged  # the stack trace is still there
    for raw in ("jane.doe", "JANE.DOE", "s3cr3t", "hunter2", "555 2671"):
        assert raw not in logged


def test_embedded_conf_uses_a_local_jar_folder_instead_of_maven(tmp_path):
    (tmp_path / "delta.jar").write_bytes(b"")
    conf = embedded_conf(SparkConfig(jars_dir=str(tmp_path)))
    assert conf["spark.jars"] == str((tmp_path / "delta.jar").resolve())
    assert "spark.jars.packages" not in conf


def test_case_mapping_without_icu_agrees_with_unicode(spark):
    # The session turns ICU case mappings off (a 12 s first call per JVM); the JVM's mappings must still fold
    # accented, German and Greek text as Unicode does (Python's str methods implement the same tables).
    assert spark.conf.get("spark.sql.icu.caseMappings.enabled") == "false"
    words = ["ÉMILE Ørsted", "straße", "ΟΔΥΣΣΕΥΣ", "Łódź", "ǅemal"]
    df = spark.createDataFrame([(w,) for w in words], "w string")
    rows = df.selectExpr("w", "lower(w) AS lo", "upper(w) AS up").collect()
    assert [(r.lo, r.up) for r in rows] == [(w.lower(), w.upper()) for w in words]


def test_local_python_workers_run_under_the_daemon_that_skips_the_zip_reread(spark):
    @pandas_udf("string")
    def worker_setup(ids: pd.Series) -> pd.Series:
        main = sys.modules["__main__"].__spec__.name
        return ids.map(lambda _: f"{main} {zipimport.zipimporter.invalidate_caches.__name__}")

    assert {r[0] for r in spark.range(4, numPartitions=2).select(worker_setup("id")).collect()} == {
        "cdp_spark.worker_daemon invalidate_caches_when_changed"
    }
    assert embedded_conf(SparkConfig(master="local[2]"))["spark.python.daemon.module"] == "cdp_spark.worker_daemon"
    # A cluster's executors may not have this package before their first task: Spark's own daemon there.
    assert "spark.python.daemon.module" not in embedded_conf(SparkConfig(master="spark://master:7077"))


def test_a_zip_is_read_again_only_when_its_file_changed(tmp_path, monkeypatch):
    archive = tmp_path / "lib.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("one.py", "X = 1\n")
    importer = zipimport.zipimporter(str(archive))
    reads = []
    monkeypatch.setattr(
        worker_daemon, "_reread", lambda imp: reads.append(imp) or zipimport.zipimporter.invalidate_caches(imp)
    )
    worker_daemon.invalidate_caches_when_changed(importer)
    worker_daemon.invalidate_caches_when_changed(importer)
    assert len(reads) == 1  # the first call has nothing to compare with; the second finds the same file
    with zipfile.ZipFile(archive, "a") as zf:  # a --py-files zip replaced between two tasks
        zf.writestr("two.py", "Y = 2\n")
    assert importer.find_spec("two") is None  # not seen yet: the directory read before
    worker_daemon.invalidate_caches_when_changed(importer)
    assert len(reads) == 2 and importer.find_spec("two") is not None
