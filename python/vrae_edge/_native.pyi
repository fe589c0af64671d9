"""Type stubs of the compiled extension (``vrae_edge._native``)."""

import os
from typing import Optional, TypedDict, Union

import numpy as np
import numpy.typing as npt
import pyarrow as pa

__version__: str

Model = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]

def bundle_bytes(model: Model) -> bytes:
    """The checked bundle bytes of a model directory, a ``model.bundle`` path or bytes."""

class Summary(TypedDict):
    rows: int
    malformed: int
    out_of_order: int
    gaps: int
    windows: int
    short_sessions: int
    cut_sessions: int
    anomalous_windows: int
    devices: int
    short_devices: int
    samples: int
    first_skipped: Optional[str]

class Scorer:
    """Scores a fleet's readings with a trained model, exactly as ``edge assign`` does.

    ``model``: a model directory, a ``model.bundle`` path or the bundle's bytes. ``window``
    defaults to the model's training length, ``stride`` to ``window``; a timestamp step larger
    than ``max_gap`` restarts a device's window; ``strict`` makes a malformed or out-of-order
    row a ``ValueError`` instead of a counted skip. ``sessions=True`` is ``edge assign
    --sessions``: each device's stream is cut at gaps above ``max_gap`` (required) and each
    session scored at its own length, within ``min_session`` / ``max_session`` (the CLI's
    defaults); ``close()`` returns the sessions still open at the end. Raises ``ValueError``
    for an unreadable or invalid bundle or bad parameters, ``TypeError`` for a model of another
    type.
    """

    def __init__(
        self,
        model: Model,
        window: Optional[int] = None,
        stride: Optional[int] = None,
        max_gap: Optional[float] = None,
        sessions: bool = False,
        strict: bool = False,
        min_session: Optional[int] = None,
        max_session: Optional[int] = None,
    ) -> None: ...
    def push(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Feeds readings (device id, timestamp, one column per feature, by position; each
        device's rows in time order within and across batches) and returns the windows they
        completed: ``device``, ``window_start``, ``window_end``, ``cluster``, ``distance``,
        ``second_distance``, ``anomalous``. ``ValueError`` names a wrong column count or type
        (and, with ``strict``, the first bad row); ``TypeError`` if ``batch`` is not Arrow."""
    def close(self) -> pa.RecordBatch:
        """Ends the input: the sessions still open, scored (as ``push`` returns windows; empty
        with fixed windows). ``finish()`` may follow; pushes raise."""
    def finish(self) -> pa.RecordBatch:
        """Ends the stream; returns the device table (one row per device, sorted by id). With
        ``sessions=True`` call ``close()`` first (``RuntimeError`` otherwise)."""
    def summary(self) -> Summary:
        """The counts ``edge assign`` prints, over everything pushed so far."""
    def embed(self, windows: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Latent means ``(n, latent)`` of windows ``(n, length)`` or ``(n, length, features)``."""
    def assign(self, windows: npt.ArrayLike, latents: Optional[npt.ArrayLike] = None) -> pa.RecordBatch:
        """The device's decision per window: ``cluster``, ``distance``, ``second_distance``,
        ``anomalous`` (latents computed when not given)."""
    @property
    def window(self) -> int: ...
    @property
    def stride(self) -> int: ...
    @property
    def features(self) -> int: ...
    @property
    def clusters(self) -> int: ...
    @property
    def latent(self) -> int: ...

class DeviceFold:
    """Folds scored windows (``Scorer.push``'s columns, each device's windows in order) into
    the device table; what ``vrae_edge.spark`` runs as its second aggregation."""

    def __init__(self, clusters: int) -> None: ...
    def push(self, windows: pa.RecordBatch) -> None: ...
    def finish(self) -> pa.RecordBatch: ...
