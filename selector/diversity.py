"""Temporal, spatial and feature diversity against a bounded memory of selected frames.

Each remembered frame has a timestamp (s), an ego position (m, xy or xyz) and a unit-norm
embedding. The distance of a new frame to a remembered one is a weighted sum of three
distances, each normalised to [0, 1]::

    d_t = min(|dt| / time_scale_s, 1)
    d_s = min(|dp| / space_scale_m, 1)
    d_f = (1 - cos(e, e')) / 2
    d   = w_t d_t + w_s d_s + w_f d_f          (w_t + w_s + w_f = 1)

and the *novelty* of the frame is the smallest ``d`` over the memory (1.0 for an empty
memory). A car waiting at a red light produces frames close in time, space and features:
novelty near 0, below ``similar_threshold``, so they are too similar to what was selected.

**Exact, but pruned.** Every term is >= 0 and ``d_f <= 1``, so ``w_t d_t + w_s d_s`` is a lower
bound of ``d``: an entry whose bound is not below the best ``d`` found so far cannot win.
Entries are indexed in time order (sorted lists, ``bisect``) and in a spatial hash on xy
(cells of ``space_scale_m``), so the search

1. evaluates the few entries nearest in time, which gives a first ``best``;
2. visits the time window ``|dt| < best * time_scale_s / w_t`` (all of ``|dt| < time_scale_s``
   if ``best > w_t``), cut out with ``bisect``: outside it ``w_t d_t >= best``;
3. if still ``best > w_t``: every entry outside the window has ``d_t = 1``, so it can only win
   if ``w_s d_s < best - w_t``: the spatial hash yields the entries within that reach;
4. only if ``best - w_t >= w_s`` (nothing near in time or space, and the near ones differ in
   features) does it fall back to a vectorised pass over the whole memory: the time + space
   bound for every entry, then features for the entries whose bound beats ``best`` (the 64
   lowest bounds first, then the survivors in one matvec).

A visit computes the time + space bound first, in plain Python for small sets (numpy call
overhead dominates below ~50 entries) and vectorised for large ones, and the feature distance
only for entries whose bound beats ``best``, in increasing order of the bound. The result is
the same as a brute-force pass (tested against one, with random data, both evictions and
wraparound). The worst case (step 4) costs one full matvec over the memory, like brute force;
``novelty(..., cap=c)`` starts the search from ``c`` instead of 1, which is all that a
too-similar veto needs and stays near the frame's own time and place: with ``c <= w_t`` it is
a single visit of the window ``|dt| < c * time_scale_s / w_t`` (step 2 without step 1).

>>> mem = DiversityMemory(capacity=4, dim=3, time_scale_s=10.0, space_scale_m=20.0,
...                       weights=(0.25, 0.25, 0.5), similar_threshold=0.1)
>>> mem.novelty(0.0, (0.0, 0.0), [1.0, 0.0, 0.0]).value
1.0
>>> mem.add(0.0, (0.0, 0.0), [1.0, 0.0, 0.0])
True
>>> nov = mem.novelty(1.0, (0.0, 2.0), [1.0, 0.0, 0.0])
>>> round(nov.value, 4), round(nov.d_time, 4), round(nov.d_space, 4), nov.d_feature
(0.05, 0.1, 0.1, 0.0)
>>> mem.is_too_similar(nov.value)
True
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from selector.errors import InvalidConfigError, InvalidScoresError, StateError
from selector.state import array, field, rng_from_state, rng_state

Eviction = Literal["fifo", "reservoir"]
EVICTIONS: tuple[str, ...] = ("fifo", "reservoir")

_SEED_NEIGHBOURS = 2  # entries each side of the query time evaluated first
_ROUND = 64  # feature rows evaluated in the first pruning round of a vectorised pass
_PYTHON_WINDOW = 48  # time windows up to this size are bounded in plain Python
_ROWWISE = 8  # up to this many feature rows: one dot product each, pruned as we go


class Novelty(NamedTuple):
    """Novelty of a frame and the normalised distances to its nearest remembered frame."""

    value: float
    d_time: float
    d_space: float
    d_feature: float


EMPTY_NOVELTY = Novelty(1.0, 1.0, 1.0, 1.0)


def unit_embedding(embedding: ArrayLike, dim: int) -> NDArray[np.float32]:
    """``embedding`` checked (shape ``(dim,)``, finite, non-zero) and scaled to unit norm."""
    e = np.asarray(embedding, dtype=np.float32)
    if e.shape != (dim,):
        raise InvalidScoresError(f"embedding must have shape ({dim},), got {e.shape}")
    norm = math.sqrt(float(e.dot(e)))  # the method: less call overhead than np.dot
    if not (math.isfinite(norm) and norm > 0.0):
        raise InvalidScoresError("embedding must be finite and non-zero")
    out: NDArray[np.float32] = e / np.float32(norm)
    return out


def _err(name: str, message: str) -> InvalidConfigError:
    return InvalidConfigError(f"{name}: {message}")


class DiversityMemory:
    """Bounded memory of selected frames, queried for novelty; see the module docstring.

    ``novelty`` is a pure query; ``add`` stores a frame, evicting one when full: ``"fifo"``
    drops the oldest added, ``"reservoir"`` keeps a uniform random sample of everything ever
    added (Vitter's algorithm R, seeded), so a new frame may itself be the one not kept.
    """

    def __init__(
        self,
        capacity: int,
        dim: int,
        *,
        time_scale_s: float,
        space_scale_m: float,
        weights: tuple[float, float, float] = (0.25, 0.25, 0.5),
        similar_threshold: float = 0.05,
        eviction: Eviction = "fifo",
        seed: int = 0,
    ) -> None:
        if not (isinstance(capacity, int) and capacity >= 1):
            raise _err("capacity", f"must be an int >= 1, got {capacity!r}")
        if not (isinstance(dim, int) and dim >= 1):
            raise _err("dim", f"must be an int >= 1, got {dim!r}")
        if not (math.isfinite(time_scale_s) and time_scale_s > 0):
            raise _err("time_scale_s", f"must be > 0, got {time_scale_s!r}")
        if not (math.isfinite(space_scale_m) and space_scale_m > 0):
            raise _err("space_scale_m", f"must be > 0, got {space_scale_m!r}")
        if len(weights) != 3 or any(not (math.isfinite(w) and w >= 0) for w in weights):
            raise _err("weights", f"must be three finite weights >= 0, got {weights!r}")
        if abs(sum(weights) - 1.0) > 1e-9:
            raise _err("weights", f"must sum to 1, got {weights!r} (sum {sum(weights)!r})")
        if not 0.0 <= similar_threshold <= 1.0:
            raise _err("similar_threshold", f"must be in [0, 1], got {similar_threshold!r}")
        if eviction not in EVICTIONS:
            raise _err("eviction", f"must be one of {EVICTIONS}, got {eviction!r}")
        self.capacity = capacity
        self.dim = dim
        self.time_scale_s = float(time_scale_s)
        self.space_scale_m = float(space_scale_m)
        self.weights = (float(weights[0]), float(weights[1]), float(weights[2]))
        self.similar_threshold = float(similar_threshold)
        self.eviction: Eviction = eviction
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        # Storage by slot.
        self._t = np.zeros(capacity, dtype=np.float64)
        self._p = np.zeros((capacity, 3), dtype=np.float64)
        self._e = np.zeros((capacity, dim), dtype=np.float32)
        self._pl: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)] * capacity
        self._ts: list[float] = [0.0] * capacity
        # Spatial hash on xy, cells of space_scale_m: slots per cell.
        self._grid: dict[tuple[int, int], list[int]] = {}
        # Time index: sorted timestamps and the slot of each (plain lists: bisect and
        # insert on them cost far less than numpy calls at this size).
        self._tl: list[float] = []
        self._sl: list[int] = []
        self._n = 0
        self._added = 0  # frames ever offered to add()

    def __len__(self) -> int:
        return self._n

    @property
    def added(self) -> int:
        """Frames ever offered to :meth:`add` (kept or not)."""
        return self._added

    def is_too_similar(self, novelty: float) -> bool:
        """Whether a frame of this novelty is too similar to the memory."""
        return novelty < self.similar_threshold

    # -- input checks ------------------------------------------------------------------------
    @staticmethod
    def _position(position: ArrayLike) -> tuple[float, float, float]:
        if isinstance(position, tuple | list):
            coords = position
        else:
            p = np.asarray(position, dtype=np.float64)
            coords = p.tolist() if p.ndim == 1 else [p.tolist()]
        try:
            if len(coords) == 2:
                x, y, z = float(coords[0]), float(coords[1]), 0.0
            elif len(coords) == 3:
                x, y, z = float(coords[0]), float(coords[1]), float(coords[2])
            else:
                raise InvalidScoresError(f"position must be (x, y) or (x, y, z), got {coords!r}")
        except (TypeError, ValueError) as exc:
            raise InvalidScoresError(f"position must be numbers, got {coords!r}") from exc
        if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
            raise InvalidScoresError(f"position must be finite, got {coords!r}")
        return x, y, z

    check_position = _position  # public: what a frame's position must be

    def _embedding(self, embedding: ArrayLike) -> NDArray[np.float32]:
        return unit_embedding(embedding, self.dim)

    # -- query -------------------------------------------------------------------------------
    def novelty(
        self,
        timestamp_s: float,
        position: ArrayLike,
        embedding: ArrayLike,
        *,
        cap: float = 1.0,
    ) -> Novelty:
        """Novelty of a frame against the memory (pure; 1.0 when the memory is empty).

        With ``cap < 1`` the search starts from ``cap`` as its best value: the result is exact
        when the novelty is below ``cap``, and ``Novelty(cap, 1, 1, 1)`` (meaning "at least
        ``cap``") otherwise. Deciding "too similar or not" needs no more, and with a small
        ``cap`` only entries close in time *and* space are ever looked at, whatever the
        memory holds.

        >>> mem = DiversityMemory(8, 2, time_scale_s=10.0, space_scale_m=10.0)
        >>> mem.add(0.0, (0.0, 0.0), [1.0, 0.0])
        True
        >>> mem.novelty(5.0, (0.0, 0.0), [0.0, 1.0]).value
        0.375
        >>> mem.novelty(5.0, (0.0, 0.0), [0.0, 1.0], cap=0.1)
        Novelty(value=0.1, d_time=1.0, d_space=1.0, d_feature=1.0)
        """
        if not 0.0 < cap <= 1.0:
            raise InvalidScoresError(f"cap must be in (0, 1], got {cap!r}")
        t = float(timestamp_s)
        if not math.isfinite(t):
            raise InvalidScoresError(f"timestamp_s must be finite, got {timestamp_s!r}")
        xyz = self._position(position)
        q = self._embedding(embedding)
        n = self._n
        start = EMPTY_NOVELTY if cap >= 1.0 else Novelty(cap, 1.0, 1.0, 1.0)
        if n == 0:
            return start
        wt, ws, _ = self.weights
        tl, sl = self._tl, self._sl
        if cap <= wt:
            # A capped search (a veto): only entries with w_t d_t < cap can win, so one visit
            # of that time window does it, without steps 1 and 3-4.
            radius = cap * self.time_scale_s / wt
            a = bisect_right(tl, t - radius)
            b = bisect_left(tl, t + radius)
            return self._visit(sl[a:b], t, xyz, q, start)
        # 1. The neighbours in time give a first best.
        i = bisect_left(tl, t)
        lo, hi = max(0, i - _SEED_NEIGHBOURS), min(n, i + _SEED_NEIGHBOURS)
        best = self._visit(sl[lo:hi], t, xyz, q, start)
        # 2. Entries with w_t d_t >= best cannot win: cut the time window with bisect.
        radius = self.time_scale_s if best.value > wt else best.value * self.time_scale_s / wt
        a = bisect_right(tl, t - radius)
        b = bisect_left(tl, t + radius)
        if a < lo or b > hi:
            best = self._visit(sl[a:lo] + sl[hi:b], t, xyz, q, best)
        if best.value <= wt:
            return best
        # 3. Everything outside the window is a full time_scale away (d_t = 1), so only
        #    entries with w_s d_s < best - w_t can still win.
        if ws > 0.0 and best.value - wt < ws:
            reach = (best.value - wt) / ws * self.space_scale_m
            ts = self._ts  # skip the window just visited: |dt| < radius
            others = [s for s in self._near(xyz, reach) if abs(ts[s] - t) >= radius]
            return self._visit(others, t, xyz, q, best)
        # 4. Nothing prunes (features dominate the weights): a full vectorised pass.
        return self._search(None, t, np.array(xyz), q, best)

    def _near(self, xyz: tuple[float, float, float], reach: float) -> list[int]:
        """Slots whose xy cell lies within ``reach`` metres of ``xyz`` (a superset)."""
        size = self.space_scale_m
        cx0, cx1 = math.floor((xyz[0] - reach) / size), math.floor((xyz[0] + reach) / size)
        cy0, cy1 = math.floor((xyz[1] - reach) / size), math.floor((xyz[1] + reach) / size)
        grid = self._grid
        out: list[int] = []
        for cx in range(cx0, cx1 + 1):
            for cy in range(cy0, cy1 + 1):
                cell = grid.get((cx, cy))
                if cell:
                    out.extend(cell)
        return out

    def _visit(
        self,
        slots: list[int],
        t: float,
        xyz: tuple[float, float, float],
        q: NDArray[np.float32],
        best: Novelty,
    ) -> Novelty:
        """Best of ``best`` and ``slots``: the time + space bound first, features if it wins."""
        if not slots:
            return best
        if len(slots) > _PYTHON_WINDOW:
            return self._search(np.asarray(slots, dtype=np.int64), t, np.array(xyz), q, best)
        wt, ws, _ = self.weights
        inv_t, inv_s = 1.0 / self.time_scale_s, 1.0 / self.space_scale_m
        x, y, z = xyz
        ts, pl = self._ts, self._pl
        limit = best.value
        rows: list[int] = []
        bounds: list[tuple[float, float, float]] = []
        sqrt = math.sqrt
        for slot in slots:  # plain comparisons instead of min/abs: this loop is the hot spot
            dt = ts[slot] - t
            if dt < 0.0:
                dt = -dt
            dt *= inv_t
            if dt > 1.0:
                dt = 1.0
            if wt * dt >= limit:  # the bound can only grow: skip the distance
                continue
            px, py, pz = pl[slot]
            dx, dy, dz = px - x, py - y, pz - z
            ds = sqrt(dx * dx + dy * dy + dz * dz) * inv_s
            if ds > 1.0:
                ds = 1.0
            bound = wt * dt + ws * ds
            if bound < limit:
                rows.append(slot)
                bounds.append((bound, dt, ds))
        return self._features(rows, bounds, q, best)

    def _features(
        self,
        rows: list[int],
        bounds: list[tuple[float, float, float]],
        q: NDArray[np.float32],
        best: Novelty,
    ) -> Novelty:
        """Best of ``best`` and the slots ``rows`` with their (bound, d_t, d_s).

        Few rows: one dot product each, in increasing order of the bound, skipping rows whose
        bound no longer beats the best. Many rows: one gathered matvec.
        """
        if not rows:
            return best
        wf = self.weights[2]
        emb = self._e
        if len(rows) <= _ROWWISE:
            order = (
                range(1) if len(rows) == 1 else sorted(range(len(rows)), key=lambda j: bounds[j][0])
            )
            for j in order:
                bound, dt, ds = bounds[j]
                if bound >= best.value:
                    break
                df = min(max((1.0 - float(emb[rows[j]].dot(q))) * 0.5, 0.0), 1.0)
                total = bound + wf * df
                if total < best.value:
                    best = Novelty(total, dt, ds, df)
            return best
        sims: list[float] = (emb[rows] @ q).tolist()
        for sim, (bound, dt, ds) in zip(sims, bounds, strict=True):
            df = min(max((1.0 - sim) * 0.5, 0.0), 1.0)
            total = bound + wf * df
            if total < best.value:
                best = Novelty(total, dt, ds, df)
        return best

    def _search(
        self,
        idx: NDArray[np.int64] | None,
        t: float,
        p: NDArray[np.float64],
        q: NDArray[np.float32],
        best: Novelty,
    ) -> Novelty:
        """Best of ``best`` and the entries ``idx`` (slots; ``None``: every slot), pruned by
        the time + space lower bound, vectorised."""
        wt, ws, _ = self.weights
        if idx is None:
            n = self._n
            times, pos, emb = self._t[:n], self._p[:n], self._e[:n]
        else:
            if idx.size == 0:
                return best
            times, pos, emb = self._t[idx], self._p[idx], self._e
        dt = np.minimum(np.abs(times - t) * (1.0 / self.time_scale_s), 1.0)
        dp = pos - p
        ds = np.minimum(np.sqrt(np.einsum("ij,ij->i", dp, dp)) * (1.0 / self.space_scale_m), 1.0)
        lb = wt * dt + ws * ds
        m = lb.size
        keep = np.flatnonzero(lb < best.value)
        if keep.size > _ROUND:
            # First round: the lowest bounds, which usually find a tight best.
            first = np.argpartition(lb[keep], _ROUND)[:_ROUND]
            best = self._score(keep[first], idx, emb, q, dt, ds, lb, best)
            keep = keep[lb[keep] < best.value]
        if keep.size == 0:
            return best
        if idx is None and keep.size * 4 > m:
            # Most rows survive: one contiguous matvec beats gathering the rows.
            sims = (emb @ q)[keep]
            return self._best_of(keep, sims, dt, ds, lb, best)
        return self._score(keep, idx, emb, q, dt, ds, lb, best)

    def _score(
        self,
        keep: NDArray[np.intp],
        idx: NDArray[np.int64] | None,
        emb: NDArray[np.float32],
        q: NDArray[np.float32],
        dt: NDArray[np.float64],
        ds: NDArray[np.float64],
        lb: NDArray[np.float64],
        best: Novelty,
    ) -> Novelty:
        rows = keep if idx is None else idx[keep]
        sims = emb[rows] @ q
        return self._best_of(keep, sims, dt, ds, lb, best)

    def _best_of(
        self,
        keep: NDArray[np.intp],
        sims: NDArray[np.float32],
        dt: NDArray[np.float64],
        ds: NDArray[np.float64],
        lb: NDArray[np.float64],
        best: Novelty,
    ) -> Novelty:
        df = (1.0 - sims.astype(np.float64)) * 0.5
        np.clip(df, 0.0, 1.0, out=df)
        total = lb[keep] + self.weights[2] * df
        j = int(np.argmin(total))
        if total[j] < best.value:
            k = keep[j]
            best = Novelty(float(total[j]), float(dt[k]), float(ds[k]), float(df[j]))
        return best

    def brute_force_novelty(
        self, timestamp_s: float, position: ArrayLike, embedding: ArrayLike
    ) -> float:
        """Reference implementation: one full pass over the memory (for tests and benches)."""
        p = np.array(self._position(position))
        q = self._embedding(embedding)
        n = self._n
        if n == 0:
            return 1.0
        wt, ws, wf = self.weights
        dt = np.minimum(np.abs(self._t[:n] - timestamp_s) / self.time_scale_s, 1.0)
        ds = np.minimum(np.linalg.norm(self._p[:n] - p, axis=1) / self.space_scale_m, 1.0)
        df = np.clip((1.0 - (self._e[:n] @ q).astype(np.float64)) * 0.5, 0.0, 1.0)
        return float(np.min(wt * dt + ws * ds + wf * df))

    # -- mutation ----------------------------------------------------------------------------
    def add(self, timestamp_s: float, position: ArrayLike, embedding: ArrayLike) -> bool:
        """Remember a selected frame; returns whether it was kept (reservoir may decline)."""
        t = float(timestamp_s)
        if not math.isfinite(t):
            raise InvalidScoresError(f"timestamp_s must be finite, got {timestamp_s!r}")
        xyz = self._position(position)
        e = self._embedding(embedding)
        k = self._added
        self._added += 1
        if self._n < self.capacity:
            slot = self._n
        elif self.eviction == "fifo":
            slot = k % self.capacity
            self._unindex(slot)
        else:
            j = int(self._rng.integers(0, k + 1))
            if j >= self.capacity:
                return False
            slot = j
            self._unindex(slot)
        self._t[slot] = t
        self._ts[slot] = t
        self._p[slot] = xyz
        self._pl[slot] = xyz
        self._grid.setdefault(self._cell(xyz), []).append(slot)
        self._e[slot] = e
        pos = bisect_right(self._tl, t)
        self._tl.insert(pos, t)
        self._sl.insert(pos, slot)
        self._n += 1
        return True

    def _unindex(self, slot: int) -> None:
        """Remove ``slot`` from the time index."""
        pos = bisect_left(self._tl, float(self._t[slot]))
        while self._sl[pos] != slot:
            pos += 1
        del self._tl[pos]
        del self._sl[pos]
        cell = self._cell(self._pl[slot])
        members = self._grid[cell]
        members.remove(slot)
        if not members:
            del self._grid[cell]
        self._n -= 1

    def _cell(self, xyz: tuple[float, float, float]) -> tuple[int, int]:
        size = self.space_scale_m
        return math.floor(xyz[0] / size), math.floor(xyz[1] / size)

    # -- state -------------------------------------------------------------------------------
    def config_json(self) -> dict[str, Any]:
        """The construction parameters, JSON-able."""
        return {
            "capacity": self.capacity,
            "dim": self.dim,
            "time_scale_s": self.time_scale_s,
            "space_scale_m": self.space_scale_m,
            "weights": list(self.weights),
            "similar_threshold": self.similar_threshold,
            "eviction": self.eviction,
            "seed": self.seed,
        }

    def get_state(self) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
        """JSON-able scalars and arrays that restore this memory exactly."""
        n = self._n
        header = {
            "config": self.config_json(),
            "n": n,
            "added": self._added,
            "rng": rng_state(self._rng),
        }
        arrays: dict[str, NDArray[Any]] = {
            "t": self._t[:n].copy(),
            "p": self._p[:n].copy(),
            "e": self._e[:n].copy(),
            "ss": np.asarray(self._sl, dtype=np.int64),
        }
        return header, arrays

    def restore(self, header: Mapping[str, Any], arrays: Mapping[str, NDArray[Any]]) -> None:
        """Load state from :meth:`get_state` into this (freshly built, same config) memory."""
        if field(header, "config", dict) != self.config_json():
            raise StateError("selector state was saved with a different diversity configuration")
        n = field(header, "n", int)
        added = field(header, "added", int)
        if not 0 <= n <= self.capacity or added < n:
            raise StateError("corrupt selector state: memory size out of range")
        t = array(arrays, "t", np.float64, (n,))
        p = array(arrays, "p", np.float64, (n, 3))
        e = array(arrays, "e", np.float32, (n, self.dim))
        ss = array(arrays, "ss", np.int64, (n,))
        if sorted(ss.tolist()) != list(range(n)) or not np.all(np.isfinite(t)):
            raise StateError("corrupt selector state: memory index is not a permutation")
        self._rng = rng_from_state(header.get("rng"))
        self._t[:n] = t
        self._p[:n] = p
        self._e[:n] = e
        self._pl = [(0.0, 0.0, 0.0)] * self.capacity
        self._ts = [0.0] * self.capacity
        self._grid = {}
        for slot, (xyz, ts) in enumerate(zip(p.tolist(), t.tolist(), strict=True)):
            self._pl[slot] = (xyz[0], xyz[1], xyz[2])
            self._ts[slot] = ts
            self._grid.setdefault(self._cell(self._pl[slot]), []).append(slot)
        self._sl = ss.tolist()
        self._tl = t[ss].tolist()
        if any(b < a for a, b in itertools.pairwise(self._tl)):
            raise StateError("corrupt selector state: memory time index is not sorted")
        self._n = n
        self._added = added


def memory_from_config(
    config: Mapping[str, Any],
) -> DiversityMemory:
    """Build a memory from :meth:`DiversityMemory.config_json` output."""
    try:
        weights: Sequence[float] = config["weights"]
        return DiversityMemory(
            config["capacity"],
            config["dim"],
            time_scale_s=config["time_scale_s"],
            space_scale_m=config["space_scale_m"],
            weights=(weights[0], weights[1], weights[2]),
            similar_threshold=config["similar_threshold"],
            eviction=config["eviction"],
            seed=config["seed"],
        )
    except (KeyError, TypeError, IndexError) as exc:
        raise StateError(f"corrupt selector state: diversity config: {exc}") from exc
