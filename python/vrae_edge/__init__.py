"""Score IoT fleets with a trained VRAE model: the edge runtime for Python.

``Scorer`` is ``edge assign`` for pyarrow record batches: the same windows, the same cluster
IDs, distances and anomaly flags, the same per-device table and counts, bit for bit.
``vrae_edge.spark.assign`` runs it on Apache Spark, one device whole per task.

>>> import pyarrow.parquet as pq
>>> from vrae_edge import Scorer
>>> s = Scorer("models/ecg5000")
>>> for batch in pq.ParquetFile("fleet.parquet").iter_batches():
...     windows = s.push(batch)      # scored windows completed by this batch
>>> devices = s.finish()             # one row per device
>>> s.summary()["windows"]
"""

from ._native import DeviceFold, Scorer, __version__

__all__ = ["DeviceFold", "Scorer", "__version__"]
