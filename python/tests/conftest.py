"""Fixtures: the shipped model and fleet, and `edge assign` run on the same data (the CLI is
the reference every test compares with)."""

import csv
import os
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "ecg5000"
FLEET = ROOT / "data" / "fleet" / "sample.csv"


def edge_bin() -> Path:
    """The `edge` binary (EDGE_BIN, else the release build of this checkout)."""
    p = Path(os.environ.get("EDGE_BIN", ROOT / "target" / "release" / "edge"))
    if not p.exists():
        pytest.fail(f"{p} not found: build it with `cargo build --release -p edge` or set EDGE_BIN")
    return p


def read_csv_table(path: Path) -> list:
    """Rows of a table `edge assign` wrote, with numbers parsed (float32 columns as float32)."""
    with open(path, newline="") as f:
        r = csv.reader(f)
        header = next(r)
        rows = []
        for rec in r:
            row = []
            for name, cell in zip(header, rec):
                if name in ("device", "window_start", "window_end", "first_timestamp", "last_timestamp"):
                    row.append(cell)
                elif name in ("distance", "second_distance", "max_distance"):
                    row.append(np.float32(float(cell)))
                elif name in ("mean_distance", "cluster_share"):
                    row.append(float(cell))
                elif name == "anomalous":
                    row.append(cell == "true")
                else:
                    row.append(int(cell))
            rows.append(tuple(row))
    return header, rows


def table_rows(t) -> list:
    """Rows of a pyarrow RecordBatch/Table as tuples, float32 columns as float32."""
    cols = []
    for name in t.schema.names:
        c = t.column(name)
        if pa.types.is_float32(c.type):
            cols.append(list(np.asarray(c.to_numpy(zero_copy_only=False), dtype=np.float32)))
        else:
            cols.append(c.to_pylist())
    return list(zip(*cols))


def run_assign(tmp: Path, data: Path, *extra: str):
    """`edge assign` on `data`: (window header, window rows, device header, device rows, stderr)."""
    out = tmp / "windows.csv"
    r = subprocess.run(
        [str(edge_bin()), "assign", "--model", str(MODEL), "--input", str(data), "--out", str(out), "--quiet", *extra],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    wh, wr = read_csv_table(out)
    dh, dr = read_csv_table(tmp / "windows.devices.csv")
    return wh, wr, dh, dr, r.stderr


def fleet_rows(path: Path = FLEET) -> list:
    """The shipped fleet's records as (device, timestamp or None, value or None): a cell that
    does not parse (or is missing) is None, as Spark's CSV reader makes it null."""
    out = []
    with open(path, newline="") as f:
        r = csv.reader(f)
        next(r)
        for rec in r:
            dev = rec[0] if rec else None
            try:
                t = int(rec[1])
            except (IndexError, ValueError):
                t = None
            try:
                v = float(rec[2]) if len(rec) == 3 else None
            except ValueError:
                v = None
            out.append((dev, t, v))
    return out


def to_batch(rows) -> pa.RecordBatch:
    """Readings as a record batch (device string, timestamp int64, value float64)."""
    d, t, v = zip(*rows) if rows else ([], [], [])
    return pa.RecordBatch.from_arrays(
        [pa.array(d, pa.string()), pa.array(t, pa.int64()), pa.array(v, pa.float64())],
        names=["device_id", "timestamp", "value"],
    )


@pytest.fixture(scope="session")
def assigned(tmp_path_factory):
    """`edge assign` on the shipped fleet CSV."""
    return run_assign(tmp_path_factory.mktemp("assign"), FLEET)


def summary_from_stderr(text: str) -> dict:
    """The counts `edge assign` prints."""
    lines = {l[:22].strip(): l[22:].strip() for l in text.splitlines() if len(l) > 22}
    malformed, _, rest = lines["rows skipped"].partition(" malformed, ")
    devices, _, short = lines["devices"].partition(" (")
    return {
        "rows": int(lines["rows read"]),
        "malformed": int(malformed),
        "out_of_order": int(rest.split()[0]),
        "devices": int(devices),
        "short_devices": int(short.split()[0]),
        "gaps": int(lines["windows restarted"].split()[0]),
        "windows": int(lines["windows scored"].split()[0]),
        "anomalous_windows": int(lines["windows anomalous"]),
    }
