"""PySpark in local mode (`local[2]`): `vrae_edge.spark.assign` on the shipped fleet and on a
generated multi-file Parquet fleet equals `edge assign` exactly, for 1 and 4 partitions and
several Arrow batch sizes. Skipped without PySpark and a JDK unless REQUIRE_SPARK=1."""

import os
import shutil
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import FLEET, MODEL, run_assign

if os.environ.get("REQUIRE_SPARK") != "1":
    pytest.importorskip("pyspark")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("no JDK (java) for PySpark", allow_module_level=True)

from vrae_edge import spark as vspark  # noqa: E402


@pytest.fixture(scope="module")
def spark():
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    s = (
        SparkSession.builder.master("local[2]")
        .appName("vrae-edge-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "3")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    s.sparkContext.setLogLevel("ERROR")
    yield s
    s.stop()


def window_rows(df):
    return sorted(
        (r.device, r.window_start, r.window_end, r.cluster, np.float32(r.distance), np.float32(r.second_distance), r.anomalous)
        for r in df.collect()
    )


def device_rows(df):
    rows = [tuple(np.float32(v) if k == "max_distance" else v for k, v in r.asDict().items()) for r in df.collect()]
    return sorted(rows)


def check(result, want):
    wh, want_windows, dh, want_devices, _ = want
    assert result.windows.columns == wh and result.devices.columns == dh
    assert window_rows(result.windows) == sorted(want_windows)
    assert device_rows(result.devices) == want_devices
    result.windows.unpersist()


@pytest.mark.parametrize("partitions", [1, 4])
@pytest.mark.parametrize("batch", [7, 1000, 10000])
def test_shipped_fleet_on_spark_equals_edge_assign(spark, assigned, partitions, batch):
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch))
    # Cells that do not parse become nulls: counted as malformed rows, as the CLI counts them.
    df = spark.read.csv(str(FLEET), header=True, schema="device_id string, timestamp long, value double")
    check(vspark.assign(df, MODEL, partitions=partitions), assigned)


def test_generated_multi_file_parquet_fleet_equals_edge_assign(spark, tmp_path):
    rng = np.random.default_rng(11)
    n_dev, per = 40, 700
    t0 = 1_700_000_000
    dev = np.repeat([f"pump-{d:03d}" for d in range(n_dev)], per)
    t = np.tile(np.arange(per, dtype=np.int64), n_dev) * 10 + t0
    phase = np.repeat(rng.uniform(0, 6, n_dev), per)
    freq = np.repeat(rng.choice([0.05, 0.2], n_dev), per)
    v = np.sin(np.arange(per * n_dev) * freq + phase) + rng.normal(0, 0.2, per * n_dev)
    order = np.argsort(np.tile(np.arange(per), n_dev) * n_dev + rng.integers(0, n_dev, per * n_dev), kind="stable")
    table = pa.table({"device": dev[order], "time": t[order], "reading": v[order]})
    single = tmp_path / "fleet.parquet"
    pq.write_table(table, single, row_group_size=5000)
    parts = tmp_path / "fleet_parts"
    parts.mkdir()
    for i, start in enumerate(range(0, table.num_rows, 7000)):
        pq.write_table(table.slice(start, 7000), parts / f"part-{i:03d}.parquet")
    want = run_assign(tmp_path, single, "--stride", "70")
    assert len(want[1]) > 300
    df = spark.read.parquet(str(parts))
    assert df.rdd.getNumPartitions() >= 1
    for partitions in (1, 4):
        check(vspark.assign(df, MODEL, stride=70, partitions=partitions), want)


def test_sessions_on_spark_equal_edge_assign_sessions(spark, tmp_path):
    """`sessions=True`: each device's sessions (cut at gaps, scored at their own length, the
    open ones closed at the end of each partition) equal `edge assign --sessions`, windows and
    device table, for 1 and 3 partitions."""
    from test_scorer import session_fleet

    rows, path = session_fleet(tmp_path)
    want = run_assign(tmp_path, path, "--sessions", "--max-gap", "50")
    df = spark.createDataFrame(rows, "device string, timestamp long, value double")
    for partitions in (1, 3):
        check(vspark.assign(df, MODEL, sessions=True, max_gap=50.0, partitions=partitions), want)


def test_bad_model_and_columns_fail_on_the_driver(spark, tmp_path):
    df = spark.createDataFrame([("a", 1, 0.5, 1.0)], "d string, t long, x double, y double")
    with pytest.raises(ValueError, match=r"expected 3 columns .* found 4: d, t, x, y"):
        vspark.assign(df, MODEL)
    (tmp_path / "model.bundle").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="invalid model bundle"):
        vspark.assign(df.drop("y"), tmp_path)
    with pytest.raises(ValueError, match="cannot read the model bundle"):
        vspark.assign(df.drop("y"), tmp_path / "missing")
