#!/usr/bin/env bash
# Run benchmarks/run.py on a Spark standalone cluster started on this machine, then stop the cluster.
#
#   bash benchmarks/standalone.sh --people 30000 --stages ingest standardize resolve --workdir DIR
#
# A master and WORKERS workers (WORKER_CORES cores and WORKER_MEMORY each), from the pyspark of the venv
# (sbin/spark-daemon.sh), like tests/test_cluster.py; the driver stays in this process (client mode) and the
# executors import cdp_spark from the same venv. Arguments go to benchmarks/run.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORKERS=${WORKERS:-2}
WORKER_CORES=${WORKER_CORES:-1}
WORKER_MEMORY=${WORKER_MEMORY:-6g}
SPARK_HOME=$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
home=$(mktemp -d "${TMPDIR:-/tmp}/cdp-standalone-XXXXXX")
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
webui=$(free_port)
export SPARK_HOME SPARK_CONF_DIR=$home/conf SPARK_LOCAL_IP=127.0.0.1 SPARK_LOG_DIR=$home/logs \
  SPARK_PID_DIR=$home/pids SPARK_WORKER_DIR=$home/work SPARK_DAEMON_MEMORY=512m \
  PYSPARK_PYTHON="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" # not realpath: a venv python is a symlink
mkdir -p "$SPARK_CONF_DIR" # empty: no spark-defaults.conf of the machine leaks in
daemon() { bash "$SPARK_HOME/sbin/spark-daemon.sh" "$@" >/dev/null; }
stop() {
  for i in $(seq "$WORKERS"); do daemon stop org.apache.spark.deploy.worker.Worker "$i" || true; done
  daemon stop org.apache.spark.deploy.master.Master 1 || true
}
trap stop EXIT
daemon start org.apache.spark.deploy.master.Master 1 --host 127.0.0.1 --port "$port" --webui-port "$webui"
for i in $(seq "$WORKERS"); do
  daemon start org.apache.spark.deploy.worker.Worker "$i" --host 127.0.0.1 --cores "$WORKER_CORES" \
    --memory "$WORKER_MEMORY" --webui-port "$(free_port)" "spark://127.0.0.1:$port"
done
for _ in $(seq 90); do
  alive=$(curl -fs "http://127.0.0.1:$webui/json/" | "$PY" -c \
    'import json, sys; print(sum(w["state"] == "ALIVE" for w in json.load(sys.stdin)["workers"]))' || echo 0)
  [ "$alive" = "$WORKERS" ] && break
  sleep 1
done
[ "$alive" = "$WORKERS" ] || { echo "workers did not register; logs in $SPARK_LOG_DIR" >&2; exit 1; }
echo "standalone cluster spark://127.0.0.1:$port: $WORKERS workers x $WORKER_CORES cores, $WORKER_MEMORY" >&2
"$PY" benchmarks/run.py --master "spark://127.0.0.1:$port" --cores $((WORKERS * WORKER_CORES)) \
  --spark-conf "spark.executor.cores=$WORKER_CORES" --spark-conf "spark.executor.memory=$WORKER_MEMORY" "$@"
