"""Why is it waiting? The words the run panel and the rollout pages use to say which gate or
wait holds a run (or a set in a rollout) and what would end it.

Pure functions: facts in (counts already read by the selectors, in the same terms as the
engine's gates), an `Explanation` out. No ORM here, so every sentence is tested with exact
numbers and the browser (static/js/run_panel.js) only has to tick the countdown.

The numbers follow the engine (upgrades.engine) and the planner's thresholds exactly:
"unhealthy for any reason" before a batch (R-GATE-1/2: Unhealthy or Unknown health, not
running, or failed provisioning; Initializing does not count), and R-GATE-3 over every
instance upgraded so far in the run, failures rolled back included (docs/DECISIONS.md).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from upgrades.models import Kind, Phase, RunStatus

GATE_BEFORE = "maxUnhealthyInstancePercent"
GATE_AFTER = "maxUnhealthyUpgradedInstancePercent"


@dataclass(frozen=True)
class Explanation:
    """What holds a run (or a set in a rollout), in words.

    `headline` is the sentence; when a countdown runs, it is `before` + the time left +
    `after`, so a page can redraw the time left every second and keep the rest; the time left
    in `headline` is the one at the moment the explanation was made. `countdown_until` is an
    ISO timestamp (the browser counts down to it from the server's `now`)."""

    kind: str
    headline: str
    detail: str = ""
    unblock: str = ""
    countdown_until: str | None = None
    before: str = ""
    left: str = ""
    after: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunFacts:
    """A rolling-forward run as the explainer needs it: the row's fields, its policy's two
    thresholds, and the live counts (selectors.run_summary reads them in one query)."""

    status: str
    phase: str
    kind: str
    cancel_requested: bool
    current_batch: int  # the batch in flight or last done (-1 before the first)
    batch_count: int
    batch_size: int  # of the batch in flight, or of the next one before it starts
    all_at_once: bool  # manual upgrades and Automatic mode: one batch, no gates
    max_unhealthy_percent: int
    max_unhealthy_upgraded_percent: int
    # the progress counts (R-LOOP-1): upgraded so far = successful + failed + in progress
    successful: int
    failed: int
    in_progress: int
    # the whole set, for the pre-batch gate
    set_total: int
    set_unhealthy: int
    # the batch in flight (its instances still InProgress; during a rollback, its Failed ones)
    batch_total: int
    batch_reimaging: int  # the driver is still at work (provisioning Updating / Creating)
    batch_booting: int  # provisioned, powering on
    batch_healthy: int  # healthy, running, provisioned: what the health wait waits for
    batch_provisioning_failed: int  # cannot recover within the wait
    rollback_instance_ids: tuple[int, ...] = ()  # the first few of the batch_total rolled back
    now: dt.datetime | None = None
    next_action_at: dt.datetime | None = None
    phase_deadline: dt.datetime | None = None


def allowed(total: int, percent: int) -> int:
    """The most instances of `total` that may be unhealthy under `percent`: the largest n with
    not planner.exceeds(n, total, percent), i.e. n * 100 <= percent * total."""
    return percent * total // 100


def span_words(seconds: float) -> str:
    """'45 s', '4 m 12 s', '12 m', '2 h 5 m': a time left, rounded up to the second (the same
    words static/js/run_panel.js ticks down with)."""
    whole = max(0, int(-(-seconds // 1)))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} m" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} m {secs} s" if secs else f"{minutes} m"
    return f"{secs} s"


def _plural(count: int, word: str, many: str | None = None) -> str:
    return f"{count} {word if count == 1 else (many or word + 's')}"


def _is_are(count: int) -> str:
    return "is" if count == 1 else "are"


def _counted(
    kind: str, before: str, until: dt.datetime | None, now: dt.datetime | None, after: str, **rest: str
) -> Explanation:
    """An explanation whose headline holds the time left until `until`."""
    if until is None or now is None:
        return Explanation(kind=kind, headline=(before + "a moment" + after), **rest)
    left = span_words((until - now).total_seconds())
    return Explanation(
        kind=kind,
        headline=before + left + after,
        countdown_until=until.isoformat(),
        before=before,
        left=left,
        after=after,
        **rest,
    )


def _action(kind: str) -> str:
    return "Installing the new extension versions on" if kind == Kind.EXTENSION else "Reimaging"


def _set_health(facts: RunFacts) -> tuple[str, bool]:
    """The pre-batch gate in words, and whether it would stop the run now."""
    limit = allowed(facts.set_total, facts.max_unhealthy_percent)
    over = facts.set_unhealthy > limit
    words = (
        f"{facts.set_unhealthy} of {_plural(facts.set_total, 'instance')} {_is_are(facts.set_unhealthy)} unhealthy; "
        f"the policy allows at most {limit} ({GATE_BEFORE} {facts.max_unhealthy_percent} %)"
    )
    return words, over


def _unblock_set(facts: RunFacts) -> str:
    limit = allowed(facts.set_total, facts.max_unhealthy_percent)
    return (
        f"It goes on only if at most {limit} {_is_are(limit)} unhealthy when the check runs; otherwise the run stops "
        f"(Faulted). Bring instances back (end maintenance, start stopped ones) — or cancel."
    )


def explain_run(facts: RunFacts) -> Explanation | None:
    """Which gate or wait holds a rolling-forward run, and what would end it; None once the
    run has ended (its status and error say the rest)."""
    if facts.status != RunStatus.ROLLING_FORWARD:
        return None
    number = facts.current_batch + 1  # the batch in flight, counted from 1
    cancel_note = (
        f"Cancel requested: no new batch will start; batch {number} finishes first (its health wait"
        + ("" if facts.all_at_once else " and any rollback")
        + "), then the run ends Cancelled."
    )
    if facts.phase in (Phase.BEFORE_BATCH, Phase.PAUSE):
        return _between_batches(facts)
    if facts.phase in (Phase.DISPATCHING, Phase.UPGRADING):
        parts = []
        done = facts.batch_total - facts.batch_reimaging - facts.batch_booting
        if facts.phase == Phase.DISPATCHING:
            parts.append("asking the driver to start")
        else:
            parts.append(f"{done} done")
            if facts.batch_reimaging:
                busy = "installing" if facts.kind == Kind.EXTENSION else "reimaging"
                parts.append(f"{facts.batch_reimaging} {busy}")
            if facts.batch_booting:
                parts.append(f"{facts.batch_booting} booting")
        return Explanation(
            kind=facts.phase,
            headline=f"{_action(facts.kind)} batch {number} of {facts.batch_count} "
            f"({_plural(facts.batch_size, 'instance')}: {', '.join(parts)}).",
            detail="The health wait starts once the driver has finished with every instance of the batch.",
            unblock=cancel_note if facts.cancel_requested else "",
        )
    if facts.phase == Phase.HEALTH_WAIT:
        return _health_wait(facts, number, cancel_note)
    if facts.phase in (Phase.ROLLBACK_DISPATCHING, Phase.ROLLING_BACK):
        return _rolling_back(facts, number, cancel_note)
    return Explanation(kind=facts.phase, headline=Phase(facts.phase).label + ".")


def _between_batches(facts: RunFacts) -> Explanation:
    """Before a batch (R-GATE-1/2) or in the pause between two (R-PAUSE-1)."""
    number = facts.current_batch + 2  # the next batch, counted from 1
    if facts.cancel_requested:
        return Explanation(
            kind="cancel_requested",
            headline=f"Cancel requested: no new batch will start; the run ends Cancelled before batch {number}.",
        )
    if facts.all_at_once:
        return Explanation(
            kind=facts.phase,
            headline=f"Starting: {_plural(facts.batch_size, 'instance')} at once (no health gates).",
        )
    health, over = _set_health(facts)
    check = "Before the first batch" if number == 1 else f"Before batch {number}"
    rule = "R-GATE-1" if number == 1 else "R-GATE-2"
    if facts.phase == Phase.PAUSE and over:
        # The gate would stop the run if the pause ended now: that comes first.
        return _counted(
            "gate_before_batch",
            f"Waiting before batch {number}: {health}; the check runs in ",
            facts.next_action_at,
            facts.now,
            ", when the pause ends.",
            detail=f"{check} the whole set's health is checked ({rule}).",
            unblock=_unblock_set(facts),
        )
    if facts.phase == Phase.PAUSE:
        return _counted(
            "pause",
            f"Pause between batches: batch {number} of {facts.batch_count} ({_plural(facts.batch_size, 'instance')}) "
            "starts in ",
            facts.next_action_at,
            facts.now,
            ".",
            detail=f"{check} the whole set's health is checked ({rule}): now {health}.",
        )
    if over:
        return Explanation(
            kind="gate_before_batch",
            headline=f"Waiting before batch {number}: {health}.",
            detail=f"{check} the whole set's health is checked ({rule}).",
            unblock=_unblock_set(facts),
        )
    return Explanation(
        kind=facts.phase,
        headline=f"Starting batch {number} of {facts.batch_count} ({_plural(facts.batch_size, 'instance')}): {health}.",
    )


def _health_wait(facts: RunFacts, number: int, cancel_note: str) -> Explanation:
    """R-HEALTH-1 and the R-GATE-3 verdict that follows it."""
    size = facts.batch_size
    rest = facts.batch_total - facts.batch_healthy
    before = (
        f"Health wait: {facts.batch_healthy} of {_plural(size, 'upgraded instance')} healthy; waiting up to "
        if rest
        else f"Health wait: all {_plural(size, 'upgraded instance')} healthy; ending in at most "
    )
    after = " for the rest (it ends early once all are healthy)." if rest else "."
    if facts.all_at_once:
        detail = "No health gate for this run: instances still unhealthy at the end are marked Failed."
    else:
        # R-GATE-3 counts every instance upgraded so far in the run, this batch included.
        upgraded = facts.successful + facts.failed + facts.in_progress
        limit = allowed(upgraded, facts.max_unhealthy_upgraded_percent)
        budget = max(0, limit - facts.failed)
        if facts.failed:
            detail = (
                f"The run stops (Faulted) if more than {limit} of the {upgraded} instances upgraded so far end "
                f"unhealthy: {facts.failed} already did, so more than {budget} of these {size} staying unhealthy "
                f"stops it ({GATE_AFTER} {facts.max_unhealthy_upgraded_percent} %)."
            )
        else:
            detail = (
                f"The run stops (Faulted) if more than {budget} of the {size} stay unhealthy "
                f"({GATE_AFTER} {facts.max_unhealthy_upgraded_percent} %)."
            )
    if facts.batch_provisioning_failed:
        detail += f" {_plural(facts.batch_provisioning_failed, 'instance')} failed provisioning and cannot recover."
    return _counted(
        "health_wait",
        before,
        facts.phase_deadline,
        facts.now,
        after,
        detail=detail,
        unblock=cancel_note if facts.cancel_requested else "",
    )


def _rolling_back(facts: RunFacts, number: int, cancel_note: str) -> Explanation:
    """R-ROLLBACK-1: the failed instances of the batch get their previous OS disk (or
    extension versions) back and are waited for like a health wait."""
    ids = facts.rollback_instance_ids
    shown = ", ".join(str(i) for i in ids)
    if facts.batch_total > len(ids):
        shown += f" and {facts.batch_total - len(ids)} more"
    what = "previous extension versions" if facts.kind == Kind.EXTENSION else "previous OS disk"
    who = f"{_plural(facts.batch_total, 'instance')} ({shown})"
    gets = f"gets its {what}" if facts.batch_total == 1 else f"get their {what}"
    if facts.phase == Phase.ROLLBACK_DISPATCHING:
        return Explanation(
            kind="rolling_back",
            headline=f"Rolling back batch {number}: {who} {gets} back; asking the driver to start.",
            unblock=cancel_note if facts.cancel_requested else "",
        )
    return _counted(
        "rolling_back",
        f"Rolling back batch {number}: {who} {gets} back; {facts.batch_healthy} of "
        f"{facts.batch_total} healthy again; waiting up to ",
        facts.phase_deadline,
        facts.now,
        " (it ends early once all are).",
        detail="Instances healthy again end RolledBack, the others RollbackFailed.",
        unblock=cancel_note if facts.cancel_requested else "",
    )


# --- rollouts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WaitingPhase:
    """An earlier phase a step waits for: its number (from 1) and its regions."""

    number: int
    regions: tuple[str, ...]


def explain_scheduled(*, due_at: dt.datetime, now: dt.datetime, first_after_enabling: bool = False) -> Explanation:
    """A set whose run waits for the trigger delay (R-AUTO-2)."""
    why = (
        "the longer wait of a set's first automatic OS upgrade after it enabled them"
        if first_after_enabling
        else "the trigger delay after the version was published"
    )
    if due_at <= now:
        return Explanation(kind="trigger_delay", headline=f"Scheduled: starting now ({why} is over).")
    return _counted(
        "trigger_delay",
        f"Scheduled: starts at {_clock(due_at, now)} (in ",
        due_at,
        now,
        f"), {why}.",
        unblock="Nothing to do: it starts by itself (R-AUTO-2).",
    )


def explain_phase_wait(*, waiting_for: WaitingPhase, pairs: dict[str, str | None], region: str) -> Explanation:
    """A region's step waiting for an earlier phase (R-AVAIL-1)."""
    where = ", ".join(waiting_for.regions)
    paired = [r for r in waiting_for.regions if pairs.get(region) == r or pairs.get(r) == region]
    reason = (
        f"R-AVAIL-1, never two paired regions at once ({region} and {paired[0]} are a geo pair)"
        if paired
        else "R-AVAIL-1, a phase starts only when every set of the previous one upgraded successfully"
    )
    return Explanation(
        kind="phase_wait",
        headline=f"Waiting for phase {waiting_for.number} ({where}) to finish: {reason}.",
        unblock="It starts once that phase has succeeded; a failure there halts the rollout.",
    )


def explain_zone_wait(*, region: str, zone_before: str) -> Explanation:
    """A zone of a region waiting for the zone before it (R-AVAIL-1: zones one at a time)."""
    before = f"zone {zone_before}" if zone_before else "the sets that are not zonal"
    return Explanation(
        kind="zone_wait",
        headline=f"Waiting for {before} of {region} to finish: R-AVAIL-1, zones one at a time.",
    )


def explain_busy(*, message: str) -> Explanation:
    """A set whose turn came while another run holds it (R-ONE-1)."""
    text = message.rstrip(".") or "Waiting for the run on the set to finish"
    return Explanation(kind="busy", headline=f"{text}: one run at a time per set (R-ONE-1).")


def _clock(moment: dt.datetime, now: dt.datetime) -> str:
    """'14:32' today (UTC), '2026-06-03 14:32' another day."""
    utc, today = moment.astimezone(dt.UTC), now.astimezone(dt.UTC)
    return utc.strftime("%H:%M UTC") if utc.date() == today.date() else utc.strftime("%Y-%m-%d %H:%M UTC")
