"""Fleet scoring on Apache Spark (PySpark 4.x): ``edge assign`` for fleets past one machine.

Each device is scored whole inside one task: the readings are repartitioned by device, and
``mapInArrow`` sorts every partition by (device, timestamp) with Arrow (in the Python worker,
in memory: choose ``partitions`` so that one partition's readings fit) and feeds it through one
:class:`vrae_edge.Scorer` (Arrow's sort instead of Spark's ``sortWithinPartitions``: see
docs/speed.md). The model travels to the executors as the bundle's bytes in a broadcast
variable (a few hundred KB), so executors need the wheel but no model files.
The device table folds the scored windows with :class:`vrae_edge.DeviceFold` (the CLI's own
fold, so the rows equal ``edge assign``'s) partition by partition, with no second shuffle: the
scoring stage leaves each device's windows whole in one partition and in time order, which is
all the fold needs (it keeps one running row per device, so devices may interleave).

Semantics against ``edge assign`` on the same rows: identical windows, cluster IDs,
distances, flags and device rows, with one difference: each device's rows are sorted by
timestamp, so rows a file holds out of time order are scored in time order here (``edge
assign`` skips them as out of order); of two rows with the same device and timestamp, which
one is kept depends on the order Spark's shuffle delivers them in (the sort is stable).
"""

from __future__ import annotations

import os
from typing import Iterator, NamedTuple, Optional, Union

import pyarrow as pa

from ._native import DeviceFold, Scorer, bundle_bytes

__all__ = ["Result", "assign", "model_bytes", "WINDOW_SCHEMA", "device_schema"]

#: Spark schema of the window table (``edge assign``'s window columns).
WINDOW_SCHEMA = (
    "device string, window_start string, window_end string, cluster int, "
    "distance float, second_distance float, anomalous boolean"
)

# Rows per batch handed to the scorer after the partition's sort.
_CHUNK = 65_536


def device_schema(clusters: int) -> str:
    """Spark schema of the device table for a model of ``clusters`` clusters."""
    per_cluster = ", ".join(f"windows_in_{c} long" for c in range(clusters))
    return (
        "device string, windows long, cluster int, cluster_share double, "
        f"{per_cluster}, mean_distance double, max_distance float, anomalous_windows long, "
        "first_timestamp string, last_timestamp string, latest_cluster int"
    )


class Result(NamedTuple):
    """What :func:`assign` returns: the window table and the device table (``None`` with
    ``devices=False``). ``windows`` is persisted (memory and disk) because the device table is
    computed from it; ``windows.unpersist()`` frees it."""

    windows: "pyspark.sql.DataFrame"  # noqa: F821
    devices: Optional["pyspark.sql.DataFrame"]  # noqa: F821


def model_bytes(model: Union[str, "os.PathLike[str]", bytes]) -> bytes:
    """The bundle's bytes of a model directory, a ``model.bundle`` path or bytes, checked
    (``ValueError`` naming the file and what is wrong, as the CLI and ``Scorer`` say it)."""
    return bundle_bytes(model)


def _large_strings(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with its string columns as large_string (what Spark expects of mapInArrow
    output when ``spark.sql.execution.arrow.useLargeVarTypes`` is on)."""
    cols = [c.cast(pa.large_string()) if pa.types.is_string(c.type) else c for c in batch.columns]
    return pa.RecordBatch.from_arrays(cols, names=batch.schema.names)


def assign(
    df: "pyspark.sql.DataFrame",  # noqa: F821
    model: Union[str, "os.PathLike[str]", bytes],
    *,
    window: Optional[int] = None,
    stride: Optional[int] = None,
    max_gap: Optional[float] = None,
    strict: bool = False,
    partitions: Optional[int] = None,
    devices: bool = True,
    sessions: bool = False,
    min_session: Optional[int] = None,
    max_session: Optional[int] = None,
) -> Result:
    """Scores the readings in ``df`` as ``edge assign`` does.

    ``df``: long format by position, as ``edge assign``'s Parquet input: device id (string or
    integer), timestamp (numeric, timestamp or date, used as its stored number: a Spark
    ``TimestampType`` is microseconds), one numeric column per feature; names are free.
    ``model``: model directory, ``model.bundle`` path or bytes (read on the driver).
    ``window``, ``stride``, ``max_gap``, ``strict``, ``sessions``, ``min_session``,
    ``max_session``: as ``edge assign``'s flags (sessions: each session of a device, cut at gaps
    above ``max_gap``, scored at its own length; ``window_start``/``window_end`` are its first
    and last timestamps). ``partitions``:
    how many partitions to hash the devices into (default: ``spark.sql.shuffle.partitions``).
    Raises ``ValueError`` on the driver for a bad model, bad parameters or a column count
    that does not fit the model; a bad row under ``strict`` fails the Spark job with the row.
    """
    data = model_bytes(model)
    params = dict(
        window=window, stride=stride, max_gap=max_gap, strict=strict, sessions=sessions, min_session=min_session, max_session=max_session
    )
    probe = Scorer(data, **params)
    if len(df.columns) != 2 + probe.features:
        raise ValueError(
            f"expected {2 + probe.features} columns (device id, timestamp, {probe.features} value column(s)), "
            f"found {len(df.columns)}: {', '.join(df.columns)}"
        )
    spark = df.sparkSession
    large = (spark.conf.get("spark.sql.execution.arrow.useLargeVarTypes", "false") or "false").lower() == "true"
    shipped = spark.sparkContext.broadcast(data)
    device, time = df.columns[0], df.columns[1]

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        scorer = Scorer(shipped.value, **params)
        read = list(batches)
        if not read or sum(b.num_rows for b in read) == 0:
            scorer.finish()
            return
        part = pa.Table.from_batches(read)
        # Stable: of two rows with one device and timestamp, the first read is scored first.
        part = part.sort_by([(device, "ascending"), (time, "ascending")])
        for batch in part.to_batches(max_chunksize=_CHUNK):
            out = scorer.push(batch)
            if out.num_rows:
                yield _large_strings(out) if large else out
        # Sessions still open at the end of the partition (its devices are whole here).
        tail = scorer.close()
        if tail.num_rows:
            yield _large_strings(tail) if large else tail
        scorer.finish()

    by_device = df.repartition(partitions, device) if partitions else df.repartition(device)
    scored = by_device.mapInArrow(score, WINDOW_SCHEMA)
    if not devices:
        return Result(scored, None)

    from pyspark import StorageLevel

    scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
    clusters = probe.clusters

    def fold(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        f = DeviceFold(clusters)
        for batch in batches:
            f.push(batch)
        out = f.finish()
        if out.num_rows:
            yield _large_strings(out) if large else out

    # Narrow: each partition of `scored` holds its devices' every window, in time order.
    table = scored.mapInArrow(fold, device_schema(clusters))
    return Result(scored, table)
