"""Upgrade runs, their batches, per-instance outcomes and the append-only event log.

A run is a durable state machine: `phase` says what it is doing, `next_action_at` when it
next needs attention. Celery tasks only move it forward (upgrades.engine); a worker killed at
any line leaves a state the next tick resumes from.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q

from fleet.images import ImageRef
from fleet.models import Instance, Region, ScaleSet
from upgrades.planner import Policy, RunKind


class Kind(models.TextChoices):
    AUTOMATIC_OS = RunKind.AUTOMATIC_OS, "Automatic OS upgrade"
    MANUAL_OS = RunKind.MANUAL_OS, "OS upgrade (started by hand)"
    ROLLING_MODEL = RunKind.ROLLING_MODEL, "Rolling model upgrade"
    MANUAL = RunKind.MANUAL, "Manual upgrade"
    EXTENSION = RunKind.EXTENSION, "Extension upgrade"


class StartedBy(models.TextChoices):
    USER = "User"
    PLATFORM = "Platform"
    UNKNOWN = "Unknown"


class RunStatus(models.TextChoices):
    ROLLING_FORWARD = "RollingForward"
    CANCELLED = "Cancelled"
    COMPLETED = "Completed"
    FAULTED = "Faulted"


TERMINAL = {RunStatus.CANCELLED, RunStatus.COMPLETED, RunStatus.FAULTED}


class Phase(models.TextChoices):
    """Where a rolling-forward run is; each has a plain-words explanation for operators."""

    BEFORE_BATCH = "before_batch", "Checking the set's health before the next batch"
    DISPATCHING = "dispatching", "Asking the driver to upgrade the batch"
    UPGRADING = "upgrading", "Upgrading the batch"
    HEALTH_WAIT = "health_wait", "Waiting for the batch to become healthy"
    ROLLBACK_DISPATCHING = "rollback_dispatching", "Asking the driver to roll back failed instances"
    ROLLING_BACK = "rolling_back", "Rolling back failed instances"
    PAUSE = "pause", "Pausing between batches"
    DONE = "done", "Finished"


class LastAction(models.TextChoices):
    START = "Start"
    CANCEL = "Cancel"


class UpgradeRun(models.Model):
    """One attempt to move instances of a scale set to a target image / model / extensions.

    R-ONE-1 is a partial unique constraint: the database refuses a second rolling-forward
    run for the same set, whatever the timing of two concurrent starts.
    """

    scale_set = models.ForeignKey(ScaleSet, on_delete=models.CASCADE, related_name="runs")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    started_by = models.CharField(max_length=16, choices=StartedBy.choices, default=StartedBy.USER)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.ROLLING_FORWARD)
    phase = models.CharField(max_length=24, choices=Phase.choices, default=Phase.BEFORE_BATCH)
    last_action = models.CharField(max_length=8, choices=LastAction.choices, default=LastAction.START)
    last_action_at = models.DateTimeField()
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    next_action_at = models.DateTimeField(null=True, blank=True, db_index=True)
    phase_deadline = models.DateTimeField(null=True, blank=True, help_text="End of the health wait")
    cancel_requested = models.BooleanField(default=False)

    # the target, fixed at start
    target_image = models.CharField(max_length=400, blank=True, help_text="Image key")
    target_model_version = models.PositiveIntegerField()
    target_extensions = models.JSONField(default=dict, blank=True, help_text="{extension name: version}")
    previous_extensions = models.JSONField(
        default=dict, blank=True, help_text="{extension name: version} an extension rollback restores"
    )
    policy = models.JSONField(help_text="The policy snapshot the run runs under")

    batch_count = models.PositiveIntegerField(default=0)
    current_batch = models.IntegerField(default=-1, help_text="Index of the batch in flight or last done")
    pending_error_code = models.CharField(max_length=80, blank=True, help_text="Fault to report after rollback")

    # progress (R-LOOP-1), rollback info and error, kept current by the engine
    successful_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    in_progress_count = models.PositiveIntegerField(default=0)
    pending_count = models.PositiveIntegerField(default=0)
    skipped_count = models.PositiveIntegerField(default=0)
    rolled_back_count = models.PositiveIntegerField(default=0)
    rollback_failed_count = models.PositiveIntegerField(default=0)
    rollback_error = models.CharField(max_length=500, blank=True)
    error_code = models.CharField(max_length=80, blank=True)
    error_message = models.CharField(max_length=1000, blank=True)
    error_details = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-started_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["scale_set"], condition=Q(status="RollingForward"), name="one_active_run_per_scale_set"
            )
        ]
        indexes = [
            models.Index(fields=["status", "next_action_at"]),
            # a set's newest run (latest_runs, run panels, history): one index probe per set
            models.Index(fields=["scale_set", "-started_at", "-id"], name="run_newest_per_set"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} of {self.scale_set_id}"

    @property
    def is_active(self) -> bool:
        return self.status == RunStatus.ROLLING_FORWARD

    @property
    def policy_snapshot(self) -> Policy:
        return Policy(**self.policy)

    @property
    def target_label(self) -> str:
        """What the run upgrades to, for people: an image, or extension versions."""
        if self.kind == Kind.EXTENSION:
            return ", ".join(f"{name} {version}" for name, version in sorted(self.target_extensions.items()))
        return ImageRef.from_key(self.target_image).label if self.target_image else ""

    @property
    def targeted_count(self) -> int:
        return self.successful_count + self.failed_count + self.in_progress_count + self.pending_count


class BatchStatus(models.TextChoices):
    PENDING = "Pending"
    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    NOT_STARTED = "NotStarted", "Not started (run ended)"


class UpgradeBatch(models.Model):
    """One batch of a run: an update domain's (or zone's) share, planned at the start."""

    run = models.ForeignKey(UpgradeRun, on_delete=models.CASCADE, related_name="batches")
    index = models.PositiveIntegerField()
    update_domain = models.IntegerField(help_text="-1 for an all-at-once batch")
    zone = models.CharField(max_length=8, blank=True)
    size = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=BatchStatus.choices, default=BatchStatus.PENDING)
    started_at = models.DateTimeField(null=True, blank=True)
    upgraded_at = models.DateTimeField(null=True, blank=True, help_text="Driver finished; health wait began")
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="unique_batch_index")]

    def __str__(self) -> str:
        return f"batch {self.index} of run {self.run_id}"


class OutcomeStatus(models.TextChoices):
    PENDING = "Pending"
    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"
    ROLLBACK_FAILED = "RollbackFailed"
    SKIPPED = "Skipped"


class InstanceOutcome(models.Model):
    """What a run did to one instance, with the versions it went from and to."""

    run = models.ForeignKey(UpgradeRun, on_delete=models.CASCADE, related_name="outcomes")
    batch = models.ForeignKey(UpgradeBatch, null=True, blank=True, on_delete=models.CASCADE, related_name="outcomes")
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="+")
    instance_id_number = models.PositiveIntegerField(help_text="The instance id within its set")
    status = models.CharField(max_length=16, choices=OutcomeStatus.choices, default=OutcomeStatus.PENDING)
    from_image = models.CharField(max_length=400, blank=True)
    to_image = models.CharField(max_length=400, blank=True)
    reason = models.CharField(max_length=500, blank=True, help_text="Why skipped, or what failed")
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "instance_id_number"]
        constraints = [models.UniqueConstraint(fields=["run", "instance"], name="one_outcome_per_instance")]
        indexes = [models.Index(fields=["run", "batch", "status"])]

    def __str__(self) -> str:
        return f"instance {self.instance_id_number}: {self.status}"


class RunEvent(models.Model):
    """The append-only log of a run: every state change of the run and of each instance.

    Any moment of a run can be rebuilt from it (the replay); nothing updates or deletes rows.
    """

    run = models.ForeignKey(UpgradeRun, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(db_index=True)
    instance_id_number = models.PositiveIntegerField(null=True, blank=True)
    batch_index = models.IntegerField(null=True, blank=True)
    from_state = models.CharField(max_length=24, blank=True)
    to_state = models.CharField(max_length=24)
    message = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["run", "at", "pk"]

    def __str__(self) -> str:
        who = f"instance {self.instance_id_number}" if self.instance_id_number is not None else "run"
        return f"{self.at:%H:%M:%S} {who}: {self.from_state} → {self.to_state}"

    @classmethod
    def of(cls, run: UpgradeRun, at: Any, to_state: str, **fields: Any) -> RunEvent:
        return cls(run=run, at=at, to_state=to_state, **fields)


# --- Availability-first rollouts (R-AVAIL-1, R-AUTO-2, R-EXT-1..2) ---------------------------


class RolloutKind(models.TextChoices):
    OS_IMAGE = "OSImage", "OS image"
    EXTENSION = "Extension", "Extension"


class RolloutStatus(models.TextChoices):
    WAITING = "Waiting", "Waiting for the trigger delay"
    ROLLING_OUT = "RollingOut", "Rolling out"
    HALTED = "Halted", "Halted"
    COMPLETED = "Completed", "Completed"
    SUPERSEDED = "Superseded", "Superseded by a newer version"


class Rollout(models.Model):
    """One published version (an image version or an extension version) reaching every set
    that takes it automatically: region by region in phases, paired regions never in the same
    phase, zones one at a time inside a region (R-AVAIL-1).

    Like a run, it is a durable state machine (upgrades.rollouts): `next_action_at` says
    when it next needs attention, and the beat finds it then."""

    kind = models.CharField(max_length=16, choices=RolloutKind.choices)
    target = models.CharField(max_length=400, help_text="Image key, or publisher.type@version")
    status = models.CharField(max_length=16, choices=RolloutStatus.choices, default=RolloutStatus.WAITING)
    created_at = models.DateTimeField()
    not_before = models.DateTimeField(help_text="End of the trigger delay after publication")
    next_action_at = models.DateTimeField(null=True, blank=True, db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    halted_at = models.DateTimeField(null=True, blank=True)
    halt_reason = models.CharField(max_length=1000, blank=True)
    retry_at = models.DateTimeField(null=True, blank=True, help_text="When a halted extension rollout retries")
    attempts = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [models.UniqueConstraint(fields=["kind", "target"], name="one_rollout_per_version")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} rollout of {self.target}"

    @property
    def target_name(self) -> str:
        """What is rolled out, without its version: the image (publisher/offer/SKU or
        gallery/image) or the extension's publisher.type."""
        if self.kind == RolloutKind.OS_IMAGE:
            return ImageRef.from_key(self.target).name
        return self.target.rpartition("@")[0]

    @property
    def target_label(self) -> str:
        """The version rolled out."""
        if self.kind == RolloutKind.OS_IMAGE:
            return ImageRef.from_key(self.target).label
        return self.target.rpartition("@")[2]

    @property
    def is_active(self) -> bool:
        return self.status in (RolloutStatus.WAITING, RolloutStatus.ROLLING_OUT)


class StepStatus(models.TextChoices):
    PENDING = "Pending"
    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


FINISHED_STEPS = {StepStatus.SUCCEEDED, StepStatus.FAILED}


class RolloutStep(models.Model):
    """One region's share of a phase, zone by zone: `zone` "" holds the region's sets that
    are not zonal; a zonal set has one step per zone, taken one after another (`position`)."""

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="steps")
    phase = models.PositiveIntegerField()
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="+")
    zone = models.CharField(max_length=8, blank=True)
    position = models.PositiveIntegerField(help_text="Order inside the region's share of the phase")
    status = models.CharField(max_length=16, choices=StepStatus.choices, default=StepStatus.PENDING)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["rollout", "phase", "region__name", "position"]
        constraints = [
            models.UniqueConstraint(fields=["rollout", "phase", "region", "zone"], name="one_step_per_zone_and_phase")
        ]

    def __str__(self) -> str:
        where = f"{self.region_id} zone {self.zone}" if self.zone else f"{self.region_id}"
        return f"phase {self.phase}, {where}"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STEPS


class TargetStatus(models.TextChoices):
    SCHEDULED = "Scheduled"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"


FINISHED_TARGETS = {TargetStatus.SUCCEEDED, TargetStatus.FAILED, TargetStatus.SKIPPED}


class RolloutTarget(models.Model):
    """One set in one step: its run starts when `due_at` comes (the trigger delay) and no
    other run holds the set (R-ONE-1)."""

    step = models.ForeignKey(RolloutStep, on_delete=models.CASCADE, related_name="targets")
    scale_set = models.ForeignKey(ScaleSet, on_delete=models.CASCADE, related_name="rollout_targets")
    status = models.CharField(max_length=16, choices=TargetStatus.choices, default=TargetStatus.SCHEDULED)
    due_at = models.DateTimeField()
    run = models.ForeignKey(
        UpgradeRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="rollout_targets"
    )
    message = models.CharField(max_length=1000, blank=True, help_text="Why it waits, was skipped or failed")

    class Meta:
        ordering = ["step", "scale_set__name"]
        constraints = [models.UniqueConstraint(fields=["step", "scale_set"], name="one_target_per_step_and_set")]

    def __str__(self) -> str:
        return f"{self.scale_set_id} in {self.step}"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_TARGETS
