"""What a command's sweep came to, for its exit status: one object every party writes to.

Hydra gives a multirun no return path to the code that started it: jobs (basic launcher: in this
process), the sweep callback (the table's counts) and the Optuna sweeper run inside
``hydra.main``, which returns nothing. They record into the process's :class:`SweepOutcome`
(``current()``), and ``lambda_hat.app.main`` asks it for the exit status once Hydra returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SweepOutcome:
    failed_jobs: list[str] = field(default_factory=list)  # output folders of jobs that failed here
    sweep_dirs: set[str] = field(default_factory=set)  # sweeps whose jobs ran in this process
    table: dict[str, Any] | None = None  # the last sweep table's counts ({"jobs", "ok", ..., "path"})
    search_ran: bool = False  # an Optuna search: failed trials are FAIL trials, not a failed command

    def exit_status(self) -> tuple[int, str | None]:
        """(exit code, message for stderr): 0 when every job finished (a calibration grid's diverged
        steps count as finished: they are its verdicts); a search's failed trials are a note; 1 with
        the counts when jobs failed or were ended from outside (killed, cancelled)."""
        from lambda_hat.sweeps.orphans import ENDED_BY_SIGNAL

        table = self.table
        failed = max(len(self.failed_jobs), table["failed"] if table else 0)
        # a calibration grid's diverged steps are its verdicts ("diverged"), not failed jobs
        failed -= min(failed, int(table.get("diverged_verdicts", 0))) if table else 0
        ended = {k: int(table.get(k, 0)) for k in ENDED_BY_SIGNAL} if table else {}
        unfinished = sum(ended.values())
        if not (failed or unfinished):
            return 0, None
        if self.search_ran:
            return 0, f"lambda_hat: {failed + unfinished} trial(s) failed (recorded as FAIL in the study)"
        where = f"; see {table['path']}" if table else ""
        parts = [f"{failed} job(s) of the sweep failed"] * bool(failed)
        if unfinished:
            what = ", ".join(f"{n} {k}" for k, n in ended.items() if n)
            parts.append(f"{unfinished} job(s) of the sweep ended before finishing ({what})")
        return 1, f"lambda_hat: error: {'; '.join(parts)}{where}"


_CURRENT = SweepOutcome()


def current() -> SweepOutcome:
    """This process's outcome."""
    return _CURRENT
