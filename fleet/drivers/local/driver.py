"""The local-process driver: instances are real processes, actions are real, health is probed.

An action (reimage, power, extensions) writes a plan of steps on each instance row, as the
simulator does, and returns at once. `run_due_steps`, called by a short task (each beat tick,
and at once after an action), claims the rows whose steps are due for a lease, carries the
steps out — stop the process, make a fresh OS directory from the image, run the extensions,
start the process — and writes the result back. Every step is idempotent (a process already
stopped stays stopped, a complete OS directory is left as it is, a running process is not
started twice), so a worker killed in the middle of a plan loses nothing: the lease runs out
and the next tick carries the same steps out again. Waiting for a process to exit is a due
time on the row, never a sleep.

Health comes from `probe_round`: every running process is checked for life, and probed over
its own port on 127.0.0.1 by the set's health source (fleet.drivers.local.probe, R-H-2). Probe
timings are real seconds, not compressed by TIME_SCALE: the processes are real and boot in
real time (docs/DECISIONS.md).

On disk, under settings.LOCAL_INSTANCE_ROOT, each instance has a directory
`<set name>-<set id>/<instance id>/` holding `os/<OS disk name>/` (the current OS directory
and the previous one, kept for rollback), `data/` (its data disks: never touched by an
action), and `process.log` (the process's stderr).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from fleet import clock, events
from fleet.drivers.base import PowerAction, first_time
from fleet.drivers.local import images
from fleet.drivers.local.probe import Answer, ProbeSpec, ProbeTracker, probe_all
from fleet.drivers.local.procfs import command_line, programs_under
from fleet.images import ImageRef
from fleet.models import (
    DriverName,
    HealthState,
    Instance,
    InstanceProcess,
    PowerState,
    ProvisioningState,
    ScaleSet,
    ScaleSetExtension,
)

log = logging.getLogger(__name__)

# How long one tick may spend carrying out steps before it leaves the rest to the next tick.
STEP_BUDGET_SECONDS = 20.0
# A process asked to stop gets this long to exit before it is killed.
STOP_GRACE = dt.timedelta(seconds=5)
# How often a process being stopped is looked at again.
EXIT_POLL = dt.timedelta(seconds=0.2)
# An extension's command may run this long before it counts as failed.
EXTENSION_TIMEOUT_SECONDS = 30.0
# Without a health source a running process is still checked for life this often.
LIVENESS_INTERVAL = dt.timedelta(seconds=1)
# Probe intervals are compressed by TIME_SCALE like every other wait, but a real process is
# not probed more often than this (real seconds).
MIN_PROBE_INTERVAL_SECONDS = 0.25

_BUSY_PROVISIONING = (ProvisioningState.UPDATING, ProvisioningState.CREATING)
# What carrying out steps may change on the instance row.
_STEP_FIELDS = [
    "power_state",
    "provisioning_state",
    "health_state",
    "extension_states",
    "last_error",
    "driver_plan",
    "driver_due_at",
]


def instance_root() -> Path:
    return Path(getattr(settings, "LOCAL_INSTANCE_ROOT", settings.VAR_DIR / "instances"))


def set_directory(scale_set: ScaleSet) -> Path:
    return instance_root() / f"{scale_set.name}-{scale_set.pk}"


def instance_directory(instance: Instance) -> Path:
    return set_directory(instance.scale_set) / str(instance.instance_id)


def os_directory(instance: Instance, os_disk: str | None = None) -> Path:
    return instance_directory(instance) / "os" / (os_disk or instance.os_disk)


def data_directory(instance: Instance) -> Path:
    return instance_directory(instance) / "data"


class LocalProcessDriver:
    """Driver for one local-process set (see fleet.drivers.base.Driver for the contract)."""

    def __init__(self, scale_set: ScaleSet) -> None:
        self.scale_set = scale_set
        self._extensions: list[ScaleSetExtension] | None = None

    # --- the interface --------------------------------------------------------------------

    def reimage(self, instances: Sequence[Instance], image: ImageRef, *, operation: str) -> None:
        def plan(instance: Instance) -> list[dict[str, Any]]:
            instance.previous_os_disk, instance.previous_os_image = instance.os_disk, instance.os_image
            instance.os_disk, instance.os_image = _next_os_disk(instance), image.key
            instance.provisioning_state = ProvisioningState.UPDATING
            instance.power_state = PowerState.STOPPING
            instance.health_state = HealthState.UNKNOWN
            instance.extension_states = {}  # a new OS disk holds the model's extensions only
            instance.last_error = ""
            return [
                {"op": "stop"},
                {"op": "os_disk"},
                *self._extension_steps({e.name: e.effective_version for e in self._extensions_in_order()}),
                {"op": "start"},
            ]

        self._act(instances, plan, operation=operation)

    def restore_previous_os_disk(self, instances: Sequence[Instance], *, operation: str) -> None:
        def plan(instance: Instance) -> list[dict[str, Any]]:
            if not instance.previous_os_disk:
                instance.last_error = "No previous OS disk to roll back to."
                return []
            instance.os_disk, instance.previous_os_disk = instance.previous_os_disk, ""
            instance.os_image, instance.previous_os_image = instance.previous_os_image, ""
            instance.provisioning_state = ProvisioningState.UPDATING
            instance.power_state = PowerState.STOPPING
            instance.health_state = HealthState.UNKNOWN
            instance.last_error = ""
            # The kept OS directory boots as it was, extensions and all; `os_disk` remakes it
            # from its image only if it was lost.
            return [{"op": "stop"}, {"op": "os_disk"}, {"op": "start"}]

        self._act(instances, plan, operation=operation)

    def power(self, instances: Sequence[Instance], action: PowerAction) -> None:
        def plan(instance: Instance) -> list[dict[str, Any]]:
            if action == PowerAction.START:
                # Also for a row that says running: its process may have died (a start of a
                # live process changes nothing).
                if instance.power_state != PowerState.RUNNING:
                    instance.power_state = PowerState.STARTING
                return [{"op": "start"}]
            if action == PowerAction.RESTART:
                instance.power_state = PowerState.STOPPING
                instance.health_state = HealthState.UNKNOWN
                return [{"op": "stop"}, {"op": "start"}]
            stopped = PowerState.STOPPED if action == PowerAction.POWER_OFF else PowerState.DEALLOCATED
            instance.power_state = PowerState.STOPPING if stopped == PowerState.STOPPED else PowerState.DEALLOCATING
            instance.health_state = HealthState.UNKNOWN
            return [{"op": "stop"}, {"op": "stopped", "power_state": str(stopped)}]

        self._act(instances, plan)

    def install_extensions(
        self, instances: Sequence[Instance], versions: dict[str, str], *, operation: str = ""
    ) -> None:
        def plan(instance: Instance) -> list[dict[str, Any]]:
            instance.provisioning_state = ProvisioningState.UPDATING
            return [*self._extension_steps(versions), {"op": "provisioned"}]

        self._act(instances, plan, operation=operation)

    def set_maintenance(self, instances: Sequence[Instance], *, on: bool) -> None:
        pks = [i.pk for i in instances]
        with transaction.atomic():
            rows = list(Instance.objects.select_for_update().filter(pk__in=pks))
            for row in rows:
                row.under_maintenance = on
                if on and row.power_state == PowerState.RUNNING:
                    row.health_state = HealthState.UNHEALTHY
            Instance.objects.bulk_update(rows, ["under_maintenance", "health_state"])
            # Off: the next probe says what the instance is (at once, not at its interval).
            InstanceProcess.objects.filter(instance_id__in=pks).update(probe_due_at=clock.now())
            events.instances_changed(self.scale_set.pk, pks)
        transaction.on_commit(request_tick)

    def advance(self, now: dt.datetime) -> int:
        """The set's due steps, then its due probes: a run about to judge its batch (the
        engine's catch-up) sees the instances as they are now, even after an outage of the
        workers that run the ticks and the probe rounds."""
        steps = run_due_steps(now, scale_set_ids=[self.scale_set.pk])
        probed = probe_round(now, scale_set_ids=[self.scale_set.pk])
        return len({pk for pks in [*steps.values(), *probed.values()] for pk in pks})

    # --- planning -------------------------------------------------------------------------

    def _act(self, instances: Sequence[Instance], planner: Any, *, operation: str = "") -> None:
        """Lock the rows, give each its plan (due now), publish and ask for a tick on commit.

        With an `operation` id an instance acts at most once per id, recorded in the same
        transaction as the plan: a call repeated after a crash changes nothing."""
        if not instances:
            return
        pks = [i.pk for i in instances]
        now = clock.now()
        with transaction.atomic():
            rows = list(Instance.objects.select_for_update().filter(pk__in=pks).order_by("pk"))
            for row in rows:
                if not first_time(row, operation):
                    continue
                busy = bool(row.driver_plan) and row.provisioning_state in _BUSY_PROVISIONING
                steps = planner(row)
                if not steps and row.driver_plan:
                    continue  # nothing new to do: the action in flight must still finish
                if busy and not any(step["op"] in ("os_disk", "extension") for step in steps):
                    # A power action cuts short an upgrade in flight (a power-off mid-reimage):
                    # that provisioning failed, as on a real host; it never finishes.
                    row.provisioning_state = ProvisioningState.FAILED
                    row.last_error = "Provisioning was interrupted by another action."
                row.driver_plan = steps
                row.driver_due_at = now if steps else None
            Instance.objects.bulk_update(
                rows,
                [
                    "os_disk",
                    "os_image",
                    "previous_os_disk",
                    "previous_os_image",
                    "provisioning_state",
                    "power_state",
                    "health_state",
                    "extension_states",
                    "last_error",
                    "driver_plan",
                    "driver_due_at",
                    "driver_operations",
                ],
                batch_size=200,
            )
            events.instances_changed(self.scale_set.pk, pks)
        transaction.on_commit(request_tick)

    def _extension_steps(self, versions: dict[str, str]) -> list[dict[str, Any]]:
        """One step per extension, in provisionAfterExtensions order (R-UPG-1)."""
        order = [e.name for e in self._extensions_in_order()]
        names = sorted(versions, key=lambda n: (order.index(n) if n in order else len(order), n))
        return [{"op": "extension", "name": name, "version": versions[name]} for name in names]

    def _extensions_in_order(self) -> list[ScaleSetExtension]:
        if self._extensions is None:
            from fleet.drivers.simulator import _provision_order

            self._extensions = _provision_order(list(self.scale_set.extensions.order_by("name")))
        return self._extensions


# --- carrying out due steps -------------------------------------------------------------------


@dataclass
class _Outcome:
    """What carrying out one instance's steps changed."""

    waiting_until: dt.datetime | None = None
    changed: bool = False
    problems: list[str] = field(default_factory=list)


def run_due_steps(
    now: dt.datetime | None = None, *, scale_set_ids: Sequence[int] | None = None, limit: int = 200
) -> dict[int, list[int]]:
    """Carry out the due steps of local-process instances; returns the changed instance pks
    by scale set. Rows are claimed for LOCAL_STEP_LEASE_SECONDS first, so two ticks never work on the same
    instance; the result is written back only if no new action replaced the plan meanwhile
    (the facts about the process — its pid and port — are written in any case)."""
    now = now or clock.now()
    due = Instance.objects.filter(driver_due_at__lte=now, scale_set__driver=DriverName.LOCAL)
    if scale_set_ids is not None:
        due = due.filter(scale_set_id__in=list(scale_set_ids))
    if not due.exists():
        return {}  # nothing due: no write transaction (on SQLite, no write lock)
    lease = now + dt.timedelta(seconds=settings.LOCAL_STEP_LEASE_SECONDS)
    with transaction.atomic():
        # Only the instance rows are locked (not their set's), and rows another tick holds are
        # skipped, not waited for.
        claimed = list(
            due.select_for_update(skip_locked=True, of=("self",))
            .order_by("driver_due_at", "pk")
            .values_list("pk", flat=True)[:limit]
        )
        Instance.objects.filter(pk__in=claimed).update(driver_due_at=lease)
    if not claimed:
        return {}
    rows = Instance.objects.filter(pk__in=claimed).select_related("scale_set").order_by("pk")
    processes = {p.instance_id: p for p in InstanceProcess.objects.filter(instance_id__in=claimed)}
    drivers: dict[int, _Steps] = {}
    changed: dict[int, list[int]] = defaultdict(list)
    budget_ends = time.monotonic() + min(STEP_BUDGET_SECONDS, settings.LOCAL_STEP_LEASE_SECONDS / 2)
    for row in rows:
        if time.monotonic() > budget_ends:
            # The rest go back to being due now, for the next tick (well within the task's time
            # limit: a few slow extension commands must not hold every other instance's lease).
            Instance.objects.filter(pk=row.pk, driver_due_at=lease).update(driver_due_at=now)
            continue
        steps = drivers.setdefault(row.scale_set_id, _Steps(row.scale_set))
        process = processes.get(row.pk) or InstanceProcess(instance=row)
        outcome = steps.carry_out(row, process, now)
        _save_process(process)  # the facts about the process, whatever happened to the plan
        written = Instance.objects.filter(pk=row.pk, driver_due_at=lease).update(
            **{name: getattr(row, name) for name in _STEP_FIELDS}
        )
        if written and outcome.changed:
            changed[row.scale_set_id].append(row.pk)
    for scale_set_id, pks in changed.items():
        events.instances_changed(scale_set_id, pks)
    if changed:
        _instances_settled(sorted(changed))
    return dict(changed)


def plan_first_starts(now: dt.datetime | None = None) -> int:
    """Instances of local-process sets that never had a process (a new set, a scale out) get
    a plan to start: their OS directory is made from their image, then the process starts."""
    now = now or clock.now()
    never_started = Instance.objects.filter(
        scale_set__driver=DriverName.LOCAL,
        process__isnull=True,
        driver_due_at__isnull=True,
        power_state=PowerState.RUNNING,
    )
    if not never_started.exists():
        return 0  # the usual case: no write transaction
    with transaction.atomic():
        new = list(never_started.select_for_update(of=("self",)).values_list("pk", flat=True)[:500])
        Instance.objects.filter(pk__in=new).update(
            driver_plan=[{"op": "start"}],
            driver_due_at=now,
            provisioning_state=ProvisioningState.CREATING,
            health_state=HealthState.UNKNOWN,
        )
    return len(new)


def next_step_at() -> dt.datetime | None:
    """When the next step of a local-process instance falls due."""
    return (
        Instance.objects.filter(driver_due_at__isnull=False, scale_set__driver=DriverName.LOCAL)
        .order_by("driver_due_at")
        .values_list("driver_due_at", flat=True)
        .first()
    )


def next_probe_at() -> dt.datetime | None:
    """When the next probe of a running local-process instance falls due."""
    return (
        InstanceProcess.objects.filter(
            probe_due_at__isnull=False,
            instance__power_state=PowerState.RUNNING,
            instance__scale_set__driver=DriverName.LOCAL,
        )
        .order_by("probe_due_at")
        .values_list("probe_due_at", flat=True)
        .first()
    )


def _save_process(process: InstanceProcess) -> None:
    if process.pk is None:
        InstanceProcess.objects.update_or_create(
            instance_id=process.instance_id,
            defaults={
                f: getattr(process, f) for f in ("pid", "port", "started_at", "probe", "probe_due_at", "last_answer")
            },
        )
    else:
        process.save()


class _Steps:
    """Carries out the steps of one set's instances."""

    def __init__(self, scale_set: ScaleSet) -> None:
        self.scale_set = scale_set
        self.extensions = {e.name: e for e in scale_set.extensions.all()}
        self.spec = probe_spec(scale_set, list(self.extensions.values()))

    def carry_out(self, instance: Instance, process: InstanceProcess, now: dt.datetime) -> _Outcome:
        outcome = _Outcome()
        plan = list(instance.driver_plan)
        while plan:
            step = plan[0]
            try:
                done = getattr(self, f"_{step['op']}")(instance, process, step, now, outcome)
            except Exception as error:  # a step that cannot be carried out fails the instance, loudly
                log.exception("local driver step %s failed for %s", step.get("op"), instance.name)
                self._fail(instance, f"{step.get('op')}: {error}")
                outcome.changed = True
                plan = []
                break
            if not done:
                break
            plan.pop(0)
            outcome.changed = True
            if instance.provisioning_state == ProvisioningState.FAILED and step["op"] == "os_disk":
                plan = []  # nothing to boot
        instance.driver_plan = plan
        instance.driver_due_at = (outcome.waiting_until or now) if plan else None
        return outcome

    def _fail(self, instance: Instance, problem: str) -> None:
        instance.provisioning_state = ProvisioningState.FAILED
        instance.health_state = HealthState.UNHEALTHY
        instance.last_error = f"Provisioning failed: {problem}"[:500]

    # Each step returns True when done, False to be carried on later (outcome.waiting_until).

    def _stop(
        self, instance: Instance, process: InstanceProcess, step: dict[str, Any], now: dt.datetime, outcome: _Outcome
    ) -> bool:
        # Every live program of the instance, the recorded one or not: a worker killed between
        # starting a process and recording it leaves one the row does not name.
        running = [pid for pid, _program in live_programs(instance)]
        if not running:
            process.pid, process.started_at, process.probe_due_at = None, None, None
            return True
        if "kill_at" not in step:
            step["kill_at"] = (now + STOP_GRACE).isoformat()
        signum = signal.SIGKILL if now >= dt.datetime.fromisoformat(step["kill_at"]) else signal.SIGTERM
        for pid in running:
            _signal(pid, signum)
        outcome.waiting_until = now + EXIT_POLL
        return False

    def _os_disk(
        self, instance: Instance, process: InstanceProcess, step: dict[str, Any], now: dt.datetime, outcome: _Outcome
    ) -> bool:
        if (os_directory(instance) / images.IMAGE_FILE).exists():
            return True  # made already (a step carried out again, or the kept one of a rollback)
        build = images.find(instance.os_image)
        if build is None:
            self._fail(
                instance,
                f"image {ImageRef.from_key(instance.os_image).label} ({instance.os_image}) is not in the local "
                "image store: build it with `manage.py build_demo_images`.",
            )
            instance.power_state = PowerState.STOPPED
            return True
        images.install_os_disk(build, os_directory(instance))
        data_directory(instance).mkdir(parents=True, exist_ok=True)
        _keep_two_os_directories(instance)
        return True

    def _extension(
        self, instance: Instance, process: InstanceProcess, step: dict[str, Any], now: dt.datetime, outcome: _Outcome
    ) -> bool:
        name, version = step["name"], step["version"]
        problem = run_extension(instance, self.extensions.get(name), name, version)
        states = dict(instance.extension_states)
        states[name] = {"version": version, "state": "Failed" if problem else "Succeeded"}
        if problem:
            states[name]["message"] = problem[:200]
        instance.extension_states = states
        return True

    def _provisioned(
        self, instance: Instance, process: InstanceProcess, step: dict[str, Any], now: dt.datetime, outcome: _Outcome
    ) -> bool:
        failed = _failed_extensions(instance)
        if failed:
            self._fail(instance, ", ".join(failed))
        else:
            instance.provisioning_state = ProvisioningState.SUCCEEDED
        return True

    def _stopped(
        self, instance: Instance, process: InstanceProcess, step: dict[str, Any], now: dt.datetime, outcome: _Outcome
    ) -> bool:
        instance.power_state = step["power_state"]
        instance.health_state = HealthState.UNKNOWN
        return True

    def _start(
        self, instance: Instance, process: InstanceProcess, step: dict[str, Any], now: dt.datetime, outcome: _Outcome
    ) -> bool:
        current = os_directory(instance) / images.PROGRAM_FILE
        live = live_programs(instance)
        for pid, program in live:
            if program != current:
                _signal(pid, signal.SIGKILL)  # a program of another OS disk has no business running
        adopted = next((pid for pid, program in live if program == current), None)
        if adopted is not None and adopted != process.pid:
            # Started by a tick that died before recording it: adopt it, never start a second.
            process.pid, process.port = adopted, _port_of(adopted) or process.port
            process.started_at, process.probe, process.probe_due_at = now, {}, now
        if adopted is None:
            if not (os_directory(instance) / images.IMAGE_FILE).exists():
                # Never booted here (a new instance), or its OS directory was lost: make it.
                self._os_disk(instance, process, step, now, outcome)
                if instance.provisioning_state == ProvisioningState.FAILED:
                    return True
            process.pid, process.port = start_process(instance, self.spec, port=process.port)
            process.started_at = now
            process.probe = {}
            process.last_answer = ""
            process.probe_due_at = now
        instance.power_state = PowerState.RUNNING
        failed = _failed_extensions(instance)
        if failed:
            self._fail(instance, ", ".join(failed))
            return True
        if instance.provisioning_state in _BUSY_PROVISIONING:
            instance.provisioning_state = ProvisioningState.SUCCEEDED
        if instance.provisioning_state == ProvisioningState.SUCCEEDED:
            instance.last_error = ""
        if instance.under_maintenance:
            instance.health_state = HealthState.UNHEALTHY
        else:
            # R-H-3 without a health source; with one, its probes decide (R-H-2).
            instance.health_state = HealthState.INITIALIZING if self.spec else HealthState.HEALTHY
        return True


def _failed_extensions(instance: Instance) -> list[str]:
    return [
        f"{name} {state.get('version', '')}".strip() + (f" ({state['message']})" if state.get("message") else "")
        for name, state in sorted(instance.extension_states.items())
        if state.get("state") == "Failed"
    ]


def run_extension(instance: Instance, extension: ScaleSetExtension | None, name: str, version: str) -> str:
    """Provision one extension on the instance's OS directory: its settings are written to
    `extensions/<name>.json` there, and a `commandToExecute` in them (as the Custom Script
    extension has) runs with the OS directory as its working directory and the data
    directory in INSTANCE_DATA_DIR. Returns what went wrong, or "" (R-EXT-3: a failing one does
    not stop the next)."""
    import json

    os_dir = os_directory(instance)
    settings_ = dict(extension.settings) if extension else {}
    folder = os_dir / "extensions"
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "name": name,
        "version": version,
        "publisher": extension.publisher if extension else "",
        "type": extension.type if extension else "",
        "settings": settings_,
    }
    (folder / f"{name}.json").write_text(json.dumps(record, indent=2, sort_keys=True))
    command = settings_.get("commandToExecute")
    if not command:
        return ""
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "INSTANCE_NAME": instance.name,
        "INSTANCE_DATA_DIR": str(data_directory(instance)),
        "INSTANCE_OS_DIR": str(os_dir),
    }
    try:
        done = subprocess.run(
            ["/bin/sh", "-c", str(command)],
            cwd=os_dir,
            env=environment,
            capture_output=True,
            text=True,
            timeout=EXTENSION_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        return f"commandToExecute ran past {EXTENSION_TIMEOUT_SECONDS:.0f} s"
    with (instance_directory(instance) / "extensions.log").open("a") as out:
        out.write(f"--- {name} {version}: exit {done.returncode}\n{done.stdout}{done.stderr}")
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        return f"commandToExecute exited {done.returncode}: {tail[0]}"
    return ""


# --- processes ----------------------------------------------------------------------------------


def start_process(instance: Instance, spec: ProbeSpec | None, *, port: int | None) -> tuple[int, int]:
    """Start the instance's program from its OS directory on a port of its own (the one it
    had, if free); a session of its own, so it outlives the worker that started it."""
    directory = instance_directory(instance)
    port = _port_for(instance, previous=port)
    program = os_directory(instance) / "program.py"
    protocol = spec.protocol if spec else "http"
    with (directory / "process.log").open("ab") as stderr:
        child = subprocess.Popen(
            [
                sys.executable,
                str(program),
                *("--port", str(port), "--protocol", protocol),
                *("--data-dir", str(data_directory(instance)), "--name", instance.name),
            ],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    _children.append(child)  # reaped by process_alive, so an exited child is no zombie
    return child.pid, port


_children: list[subprocess.Popen[bytes]] = []


def process_alive(pid: int, directory: Path) -> bool:
    """Whether `pid` is a live process of this instance (the pid of an exited process may
    have been given to another one: its command line must name the instance's directory)."""
    for child in list(_children):
        if child.poll() is not None:
            _children.remove(child)
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[-1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            arguments = cmdline.read()
    except OSError:
        return False
    return state != b"Z" and f"{directory}/".encode() in arguments


def live_programs(instance: Instance) -> list[tuple[int, Path]]:
    """The instance's programs that are running (pid, program path), found by command line."""
    directory = instance_directory(instance)
    return [(pid, program) for pid, program in programs_under(directory) if process_alive(pid, directory)]


def _port_of(pid: int) -> int | None:
    arguments = command_line(pid)
    if "--port" in arguments[:-1]:
        value = arguments[arguments.index("--port") + 1]
        return int(value) if value.isdigit() else None
    return None


def _signal(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)  # the process leads its own session (start_new_session)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, signum)


# Each instance's own port comes from a range below Linux's ephemeral ports (32768 and up), by
# its primary key: two instances never ask for the same one, and the kernel never hands one out
# to another process's outgoing connection. (Ports the kernel picks with bind(0) can be handed
# out twice before the programs bind them: two instances started in the same tick collided.)
PORT_BASE = 20_000
PORT_SPAN = 12_000


def _port_for(instance: Instance, *, previous: int | None) -> int:
    """The port it had, else its own from the range; a free ephemeral one if both are taken."""
    for port in (previous, PORT_BASE + instance.pk % PORT_SPAN):
        if port and _port_free(port):
            return port
    return _free_port()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _next_os_disk(instance: Instance) -> str:
    from fleet.drivers.simulator import _next_os_disk as next_os_disk

    return next_os_disk(instance)


def _keep_two_os_directories(instance: Instance) -> None:
    """The current OS directory and the previous one (for rollback) stay; older ones go."""
    keep = {instance.os_disk, instance.previous_os_disk}
    parent = instance_directory(instance) / "os"
    for child in parent.iterdir() if parent.exists() else []:
        if child.name not in keep and not child.name.startswith("."):
            shutil.rmtree(child, ignore_errors=True)


# --- health ---------------------------------------------------------------------------------------


# How the probe round words its reasons in last_error (and so knows them again to clear them).
_NOT_RUNNING = "The instance's process"
_PROBE_SAID = "Health probe"


def probe_spec(scale_set: ScaleSet, extensions: Sequence[ScaleSetExtension]) -> ProbeSpec | None:
    """The set's probe (R-H-1, R-H-2) in real seconds: its interval and grace period are
    compressed by TIME_SCALE, as the health wait of an upgrade batch is, so the two keep their
    proportions (a grace period shorter than the wait stays shorter); the interval is never
    under MIN_PROBE_INTERVAL_SECONDS. At TIME_SCALE 1 the timings are the set's own."""
    spec = ProbeSpec.for_scale_set(scale_set, extensions)
    if spec is None:
        return None
    scale = settings.TIME_SCALE
    interval = max(MIN_PROBE_INTERVAL_SECONDS, spec.interval_seconds / scale)
    return replace(
        spec,
        interval_seconds=interval,
        grace_period_seconds=spec.grace_period_seconds / scale,
        timeout_seconds=min(interval, spec.timeout_seconds),
    )


def probe_interval(scale_set: ScaleSet) -> float:
    """Real seconds between two probes (or liveness checks) of the set's instances."""
    spec = probe_spec(scale_set, list(scale_set.extensions.all()))
    return spec.interval_seconds if spec else LIVENESS_INTERVAL.total_seconds()


def probe_round(
    now: dt.datetime | None = None, *, scale_set_ids: Sequence[int] | None = None, limit: int = 1000
) -> dict[int, list[int]]:
    """Check every due running process for life and probe it by its set's health source;
    write the health states that changed (R-H-2, R-H-3). Returns changed pks by set.

    A process that is gone (exited, killed by hand) makes its instance Unhealthy at once,
    with the reason in last_error. Instances with an action in flight are left to it."""
    now = now or clock.now()
    due_processes = InstanceProcess.objects.filter(
        probe_due_at__lte=now,
        instance__scale_set__driver=DriverName.LOCAL,
        instance__power_state=PowerState.RUNNING,
        instance__driver_due_at__isnull=True,
    )
    if scale_set_ids is not None:
        due_processes = due_processes.filter(instance__scale_set_id__in=list(scale_set_ids))
    due = list(due_processes.select_related("instance__scale_set").order_by("probe_due_at")[:limit])
    if not due:
        return {}
    specs: dict[int, ProbeSpec | None] = {}
    for process in due:
        scale_set = process.instance.scale_set
        if scale_set.pk not in specs:
            specs[scale_set.pk] = probe_spec(scale_set, list(scale_set.extensions.all()))
    alive = {p.pk: bool(p.pid) and process_alive(p.pid or 0, instance_directory(p.instance)) for p in due}
    targets = [
        (p.pk, p.port or 0, spec)
        for p in due
        if alive[p.pk] and (spec := specs[p.instance.scale_set_id]) is not None and p.port
    ]
    answers = probe_all(targets) if targets else {}
    changed: dict[int, list[int]] = defaultdict(list)
    updates: list[tuple[InstanceProcess, str, str]] = []
    for process in due:
        instance = process.instance
        spec = specs[instance.scale_set_id]
        health, error = instance.health_state, instance.last_error
        if not alive[process.pk]:
            health = HealthState.UNHEALTHY
            error = f"{_NOT_RUNNING} (pid {process.pid}) is not running: it exited or was killed."
            process.last_answer = "process not running"
            process.probe_due_at = now + LIVENESS_INTERVAL
        elif spec is None:
            process.probe_due_at = now + LIVENESS_INTERVAL
            if instance.provisioning_state == ProvisioningState.SUCCEEDED:
                health = HealthState.HEALTHY  # R-H-3
                error = "" if error.startswith(_NOT_RUNNING) else error
        else:
            answer: Answer = answers.get(process.pk) or Answer("Unknown", "not probed")
            tracker = (
                ProbeTracker.from_json(process.probe)
                if process.probe
                else ProbeTracker(spec=spec, booted_at=process.started_at or now)
            )
            health = tracker.observe(answer.state, now)
            process.probe = tracker.to_json()
            process.last_answer = answer.detail[:200]
            process.probe_due_at = tracker.next_probe_at(now)
            if error.startswith((_NOT_RUNNING, _PROBE_SAID)):
                error = ""
            if health in (HealthState.UNHEALTHY, HealthState.UNKNOWN) and not error:
                # What the probe heard is the reason an upgrade gives for the instance (the run
                # page, the heatmap's hover), not just "not healthy within the health wait".
                error = f"{_PROBE_SAID} {spec.endpoint}: {answer.detail}"[:500]
        if instance.under_maintenance and health == HealthState.HEALTHY:
            health = HealthState.UNHEALTHY
        if instance.provisioning_state == ProvisioningState.FAILED:
            health = HealthState.UNHEALTHY  # R-H-3 and the extension: not every extension provisioned
        updates.append((process, health, error))
    with transaction.atomic():
        for process, health, error in updates:
            instance = process.instance
            InstanceProcess.objects.filter(pk=process.pk).update(
                probe=process.probe, probe_due_at=process.probe_due_at, last_answer=process.last_answer
            )
            if (health, error) == (instance.health_state, instance.last_error):
                continue
            # Only if no action started meanwhile (its plan sets health itself).
            if Instance.objects.filter(pk=instance.pk, driver_due_at__isnull=True).update(
                health_state=health, last_error=error
            ):
                changed[instance.scale_set_id].append(instance.pk)
        for scale_set_id, pks in changed.items():
            events.instances_changed(scale_set_id, pks)
        if changed:
            sets = sorted(changed)
            transaction.on_commit(lambda: _instances_settled(sets))
    return dict(changed)


def _instances_settled(scale_set_ids: list[int]) -> None:
    """Runs watching these sets look now (as after the simulator's steps)."""
    from fleet import services

    services.driver_changed_instances(scale_set_ids)


# --- the console's own start and stop -------------------------------------------------------------


def resume_all() -> int:
    """After the console (re)starts: every instance recorded as running whose process is gone
    is started again from its recorded OS directory; live ones are adopted as they are."""
    now = clock.now()
    count = 0
    rows = Instance.objects.filter(
        scale_set__driver=DriverName.LOCAL, power_state__in=[PowerState.RUNNING, PowerState.STARTING]
    ).select_related("scale_set", "process")
    restart: list[int] = []
    for row in rows:
        process = getattr(row, "process", None)
        if process is None or not process.pid or not process_alive(process.pid, instance_directory(row)):
            restart.append(row.pk)
    with transaction.atomic():
        for row in Instance.objects.select_for_update().filter(pk__in=restart, driver_due_at__isnull=True):
            row.driver_plan = [{"op": "start"}]
            row.driver_due_at = now
            row.save(update_fields=["driver_plan", "driver_due_at"])
            count += 1
    return count


def stop_all(*, scale_set_ids: Iterable[int] | None = None) -> int:
    """Stop every local-process instance's process (SIGTERM, then SIGKILL after the grace),
    leaving the rows as they are: `resume_all` starts them again. For `make run`'s exit and
    for tests; not an action on the fleet."""
    processes = InstanceProcess.objects.filter(pid__isnull=False).select_related("instance__scale_set")
    if scale_set_ids is not None:
        processes = processes.filter(instance__scale_set_id__in=list(scale_set_ids))
    live = [(p.pid, instance_directory(p.instance)) for p in processes if p.pid]
    return stop_processes(live)


def stop_processes(live: Sequence[tuple[int | None, Path]]) -> int:
    """SIGTERM these processes, wait up to STOP_GRACE for them to exit, then SIGKILL."""

    alive = [(pid, directory) for pid, directory in live if pid and process_alive(pid, directory)]
    for pid, _directory in alive:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE.total_seconds()
    while time.monotonic() < deadline and any(process_alive(pid, d) for pid, d in alive if pid):
        time.sleep(0.05)  # the console's own shutdown, not a worker: waiting here is the job
    for pid, directory in alive:
        if pid and process_alive(pid, directory):
            _signal(pid, signal.SIGKILL)
    return len(alive)


def orphan_processes() -> list[tuple[int, Path]]:
    """Processes started from the instance root whose instance no longer exists (a set
    deleted or scaled in): found by their command line, as the rows that named them are gone."""
    root = str(instance_root())
    known = {
        (p.pid, str(instance_directory(p.instance)))
        for p in InstanceProcess.objects.filter(pid__isnull=False).select_related("instance__scale_set")
    }
    found = [(pid, program.parent.parent.parent) for pid, program in programs_under(root)]
    return [(pid, directory) for pid, directory in found if (pid, str(directory)) not in known]


def request_tick() -> None:
    """Carry out the new plans now rather than at the next beat tick."""
    from fleet.tasks import local_steps_task

    try:
        local_steps_task.apply_async()
    except Exception:  # an acceleration only: the beat's next tick carries them out
        log.warning("could not ask for a local driver tick; the beat will", exc_info=True)
