"""The package alone: pushed in any batch sizes and any device interleaving, a Scorer gives
exactly `edge assign`'s windows, device table and counts; bad inputs raise clear errors."""

import itertools
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import FLEET, MODEL, fleet_rows, run_assign, summary_from_stderr, table_rows, to_batch
from vrae_edge import DeviceFold, Scorer


def shuffled(rows, seed):
    """The rows with devices interleaved at random, each device's rows still in file order."""
    rng = random.Random(seed)
    per = {}
    for r in rows:
        per.setdefault(r[0], []).append(r)
    queues = [list(reversed(q)) for q in per.values()]
    out = []
    while queues:
        i = rng.randrange(len(queues))
        out.append(queues[i].pop())
        if not queues[i]:
            queues.pop(i)
    return out


def push_in_random_batches(scorer, rows, seed):
    rng = random.Random(seed)
    outs, i = [], 0
    while i < len(rows):
        n = rng.choice([1, 2, 7, 64, 500, 3000])
        outs.append(scorer.push(to_batch(rows[i : i + n])))
        i += n
    return pa.Table.from_batches(outs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shuffled_fleet_in_random_batches_equals_edge_assign(assigned, seed):
    wh, want_windows, dh, want_devices, stderr = assigned
    s = Scorer(str(MODEL))
    got = push_in_random_batches(s, shuffled(fleet_rows(), seed), seed)
    assert got.schema.names == wh
    assert len(want_windows) == 72
    assert sorted(table_rows(got)) == sorted(want_windows)
    devices = s.finish()
    assert devices.schema.names == dh
    assert table_rows(devices) == want_devices
    summary = s.summary()
    want = summary_from_stderr(stderr)
    assert {k: summary[k] for k in want} == want
    assert want["malformed"] == 3 and summary["first_skipped"].startswith("row ")


def test_state_carried_across_batches_is_what_makes_it_equal(assigned):
    """Negative control: a fresh Scorer per batch (no state carried) must not pass the same
    comparison, so the test above can fail."""
    _, want_windows, *_ = assigned
    rows = shuffled(fleet_rows(), 0)
    got = []
    for i in range(0, len(rows), 500):
        got += table_rows(Scorer(MODEL).push(to_batch(rows[i : i + 500])))
    assert sorted(got) != sorted(want_windows)
    assert len(got) < len(want_windows)


def test_parquet_types_and_overlapping_windows_equal_edge_assign(tmp_path):
    """A fleet with integer device ids, float timestamps, float32 values, a gap, overlapping
    windows: the Scorer equals `edge assign` on the same table written as Parquet."""
    rng = np.random.default_rng(5)
    dev, t, v = [], [], []
    for d in range(7):
        n = 150 + 40 * d
        times = np.cumsum(rng.uniform(0.5, 1.5, n))
        times[n // 2 :] += 30.0  # a gap larger than --max-gap
        dev += [d * 1000] * n
        t += list(times)
        v += list(np.sin(times / (3 + d)) + rng.normal(0, 0.1, n))
    starts = np.cumsum([0] + [150 + 40 * d for d in range(7)])
    per = [range(starts[d], starts[d + 1]) for d in range(7)]
    idx = [i for group in itertools.zip_longest(*per) for i in group if i is not None]  # round-robin
    table = pa.table(
        {
            "id": pa.array([dev[i] for i in idx], pa.int64()),
            "ts": pa.array([t[i] for i in idx], pa.float64()),
            "x": pa.array([v[i] for i in idx], pa.float32()),
        }
    )
    path = tmp_path / "fleet.parquet"
    pq.write_table(table, path)
    wh, want, dh, want_dev, _ = run_assign(tmp_path, path, "--window", "100", "--stride", "25", "--max-gap", "10")
    s = Scorer(MODEL, window=100, stride=25, max_gap=10.0)
    got = pa.Table.from_batches([s.push(b) for b in table.to_batches(max_chunksize=333)])
    assert len(want) > 20 and sorted(table_rows(got)) == sorted(want)
    assert table_rows(s.finish()) == want_dev
    assert s.summary()["gaps"] == 7


def test_embed_and_assign_give_the_pushed_windows_decisions():
    rows = [r for r in fleet_rows() if r[0] == "dev01" and r[1] is not None and r[2] is not None]
    s = Scorer(MODEL)
    pushed = table_rows(s.push(to_batch(rows)))
    w = s.window
    windows = np.array([r[2] for r in rows[: len(pushed) * w]], dtype=np.float32).reshape(len(pushed), w)
    z = s.embed(windows)
    assert z.shape == (len(pushed), s.latent) and z.dtype == np.float32
    assert np.array_equal(s.embed(windows[:, :, None]), z)
    for a in (s.assign(windows), s.assign(windows, z)):
        got = list(zip(a.column("cluster").to_pylist(), np.asarray(a.column("distance")), a.column("anomalous").to_pylist()))
        assert got == [(p[3], p[4], p[6]) for p in pushed]
    assert s.embed(np.zeros((0, w), np.float32)).shape == (0, s.latent)


def test_device_fold_equals_the_scorers_device_table(assigned):
    _, want_windows, dh, want_devices, _ = assigned
    s = Scorer(MODEL)
    windows = s.push(to_batch(fleet_rows()))
    f = DeviceFold(s.clusters)
    for b in pa.Table.from_batches([windows]).to_batches(max_chunksize=10):
        f.push(b)
    assert table_rows(f.finish()) == want_devices
    with pytest.raises(ValueError, match="'cluster' column"):
        f.push(windows.drop_columns(["cluster"]))
    with pytest.raises(ValueError, match="cluster 99 is not one of this model's"):
        f.push(windows.set_column(3, "cluster", pa.array([99] * windows.num_rows, pa.int32())))


def test_bad_inputs_raise_clear_errors(tmp_path):
    s = Scorer(MODEL)
    ok = to_batch(fleet_rows()[:10])
    with pytest.raises(ValueError, match=r"expected 3 columns \(device id, timestamp, 1 value column\(s\)\), found 4: device_id, timestamp, value, extra"):
        s.push(ok.append_column("extra", ok.column(2)))
    with pytest.raises(ValueError, match=r"column 3 \('value'\) is Utf8; the value column must be numeric"):
        s.push(ok.set_column(2, "value", pa.array(["1"] * 10)))
    with pytest.raises(ValueError, match=r"column 1 \('device_id'\) is Float64; the device id column must be a string or an integer"):
        s.push(ok.set_column(0, "device_id", pa.array([1.5] * 10)))
    with pytest.raises(TypeError, match="pyarrow.RecordBatch"):
        s.push([1, 2, 3])
    with pytest.raises(ValueError, match="windows have 2 feature"):
        s.embed(np.zeros((3, s.window, 2), np.float32))
    with pytest.raises(ValueError, match=r"latents must have shape \(3, "):
        s.assign(np.zeros((3, s.window), np.float32), np.zeros((3, 1), np.float32))

    bundle = (MODEL / "model.bundle").read_bytes()
    with pytest.raises(ValueError, match="the model bytes: invalid model bundle"):
        Scorer(bundle[: len(bundle) // 2])
    broken = bytearray(bundle)
    broken[len(broken) // 2] ^= 0xFF
    with pytest.raises(ValueError, match="invalid model bundle"):
        Scorer(bytes(broken))
    p = tmp_path / "model.bundle"
    p.write_bytes(b"not a bundle")
    with pytest.raises(ValueError, match=f"{p}: invalid model bundle"):
        Scorer(tmp_path)
    with pytest.raises(ValueError, match="nowhere: cannot read the model bundle"):
        Scorer(tmp_path / "nowhere")
    with pytest.raises(TypeError, match="model must be a model directory"):
        Scorer(42)
    with pytest.raises(ValueError, match="window, stride and features must all be at least 1"):
        Scorer(MODEL, window=0)
    assert Scorer(bundle).window == 140 and Scorer(bytearray(bundle), stride=7).stride == 7


def test_strict_mode_names_the_row_and_stops():
    s = Scorer(MODEL, strict=True)
    rows = fleet_rows()
    bad = next(i for i, r in enumerate(rows) if r[2] is None or r[1] is None or r[2] != r[2])
    with pytest.raises(ValueError, match=rf"^row {bad + 1}: "):
        s.push(to_batch(rows[: bad + 5]))
    with pytest.raises(RuntimeError, match="takes no more readings: strict mode stopped at row"):
        s.push(to_batch(rows[bad + 5 :]))
    lenient = Scorer(MODEL)
    lenient.push(to_batch(rows))
    lenient.finish()
    with pytest.raises(RuntimeError, match=r"finish\(\) was called"):
        lenient.push(to_batch(rows[:1]))


def session_fleet(tmp_path):
    """Six devices, sessions of 10..700 samples 100 s apart (some below the default minimum of
    35, one above the maximum of 560), devices interleaved: (rows, CSV path)."""
    rng = np.random.default_rng(18)
    per = {}
    for d in range(6):
        t, rows = 0, []
        for n in [int(x) for x in rng.integers(10, 300, 4)] + ([700] if d == 0 else []):
            rows += [(f"s{d}", t + j, float(np.sin((t + j) / (5 + d)))) for j in range(n)]
            t += n + 100
        per[d] = rows
    rows = sorted((r for rs in per.values() for r in rs), key=lambda r: (r[1], r[0]))
    path = tmp_path / "sessions.csv"
    with open(path, "w") as f:
        f.write("device,timestamp,value\n")
        f.writelines(f"{d},{t},{v!r}\n" for d, t, v in rows)
    return rows, path


def test_sessions_equal_edge_assign_sessions(tmp_path):
    """Sessions pushed in random batches, then close(): the same sessions, clusters, distances
    and device table as `edge assign --sessions --max-gap 50`; finish() before close() raises
    rather than drop the open sessions."""
    rows, path = session_fleet(tmp_path)
    wh, want, dh, want_dev, stderr = run_assign(tmp_path, path, "--sessions", "--max-gap", "50")
    s = Scorer(MODEL, max_gap=50.0, sessions=True)
    got = push_in_random_batches(s, rows, 3)
    with pytest.raises(RuntimeError, match="call close"):
        s.finish()
    tail = s.close()
    assert tail.schema.names == wh and tail.num_rows > 0
    every = table_rows(got) + table_rows(tail)
    assert len(want) > 15 and sorted(every) == sorted(want)
    assert table_rows(s.finish()) == want_dev
    summary = s.summary()
    assert f"sessions too short    {summary['short_sessions']} " in stderr and summary["short_sessions"] > 0
    assert f"sessions cut          {summary['cut_sessions']} " in stderr and summary["cut_sessions"] == 1
    with pytest.raises(RuntimeError, match="no more readings"):
        s.push(to_batch(rows[:5]))
    # Control: the same rows as fixed windows give other rows.
    fixed = Scorer(MODEL, max_gap=50.0)
    assert sorted(table_rows(push_in_random_batches(fixed, rows, 3))) != sorted(want)


def test_session_parameters_are_checked():
    with pytest.raises(ValueError, match="give --max-gap"):
        Scorer(MODEL, sessions=True)
    with pytest.raises(ValueError, match="window and stride do not apply"):
        Scorer(MODEL, sessions=True, max_gap=5.0, window=50)
    with pytest.raises(ValueError, match="need sessions=True"):
        Scorer(MODEL, min_session=10)
    with pytest.raises(ValueError, match="--min-session must be at least 1"):
        Scorer(MODEL, sessions=True, max_gap=5.0, min_session=0)
    assert Scorer(MODEL).close().num_rows == 0
