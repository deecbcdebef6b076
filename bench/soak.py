"""The soak part of bench/run.py (stdlib only): what a sustained, paced load did to
the server over time, and how many bytes it wrote to storage for the points.

- `DbSampler` looks into the SQLite file itself every few seconds, from a thread of
  the bench with a read-only connection (WAL mode lets a reader in beside the
  server's writer): points in the pending log, small chunks, all chunks, file sizes.
- `soak_report` turns the bench's 50 ms ``/metrics`` samples and those looks into
  the verdicts of issue 15 point 4: the per-second committed rate, the longest
  stall, and whether the pending log and the small chunks stay bounded.
- `proc_io` and `amplification`: bytes written to storage (``/proc/PID/io``) per
  byte of points, for every run, soak or not.

bench/run.py imports it (bench/ is not a package; run.py puts its own folder on
sys.path).
"""

from __future__ import annotations

import bisect
import itertools
import os
import sqlite3
import statistics
import threading
import time

#: the soak's bar: no interval over this long without a commit while points are out
STALL_BAR_S = 0.2
#: "bounded": the last third's maximum is at most this times the middle third's
BOUNDED_RATIO = 1.25
#: a chunk with fewer points than this is small (tsnet.storage.sqlite.COMPACT_SMALL;
#: copied, not imported: the bench measures whatever server it starts)
SMALL_CHUNK = 256
#: SQL of one look into the file
PENDING_SQL = "SELECT COALESCE(SUM(points), 0) FROM pending"
SMALL_SQL = f"SELECT count(*) FROM chunks WHERE count < {SMALL_CHUNK}"
CHUNKS_SQL = "SELECT count(*) FROM chunks"
#: bytes of one point as the store has to keep it: an int64 time and an 8-byte value
POINT_BYTES = 16
#: the small-chunk count scans the chunks table (there is no index on count): a
#: look that took L seconds waits at least this many times L before the next, so
#: the bench takes at most a tenth of a core from the server it measures
LOOK_SPACING = 10


# ------------------------------------------------------------------ bytes written

def proc_io(pid: int) -> dict[str, int]:
    """``/proc/PID/io`` as numbers ({} when it cannot be read).  ``write_bytes``
    counts a page when it becomes dirty: about what reaches the disk, each page
    once per write-back however often it is rewritten before; ``wchar`` is every
    byte handed to write(2) and its kin, sockets and logs included."""
    try:
        with open(f"/proc/{pid}/io") as f:
            return {k: int(v) for k, v in (ln.split(":") for ln in f if ":" in ln)}
    except (OSError, ValueError):
        return {}


def amplification(written: int | None, wire_bytes: int | None, points: int) -> dict:
    """Bytes written to storage per byte of points, for both meanings of the latter:
    the bytes sent on the wire, and `POINT_BYTES` a point."""
    raw = POINT_BYTES * points

    def ratio(den: int | None) -> float | None:
        return round(written / den, 3) if written is not None and den else None

    return {"bytes_written": written, "wire_bytes": wire_bytes, "point_bytes": raw,
            "per_wire_byte": ratio(wire_bytes), "per_point_byte": ratio(raw)}


# ------------------------------------------------------------------ the file itself

def file_bytes(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


class DbSampler:
    """Looks into the server's SQLite file every ``interval`` seconds from a thread
    of its own (sqlite3 releases the GIL while it reads, so the bench's 50 ms
    /metrics polls go on).  Each look is one short autocommit read, so it never
    holds a snapshot that would keep the server's checkpoints from the WAL's end;
    a slow look spaces the next ones out (`LOOK_SPACING`)."""

    def __init__(self, path: str, interval: float, t0: float) -> None:
        self.path = path
        self.interval = interval
        self.t0 = t0
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="db-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(60)

    def _run(self) -> None:
        db = None
        try:
            while True:
                if db is None and os.path.exists(self.path):
                    db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5,
                                         isolation_level=None)
                sample = self.look(db)
                self.samples.append(sample)
                if self._stop.wait(max(self.interval, LOOK_SPACING * sample["look_s"])):
                    return
        finally:
            if db is not None:
                db.close()

    def look(self, db: sqlite3.Connection | None, label: str | None = None) -> dict:
        """One sample: seconds since t0, pending points, small and all chunks,
        db and WAL bytes, and how long the look took."""
        t = time.time()
        out: dict = {"t": round(t - self.t0, 3)}
        if label:
            out["label"] = label
        if db is None:
            out["error"] = "no database file yet"
        else:
            try:
                out["pending"] = db.execute(PENDING_SQL).fetchone()[0]
                out["small_chunks"] = db.execute(SMALL_SQL).fetchone()[0]
                out["chunks"] = db.execute(CHUNKS_SQL).fetchone()[0]
            except sqlite3.Error as e:
                out["error"] = str(e)
        out["db_bytes"] = file_bytes(self.path)
        out["wal_bytes"] = file_bytes(self.path + "-wal")
        out["look_s"] = round(time.time() - t, 3)
        return out

    def look_once(self, label: str) -> dict:
        """A look from the calling thread, on a connection of its own (after the
        server stopped, say); it goes with the others."""
        db = None
        try:
            if os.path.exists(self.path):
                db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5,
                                     isolation_level=None)
            sample = self.look(db, label)
        finally:
            if db is not None:
                db.close()
        self.samples.append(sample)
        return sample


# ------------------------------------------------------------------ the verdicts

def committed_at(times: list[float], counts: list[float], t: float) -> float:
    """The committed count the polls had seen by time ``t`` (0 before the first)."""
    i = bisect.bisect_right(times, t)
    return counts[i - 1] if i else 0.0


def per_second(samples: list[tuple[float, float]], t_start: float,
               t_end: float) -> list[int]:
    """Points committed in each whole second from ``t_start`` up to ``t_end``, from
    the polls (a second's figure is off by what was committed between its
    boundary and the poll before it: one poll interval's worth)."""
    times = [t for t, _c in samples]
    counts = [c for _t, c in samples]
    out = []
    for i in range(int(t_end - t_start)):
        a = committed_at(times, counts, t_start + i)
        b = committed_at(times, counts, t_start + i + 1)
        out.append(int(b - a))
    return out


def stalls(samples: list[tuple[float, float]], t_start: float) -> dict:
    """The longest time the committed count did not advance while points were out:
    from ``t_start`` (the first byte) or a poll that saw it advance to the next
    poll that saw it advance, up to the last advance (every point committed).
    Measured with the polls' spacing (``poll_gap_max_s``) as the resolution."""
    advances = [t_start]
    prev = None
    for t, c in samples:
        if prev is not None and c > prev and t > t_start:
            advances.append(t)
        prev = c
    gaps = [(b - a, a - t_start) for a, b in itertools.pairwise(advances)]
    spacing = [b[0] - a[0] for a, b in itertools.pairwise(samples)
               if b[0] > t_start]
    longest, at = max(gaps, default=(None, None))
    return {"longest_stall_s": round(longest, 3) if longest is not None else None,
            "longest_stall_at_s": round(at, 3) if at is not None else None,
            "stalls_over_bar": sum(1 for g, _a in gaps if g > STALL_BAR_S),
            #: the first few of them, as [seconds, at seconds from the first byte]
            "stalls_over_bar_first": [[round(g, 3), round(a, 3)] for g, a in gaps
                                      if g > STALL_BAR_S][:10],
            "commits_seen": len(advances) - 1,
            "poll_gap_max_s": round(max(spacing), 3) if spacing else None}


def slope_per_min(ts: list[float], vs: list[float]) -> float | None:
    """Least-squares slope of ``vs`` over ``ts`` (seconds), per minute."""
    if len(ts) < 2:
        return None
    mt, mv = statistics.fmean(ts), statistics.fmean(vs)
    den = sum((t - mt) ** 2 for t in ts)
    if den == 0:
        return None
    return round(60 * sum((t - mt) * (v - mv) for t, v in zip(ts, vs, strict=True)) / den, 1)


def bounded(ts: list[float], vs: list[float]) -> dict:
    """Whether a series of samples stays bounded, simply: the maximum of the last
    third of the samples is at most `BOUNDED_RATIO` times the maximum of the
    middle third (the first third is the warm-up).  The slope over the last two
    thirds (per minute) is there to look at; the verdict does not use it."""
    n = len(vs)
    out: dict = {"samples": n, "max": max(vs, default=None),
                 "slope_per_min": slope_per_min(ts[n // 3:], vs[n // 3:])}
    if n < 6:
        out.update({"bounded": None, "why": "fewer than 6 samples"})
        return out
    mid, last = max(vs[n // 3:2 * n // 3]), max(vs[2 * n // 3:])
    out.update({"max_middle_third": mid, "max_last_third": last,
                "bounded": last <= BOUNDED_RATIO * mid})
    return out


def soak_report(samples: list[tuple[float, float]], db_samples: list[dict],
                t_first: float, t_last: float, t_commit: float, t0_db: float,
                flush_interval: float) -> dict:
    """Everything the soak reports: ``samples`` are (epoch, committed) polls,
    ``db_samples`` DbSampler's looks (their ``t`` counts from ``t0_db``); the send
    window is ``t_first`` .. ``t_last`` (loadgen's first and last byte)."""
    secs = per_second(samples, t_first, t_last)
    steady = secs[1:] if len(secs) > 1 else secs  # second 0 waits for the first flush
    out: dict = {
        "flush_interval": flush_interval,
        "per_second_committed": secs,
        "committed_per_sec_min": min(steady, default=None),
        "committed_per_sec_median": statistics.median(steady) if steady else None,
        "committed_per_sec_max": max(steady, default=None),
        **stalls(samples, t_first),
        "commit_after_last_byte_s": round(t_commit - t_last, 3),
    }
    window = [s for s in db_samples if "pending" in s and "label" not in s
              and t_first - t0_db <= s["t"] <= t_last - t0_db]
    ts = [s["t"] for s in window]
    out["pending"] = bounded(ts, [s["pending"] for s in window])
    out["small_chunks"] = bounded(ts, [s["small_chunks"] for s in window])
    out["db_samples"] = db_samples
    out["db_look_s_max"] = max((s["look_s"] for s in db_samples), default=None)
    stall = out["longest_stall_s"]
    verdicts = {"stall": stall is not None and stall <= STALL_BAR_S,
                "pending_bounded": out["pending"]["bounded"],
                "small_chunks_bounded": out["small_chunks"]["bounded"]}
    out["bar"] = {"stall_s_max": STALL_BAR_S, "bounded_ratio": BOUNDED_RATIO, **verdicts,
                  "pass": all(v is True for v in verdicts.values())}
    return out


def render(rec: dict) -> list[str]:
    """The human lines of one soak run."""
    s = rec["soak"]
    lg = rec["loadgen"]
    bar = s["bar"]

    def yes(v: bool | None) -> str:
        return "n/a" if v is None else "yes" if v else "NO"

    p, sm = s["pending"], s["small_chunks"]
    amp = rec.get("write_amplification") or {}
    return [
        f"soak: {lg.get('rate_requested')} points/s asked, {lg.get('achieved_rate')} sent "
        f"(behind the schedule by {lg.get('max_late_s')} s at most); committed per second "
        f"min {s['committed_per_sec_min']} median {s['committed_per_sec_median']} max "
        f"{s['committed_per_sec_max']}; last point committed "
        f"{s['commit_after_last_byte_s']} s after the last byte",
        f"soak: longest stall {s['longest_stall_s']} s at {s['longest_stall_at_s']} s "
        f"({s['stalls_over_bar']} over {STALL_BAR_S} s; polls {s['poll_gap_max_s']} s apart "
        f"at most; flush_interval {s['flush_interval']} s)",
        f"soak: pending log max {p['max']} (middle third {p.get('max_middle_third')}, last "
        f"{p.get('max_last_third')}, {p['slope_per_min']}/min): bounded {yes(p['bounded'])}; "
        f"small chunks max {sm['max']} (middle {sm.get('max_middle_third')}, last "
        f"{sm.get('max_last_third')}, {sm['slope_per_min']}/min): bounded "
        f"{yes(sm['bounded'])}",
        f"soak: write amplification {amp.get('per_point_byte')} per 16-byte point, "
        f"{amp.get('per_wire_byte')} per wire byte; bar: {'PASS' if bar['pass'] else 'FAIL'}",
    ]
