"""Spark `local[2]` against `edge assign` on one generated fleet (not a CI test).

    target/pyvenv/bin/python bench/spark_vs_assign.py [--devices 10000] [--samples 560] [--partitions 4]

Generates a Parquet fleet (devices x samples readings of one feature, devices interleaved,
row groups of 1 M rows), scores it with `edge assign` (target/release/edge) and with
`vrae_edge.spark.assign` in local mode (both tables written to Parquet), checks that both give
the same windows, and prints a markdown table: wall time, samples/s, CPU seconds per million
samples, Spark's overhead. Spark's time includes its shuffle and the device table stage but not
the session start (reported apart); the job runs twice on one session, and the first run also
pays for starting the Python workers and warming the JVM.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "ecg5000"


def generate(path: Path, devices: int, samples: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    w = pq.ParquetWriter(path, pa.schema([("device", pa.string()), ("time", pa.int64()), ("value", pa.float64())]))
    ids = np.array([f"dev-{d:06d}" for d in range(devices)])
    phase = rng.uniform(0, 6, devices)
    freq = rng.choice([0.03, 0.08, 0.2], devices)
    step = max(1, 1_000_000 // devices)
    for s0 in range(0, samples, step):
        s = np.arange(s0, min(samples, s0 + step))
        t = np.repeat(s, devices)
        d = np.tile(np.arange(devices), len(s))
        v = np.sin(t * freq[d] + phase[d]) + rng.normal(0, 0.2, len(t))
        w.write_table(pa.table({"device": ids[d], "time": 1_700_000_000 + t.astype(np.int64) * 10, "value": v}))
    w.close()
    return devices * samples


def busy_cpu() -> float:
    """CPU seconds all cores spent busy so far (/proc/stat): Spark's JVM and its Python
    workers are separate processes that outlive the job, so per-process accounting misses
    them. Run on an otherwise idle machine."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks[:7]) - idle) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--samples", type=int, default=560)
    ap.add_argument("--partitions", type=int, default=4)
    a = ap.parse_args()
    os.environ["PYSPARK_PYTHON"] = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fleet = tmp / "fleet.parquet"
        n = generate(fleet, a.devices, a.samples)
        print(f"fleet: {a.devices} devices x {a.samples} samples = {n:,} readings, {fleet.stat().st_size / 1e6:.0f} MB", file=sys.stderr)

        c0, t0 = busy_cpu(), time.perf_counter()
        subprocess.run([str(ROOT / "target/release/edge"), "assign", "--model", str(MODEL), "--input", str(fleet),
                        "--out", str(tmp / "cli.parquet"), "--quiet"], check=True, capture_output=True)
        cli_wall, cli_cpu = time.perf_counter() - t0, busy_cpu() - c0

        from pyspark.sql import SparkSession

        from vrae_edge import spark as vspark

        t0 = time.perf_counter()
        spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
                 .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
                 .config("spark.driver.memory", "4g").getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        start_s = time.perf_counter() - t0
        runs = []
        for run in ("first", "second"):
            # The first job on a session also starts the Python workers and warms the JVM's JIT;
            # a long-lived application pays that once, so the second job on the same session is
            # reported beside it.
            c0, t0 = busy_cpu(), time.perf_counter()
            r = vspark.assign(spark.read.parquet(str(fleet)), MODEL, partitions=a.partitions)
            r.windows.write.parquet(str(tmp / f"spark_windows_{run}"))
            r.devices.write.parquet(str(tmp / f"spark_devices_{run}"))
            runs.append((run, time.perf_counter() - t0, busy_cpu() - c0))
            r.windows.unpersist()
        spark_windows = spark.read.parquet(str(tmp / "spark_windows_second")).count()
        spark.stop()
        cli_windows = pq.read_metadata(tmp / "cli.parquet").num_rows
        assert spark_windows == cli_windows, (spark_windows, cli_windows)

    print(f"\n{a.devices} devices x {a.samples} samples ({n:,} readings, {cli_windows:,} windows), "
          f"Spark local[2], {a.partitions} partitions; Spark session start {start_s:.1f} s (not counted)\n")
    print("| engine | wall s | samples/s | CPU s per M samples | vs edge assign (wall) |")
    print("|---|---|---|---|---|")
    print(f"| edge assign | {cli_wall:.1f} | {n / cli_wall:,.0f} | {cli_cpu / n * 1e6:.2f} | 1.00x |")
    for run, wall, cpu in runs:
        print(f"| Spark local[2], {run} job on the session (windows + devices written) | {wall:.1f} | {n / wall:,.0f} | "
              f"{cpu / n * 1e6:.2f} | {wall / cli_wall:.2f}x |")


if __name__ == "__main__":
    main()
