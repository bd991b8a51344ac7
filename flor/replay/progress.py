"""Progress of a replay: a bar per running run and one overall, with elapsed and estimated time.

It is drawn on stderr, apart from the results. On a terminal the bars are redrawn in place; only
the runs being replayed get a bar (at most as many as the terminal has rows for), and the overall
line counts the others, so that a replay of many runs never draws more lines than fit. Otherwise
a line is printed when a run advances by a quarter, so logs stay short.
"""

from __future__ import annotations

import shutil
import time

WIDTH = 24


def _bar(done: int, total: int) -> str:
    filled = int(WIDTH * done / total) if total else WIDTH
    return "[" + "#" * filled + "." * (WIDTH - filled) + "]"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


class Progress:
    """Receives (task key, iterations done) and draws bars per run."""

    def __init__(self, out, totals: dict[str, int], owners: dict[str, str]) -> None:
        self.out = out
        self.totals = totals
        self.owners = owners
        self.by_task: dict[str, int] = {}
        self.started = time.monotonic()
        self.tty = hasattr(out, "isatty") and out.isatty()
        self.drawn = 0
        self.last_quarter: dict[str, int] = {}
        self.last_draw = 0.0

    def _done(self, run: str) -> int:
        return min(self.totals[run], sum(d for k, d in self.by_task.items() if self.owners[k] == run))

    def update(self, key: str, done: int) -> None:
        """Task ``key`` has finished ``done`` outer iterations."""
        if self.by_task.get(key) == done:
            return
        self.by_task[key] = done
        if self.tty:
            if time.monotonic() - self.last_draw > 0.2:
                self._draw()
        else:
            run = self.owners[key]
            quarter = 4 * self._done(run) // max(1, self.totals[run])
            if quarter > self.last_quarter.get(run, 0):
                self.last_quarter[run] = quarter
                print(f"  {run}  {_bar(self._done(run), self.totals[run])} {self._done(run)}/{self.totals[run]}",
                      file=self.out, flush=True)

    def _draw(self) -> None:
        self.last_draw = time.monotonic()
        elapsed = time.monotonic() - self.started
        done = sum(self._done(r) for r in self.totals)
        total = sum(self.totals.values()) or 1
        eta = elapsed / done * (total - done) if done else 0.0
        started = {self.owners[key] for key in self.by_task}
        finished = [r for r, t in self.totals.items() if self._done(r) >= t]
        running = [r for r in self.totals if r in started and r not in finished]
        room = max(1, shutil.get_terminal_size((80, 24)).lines - 2)
        shown = running[:room]
        lines = [f"  {run}  {_bar(self._done(run), self.totals[run])} {self._done(run)}/{self.totals[run]}" for run in shown]
        waiting = len(self.totals) - len(finished) - len(running)
        counts = f"runs: {len(finished)} done, {len(running)} running, {waiting} waiting"
        if len(running) > len(shown):
            counts += f" ({len(running) - len(shown)} not shown)"
        lines.append(f"  overall {_bar(done, total)} {done}/{total}  {counts}  elapsed {_clock(elapsed)}  left ~{_clock(eta)}")
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}F")
        self.out.write("\n".join(line + "\x1b[K" for line in lines) + "\n")
        if len(lines) < self.drawn:  # a run finished: clear what its bar left below
            self.out.write("\x1b[J")
        self.out.flush()
        self.drawn = len(lines)

    def close(self) -> None:
        """Draw the final state."""
        if self.tty:
            self._draw()
        else:
            elapsed = time.monotonic() - self.started
            print(f"  replayed in {elapsed:.1f} s", file=self.out, flush=True)
