"""One sensor quantity's running figures: rolling windows and clock-aligned blocks.

`add` is O(1) per sample (amortised: each sample enters and leaves each window once). All
rolling windows share one ring of (time, value) so a sample is stored once. Noise keeps an
integer histogram of 0.1-dB bins per window (see levels.py); means keep integer sums of
milli-units, so neither drifts however long the box runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_agent.measures.calendar import SiteCalendar
from edge_agent.measures.levels import N_BINS, PERCENTILES, figures, leq_from_hist, level_bin

NOISE_WINDOWS = (60, 300, 1200, 3600)
MEAN_WINDOWS = (60, 300, 900, 3600)
BLOCK_PERIODS = (60, 3600, 86400)
STATS_WINDOWS = (1200, 3600)  # rolling windows that also report L_N (others: leq, lmax, lmin)
MILLI = 1000  # means are kept as integer sums of value * MILLI
MAX_UNCLAIMED = 3  # finished blocks kept per period until close_period() asks for them


@dataclass(frozen=True)
class Figure:
    """One computed figure before it becomes a Measure (the engine adds sensor and unit)."""

    window_s: int
    figure: str
    value: float | None
    samples: int
    invalid: int
    valid: bool


class _Ring:
    """Times and payloads of recent samples, addressed by absolute index; grows when needed."""

    __slots__ = ("cap", "mask", "t", "v")

    def __init__(self, cap: int = 4096):
        self.cap = cap
        self.mask = cap - 1
        self.t = [0.0] * cap
        self.v = [0] * cap

    def grow(self, lo: int, hi: int) -> None:
        """Double the capacity keeping absolute indices lo..hi-1 valid."""
        cap = self.cap * 2
        t, v = [0.0] * cap, [0] * cap
        for i in range(lo, hi):
            t[i & (cap - 1)] = self.t[i & self.mask]
            v[i & (cap - 1)] = self.v[i & self.mask]
        self.cap, self.mask, self.t, self.v = cap, cap - 1, t, v


@dataclass
class _Block:
    start: float = float("-inf")
    end: float = float("-inf")  # -inf: no open block; the next sample opens one
    valid: int = 0
    invalid: int = 0
    hist: list[int] = field(default_factory=list)  # noise
    total: int = 0  # means: sum of milli-units
    lo: int = 0
    hi: int = 0
    day_hist: list[int] = field(default_factory=list)  # daily noise block only
    night_hist: list[int] = field(default_factory=list)
    day_n: int = 0
    night_n: int = 0
    night_s: float = 0.0  # seconds of schedule night in this block (for Ln validity)


class _Series:
    """Shared machinery: the ring, window bookkeeping, block roll-over."""

    windows: tuple[int, ...] = ()

    def __init__(self, calendar: SiteCalendar, period_s: float, validity: float):
        self.cal = calendar
        self.period_s = period_s
        self.validity = validity
        self.ring = _Ring()
        self.n = 0  # absolute index of the next sample
        self.last_t = float("-inf")
        self.w_len = list(self.windows)
        self.w_start = [0] * len(self.windows)
        self.w_valid = [0] * len(self.windows)
        self.w_invalid = [0] * len(self.windows)
        self.blocks = [self._new_block() for _ in BLOCK_PERIODS]
        self.closed: list[dict[float, _Block]] = [{} for _ in BLOCK_PERIODS]
        self.closed_until = [float("-inf")] * len(BLOCK_PERIODS)
        self.late = 0  # samples dropped because their block had already been closed
        self.unit = ""

    def _new_block(self) -> _Block:
        return _Block()

    def expected(self, seconds: float) -> float:
        return seconds / self.period_s

    def _is_valid(self, valid: int, seconds: float) -> bool:
        return valid > 0 and valid >= self.validity * self.expected(seconds) - 1e-9

    def _roll(self, k: int, t: float) -> bool:
        """Open the block holding t (closing the current one). False: t is in a closed block."""
        if t < self.closed_until[k]:
            self.late += 1
            return False
        blk = self.blocks[k]
        if blk.valid or blk.invalid:
            closed = self.closed[k]
            closed[blk.end] = blk
            if len(closed) > MAX_UNCLAIMED:  # nobody asks for this period: do not hoard blocks
                del closed[min(closed)]
        new = self._new_block()
        new.start, new.end = self.cal.block_bounds(BLOCK_PERIODS[k], t)
        self._opened(new, k)
        self.blocks[k] = new
        return True

    def _opened(self, blk: _Block, k: int) -> None:
        pass

    def clock_stepped(self, delta: float) -> None:
        """The wall clock jumped by `delta` s: relabel the samples in the rolling windows (they were
        taken just now, under the old labels) and, after a step back, drop the open blocks, whose
        bounds lie in the new clock's future (their few samples are lost to the blocks, not to
        the windows). After a step forward the open blocks are closed by their owner, once."""
        mask, times = self.ring.mask, self.ring.t
        for i in range(min(self.w_start), self.n):
            times[i & mask] += delta
        self.last_t += delta
        if delta < 0:
            self.blocks = [self._new_block() for _ in BLOCK_PERIODS]
            self.closed = [{} for _ in BLOCK_PERIODS]
            self.closed_until = [float("-inf")] * len(BLOCK_PERIODS)

    def close(self, k: int, end: float) -> _Block | None:
        """Finish the block ending at `end` and hand it out (None: no sample in it)."""
        blk = self.blocks[k]
        if blk.end <= end and (blk.valid or blk.invalid):
            self.closed[k][blk.end] = blk
            self.blocks[k] = self._new_block()
        self.closed_until[k] = max(self.closed_until[k], end)
        done = self.closed[k].pop(end, None)
        for stale_end in [e for e in self.closed[k] if e <= end]:
            del self.closed[k][stale_end]
        return done


class NoiseSeries(_Series):
    windows = NOISE_WINDOWS

    def __init__(self, calendar: SiteCalendar, period_s: float, validity: float):
        super().__init__(calendar, period_s, validity)
        self.w_hist = [[0] * N_BINS for _ in self.windows]
        self._night = False
        self._night_switch = float("-inf")

    def _new_block(self) -> _Block:
        return _Block(hist=[0] * N_BINS)

    def _opened(self, blk: _Block, k: int) -> None:
        if BLOCK_PERIODS[k] == 86400:
            blk.day_hist = [0] * N_BINS
            blk.night_hist = [0] * N_BINS
            blk.night_s = sum(e - s for s, e in self.cal.night_spans(blk.start))

    def add(self, t: float, value: float | None) -> None:
        """One sample; value None (or out of 0..160 dB) counts as invalid."""
        b = -1 if value is None else level_bin(value)
        if t < self.last_t:
            t = self.last_t  # a clock step back: keep the ring ordered
        self.last_t = t
        ring = self.ring
        i = self.n
        if i - self.w_start[-1] >= ring.cap:
            ring.grow(self.w_start[-1], i)
        mask = ring.mask
        times, vals = ring.t, ring.v
        times[i & mask] = t
        vals[i & mask] = b
        self.n = i + 1
        w_start, w_valid, w_invalid, w_hist = self.w_start, self.w_valid, self.w_invalid, self.w_hist
        for k, length in enumerate(self.w_len):
            hist = w_hist[k]
            if b >= 0:
                hist[b] += 1
                w_valid[k] += 1
            else:
                w_invalid[k] += 1
            cutoff = t - length
            s = w_start[k]
            if times[s & mask] <= cutoff:
                while times[s & mask] <= cutoff:
                    ob = vals[s & mask]
                    if ob >= 0:
                        hist[ob] -= 1
                        w_valid[k] -= 1
                    else:
                        w_invalid[k] -= 1
                    s += 1
                w_start[k] = s
        for k, blk in enumerate(self.blocks):
            if t >= blk.end and not self._roll(k, t):
                continue
            blk = self.blocks[k]
            if t < blk.start:
                self.late += 1
                continue
            if b >= 0:
                blk.hist[b] += 1
                blk.valid += 1
                if blk.night_hist:
                    if t >= self._night_switch:
                        self._night, self._night_switch = self.cal.is_night(t)
                    if self._night:
                        blk.night_hist[b] += 1
                        blk.night_n += 1
                    else:
                        blk.day_hist[b] += 1
                        blk.day_n += 1
            else:
                blk.invalid += 1

    def evict(self, now: float) -> None:
        mask, times, vals = self.ring.mask, self.ring.t, self.ring.v
        for k, length in enumerate(self.w_len):
            cutoff = now - length
            s = self.w_start[k]
            hist = self.w_hist[k]
            while s < self.n and times[s & mask] <= cutoff:
                ob = vals[s & mask]
                if ob >= 0:
                    hist[ob] -= 1
                    self.w_valid[k] -= 1
                else:
                    self.w_invalid[k] -= 1
                s += 1
            self.w_start[k] = s

    def rolling(self, now: float) -> list[Figure]:
        self.evict(now)
        out: list[Figure] = []
        for k, length in enumerate(self.w_len):
            n, bad = self.w_valid[k], self.w_invalid[k]
            ok = self._is_valid(n, length)
            pct = PERCENTILES if length in STATS_WINDOWS else ()
            figs = figures(self.w_hist[k], n, pct)
            for name in ("leq", "lmax", "lmin", *(f"l{p}" for p in pct)):
                out.append(Figure(length, name, figs.get(name), n, bad, ok))
        return out

    def block_figures(self, period: int, blk: _Block | None) -> list[Figure]:
        names = ("leq", "lmax", "lmin", *(f"l{p}" for p in PERCENTILES))
        if blk is None:
            out = [Figure(period, name, None, 0, 0, False) for name in names]
            if period == 86400:
                out += [Figure(period, "ld", None, 0, 0, False), Figure(period, "ln", None, 0, 0, False)]
            return out
        seconds = blk.end - blk.start
        ok = self._is_valid(blk.valid, seconds)
        figs = figures(blk.hist, blk.valid)
        out = [Figure(period, name, figs.get(name), blk.valid, blk.invalid, ok) for name in names]
        if period == 86400:
            day_s = seconds - blk.night_s
            out.append(Figure(period, "ld", leq_from_hist(blk.day_hist, blk.day_n), blk.day_n, 0,
                              self._is_valid(blk.day_n, day_s)))
            out.append(Figure(period, "ln", leq_from_hist(blk.night_hist, blk.night_n), blk.night_n, 0,
                              self._is_valid(blk.night_n, blk.night_s)))
        return out


class MeanSeries(_Series):
    """Arithmetic means (dust, weather): rolling avg, block avg/min/max."""

    windows = MEAN_WINDOWS

    def __init__(self, calendar: SiteCalendar, period_s: float, validity: float):
        super().__init__(calendar, period_s, validity)
        self.w_sum = [0] * len(self.windows)

    INVALID = -(1 << 62)  # ring marker for an invalid sample

    def add(self, t: float, value: float | None) -> None:
        # None, NaN and absurd values are invalid samples
        q = self.INVALID if value is None or value != value or abs(value) > 1e12 else round(value * MILLI)
        if t < self.last_t:
            t = self.last_t
        self.last_t = t
        ring = self.ring
        i = self.n
        if i - self.w_start[-1] >= ring.cap:
            ring.grow(self.w_start[-1], i)
        mask = ring.mask
        times, vals = ring.t, ring.v
        times[i & mask] = t
        vals[i & mask] = q
        self.n = i + 1
        invalid = self.INVALID
        w_start, w_valid, w_invalid, w_sum = self.w_start, self.w_valid, self.w_invalid, self.w_sum
        for k, length in enumerate(self.w_len):
            if q != invalid:
                w_sum[k] += q
                w_valid[k] += 1
            else:
                w_invalid[k] += 1
            cutoff = t - length
            s = w_start[k]
            while times[s & mask] <= cutoff:
                oq = vals[s & mask]
                if oq != invalid:
                    w_sum[k] -= oq
                    w_valid[k] -= 1
                else:
                    w_invalid[k] -= 1
                s += 1
            w_start[k] = s
        for k, blk in enumerate(self.blocks):
            if t >= blk.end and not self._roll(k, t):
                continue
            blk = self.blocks[k]
            if t < blk.start:
                self.late += 1
                continue
            if q != invalid:
                if blk.valid == 0 or q < blk.lo:
                    blk.lo = q
                if blk.valid == 0 or q > blk.hi:
                    blk.hi = q
                blk.total += q
                blk.valid += 1
            else:
                blk.invalid += 1

    def evict(self, now: float) -> None:
        mask, times, vals = self.ring.mask, self.ring.t, self.ring.v
        for k, length in enumerate(self.w_len):
            cutoff = now - length
            s = self.w_start[k]
            while s < self.n and times[s & mask] <= cutoff:
                oq = vals[s & mask]
                if oq != self.INVALID:
                    self.w_sum[k] -= oq
                    self.w_valid[k] -= 1
                else:
                    self.w_invalid[k] -= 1
                s += 1
            self.w_start[k] = s

    def rolling(self, now: float) -> list[Figure]:
        self.evict(now)
        out = []
        for k, length in enumerate(self.w_len):
            n = self.w_valid[k]
            value = self.w_sum[k] / MILLI / n if n else None
            out.append(Figure(length, "avg", value, n, self.w_invalid[k], self._is_valid(n, length)))
        return out

    def block_figures(self, period: int, blk: _Block | None) -> list[Figure]:
        if blk is None or blk.valid == 0:
            bad = blk.invalid if blk else 0
            return [Figure(period, name, None, 0, bad, False) for name in ("avg", "min", "max")]
        ok = self._is_valid(blk.valid, blk.end - blk.start)
        n = blk.valid
        return [
            Figure(period, "avg", blk.total / MILLI / n, n, blk.invalid, ok),
            Figure(period, "min", blk.lo / MILLI, n, blk.invalid, ok),
            Figure(period, "max", blk.hi / MILLI, n, blk.invalid, ok),
        ]
