"""The dashboard's forms: operator actions on a scale set and the history filters.

Forms check the shape of the input (numbers, ranges, an id list's syntax); the services
decide what the fleet allows (R-ONE-1, unknown instance ids, images not in the region), and
the views put their refusals back on these forms.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.utils import timezone

from fleet.drivers import PowerAction
from fleet.models import ImageSource, ScaleSet, UpgradeMode
from upgrades.models import Kind, RunStatus, StartedBy
from upgrades.selectors import ModelChoices
from upgrades.whatif import Overrides

# A scale set holds at most 1,000 instances; a longer list is a typo, not a request.
MAX_INSTANCE_IDS = 1000
MAX_INSTANCE_ID = 2_147_483_647  # what every database's integer column holds
ALL_INSTANCES = "*"
_ID_TOKEN = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_instance_ids(text: str) -> list[int] | str:
    """'0,3,5-9' -> [0, 3, 5, 6, 7, 8, 9]; '*' -> '*' (every instance).

    Ids and ranges are separated by commas or spaces; duplicates collapse; the result is
    sorted numerically. Anything else is refused with a message naming the bad part.
    """
    text = text.strip()
    if text == ALL_INSTANCES:
        return ALL_INSTANCES
    if not text:
        raise ValidationError("Give instance ids, like 0,3,5-9 (or * for every instance).")
    tokens = re.split(r"[,\s]+", re.sub(r"\s*-\s*", "-", text))
    wanted: set[int] = set()
    for token in filter(None, tokens):
        match = _ID_TOKEN.match(token)
        if not match:
            raise ValidationError(f"'{token}' is not an instance id or a range like 5-9.")
        first = int(match[1])
        last = int(match[2]) if match[2] is not None else first
        if last > MAX_INSTANCE_ID:
            raise ValidationError(f"'{token}' is too large for an instance id.")
        if last < first:
            raise ValidationError(f"The range {first}-{last} runs backwards: write {last}-{first}.")
        if last - first + 1 > MAX_INSTANCE_IDS:
            raise ValidationError(
                f"The range {first}-{last} is longer than any scale set ({MAX_INSTANCE_IDS:,} at most)."
            )
        wanted.update(range(first, last + 1))
        if len(wanted) > MAX_INSTANCE_IDS:
            raise ValidationError(f"That is more than {MAX_INSTANCE_IDS:,} instances, more than any scale set holds.")
    return sorted(wanted)


class InstanceIdsField(forms.CharField):
    """Instance ids as an operator types them: '0,3,5-9', or '*' for every instance."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 4000)
        kwargs.setdefault("label", "Instance ids")
        kwargs.setdefault("help_text", "Like 0,3,5-9; * for every instance.")
        kwargs.setdefault("widget", forms.TextInput(attrs={"placeholder": "0,3,5-9", "autocomplete": "off"}))
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> Any:
        text = super().to_python(value)
        if text in self.empty_values:
            return text
        return parse_instance_ids(str(text))


# --- actions on a scale set -------------------------------------------------------------------


class ManualUpgradeForm(forms.Form):
    """R-MAN-1: bring an update domain, fault domain, zone or chosen instances to the latest
    model at once."""

    SCOPES = [
        ("update_domain", "update domain"),
        ("fault_domain", "fault domain"),
        ("zone", "zone"),
        ("instance_ids", "chosen instances"),
    ]
    scope = forms.ChoiceField(choices=SCOPES, widget=forms.HiddenInput)
    update_domain = forms.IntegerField(required=False, min_value=0, max_value=99, label="Update domain")
    fault_domain = forms.IntegerField(required=False, min_value=0, max_value=99, label="Fault domain")
    zone = forms.CharField(required=False, max_length=8, label="Zone")
    instance_ids = InstanceIdsField(required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        scope = data.get("scope")
        if scope and scope not in self.errors and data.get(scope) in (None, "", []):
            label = dict(self.SCOPES)[scope]
            self.add_error(scope, f"Choose the {label} to upgrade.")
        return data

    def target(self) -> dict[str, Any]:
        """The keyword manual_upgrade takes for the chosen scope."""
        scope = self.cleaned_data["scope"]
        return {scope: self.cleaned_data[scope]}

    def describe(self) -> str:
        scope = self.cleaned_data["scope"]
        value = self.cleaned_data[scope]
        if scope == "instance_ids":
            return "every instance" if value == ALL_INSTANCES else f"instances {ids_text(value)}"
        return f"{dict(self.SCOPES)[scope]} {value}"


class RollingUpgradeForm(forms.Form):
    """The operator's own rolling upgrade (vmsseditor): batch size N, pause P seconds."""

    batch_size = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=1000,
        label="Batch size",
        help_text="Instances per batch; empty for the policy's maxBatchInstancePercent.",
    )
    pause_seconds = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=86400,
        label="Pause (seconds)",
        help_text="Between batches, in simulated seconds; empty for the policy's pause.",
    )

    def choices(self) -> tuple[int | None, float | None]:
        """(batch size, pause seconds) as rolling_upgrade takes them; None: the policy's."""
        pause = self.cleaned_data["pause_seconds"]
        return self.cleaned_data["batch_size"], float(pause) if pause is not None else None


class WhatIfForm(forms.Form):
    """The what-if's assumption (upgrades.whatif): a share of the set never healthy on the
    target, and its boot time. Empty: the target's fault profile, or the default boot time."""

    failure_percent = forms.FloatField(
        required=False, min_value=0, max_value=100, label="Never healthy (%)", help_text="0–100 % of the set"
    )
    boot_seconds = forms.FloatField(
        required=False, min_value=0, max_value=3600, label="Boot (s)", help_text="simulated seconds, 0–3600"
    )

    def overrides(self) -> Overrides:
        percent = self.cleaned_data.get("failure_percent")
        return Overrides(
            failure_share=None if percent is None else percent / 100,
            boot_seconds=self.cleaned_data.get("boot_seconds"),
        )


class InstancesForm(forms.Form):
    """Reimage chosen instances (R-MAN-2)."""

    instance_ids = InstanceIdsField()


class PowerForm(forms.Form):
    """Start, restart, power off or deallocate chosen instances."""

    ACTIONS = [
        (PowerAction.START.value, "Start"),
        (PowerAction.RESTART.value, "Restart"),
        (PowerAction.POWER_OFF.value, "Power off"),
        (PowerAction.DEALLOCATE.value, "Deallocate"),
    ]
    instance_ids = InstanceIdsField()
    action = forms.ChoiceField(choices=ACTIONS, label="Action")

    def power_action(self) -> PowerAction:
        return PowerAction(self.cleaned_data["action"])


class AutomaticOsUpgradeForm(forms.Form):
    """Turn automatic OS image upgrades on or off; the service checks R-AUTO-1 when turning on."""

    enabled = forms.TypedChoiceField(
        choices=[("on", "On"), ("off", "Off")], coerce=lambda value: value == "on", widget=forms.HiddenInput
    )
    disable_automatic_rollback = forms.BooleanField(required=False, label="Without automatic rollback")

    def rollback_choice(self) -> bool | None:
        """disableAutomaticRollback as chosen when turning on; left as it is when turning off."""
        return self.cleaned_data["disable_automatic_rollback"] if self.cleaned_data["enabled"] else None


_VM_SIZE = RegexValidator(
    r"^[A-Za-z][A-Za-z0-9_\-]{1,63}$", "A VM size is a name like Standard_D2s_v3 (letters, digits, _ and -)."
)
_IMAGE_URI = RegexValidator(
    r"^(https://\S+|/subscriptions/\S+)$",
    "A custom image is an https:// URI of a VHD or a /subscriptions/… image resource id.",
)


class ModelChangeForm(forms.Form):
    """Edit the set's model: image version and SKU (platform), version (gallery) or image URI
    (custom), and VM size. R-MODE-1: in Automatic mode saving upgrades every instance at
    once, so the form refuses until the operator confirms that downtime."""

    image_sku = forms.ChoiceField(label="Image SKU")
    image_version = forms.ChoiceField(label="Image version")
    custom_image_uri = forms.CharField(label="Custom image URI", max_length=400, validators=[_IMAGE_URI])
    vm_size = forms.CharField(label="VM size", max_length=64, validators=[_VM_SIZE])
    confirm_all_at_once = forms.BooleanField(
        required=False, label="I understand every instance is upgraded at once (downtime)"
    )

    CONFIRM_MESSAGE = (
        "This set is in Automatic mode: saving upgrades every instance at once, so the whole set "
        "goes down together. Tick the box to confirm."
    )

    def __init__(self, *args: Any, scale_set: ScaleSet, choices: ModelChoices, **kwargs: Any) -> None:
        kwargs.setdefault("initial", {name: getattr(scale_set, name) for name in self.MODEL_FIELDS})
        super().__init__(*args, **kwargs)
        self.scale_set = scale_set
        source = scale_set.image_source
        if source == ImageSource.PLATFORM:
            # Callables: the catalog is read only when the form is drawn or checked.
            sku_field = self.fields["image_sku"]
            assert isinstance(sku_field, forms.ChoiceField)
            sku_field.choices = lambda: [(s, s) for s in choices.skus]
        else:
            del self.fields["image_sku"]
        if source in (ImageSource.PLATFORM, ImageSource.GALLERY):
            version_field = self.fields["image_version"]
            assert isinstance(version_field, forms.ChoiceField)
            version_field.choices = choices.version_choices
            self.initial["image_version"] = scale_set.image_version or "latest"
        else:
            del self.fields["image_version"]
        if source != ImageSource.CUSTOM:
            del self.fields["custom_image_uri"]
        if scale_set.upgrade_mode != UpgradeMode.AUTOMATIC:
            del self.fields["confirm_all_at_once"]

    MODEL_FIELDS = ("image_sku", "image_version", "custom_image_uri", "vm_size")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if "confirm_all_at_once" in self.fields and not data.get("confirm_all_at_once"):
            self.add_error("confirm_all_at_once", self.CONFIRM_MESSAGE)
        return data

    def changes(self) -> dict[str, Any]:
        """The model fields as submitted (update_model keeps only those that differ)."""
        return {name: self.cleaned_data[name] for name in self.MODEL_FIELDS if name in self.fields}


# --- history ----------------------------------------------------------------------------------


def _with_any(choices: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [("", "any"), *choices]


class HistoryFilterForm(forms.Form):
    """Filters of the history pages; every field optional, invalid input a form error."""

    status = forms.ChoiceField(required=False, choices=_with_any(RunStatus.choices))
    kind = forms.ChoiceField(required=False, choices=_with_any(Kind.choices))
    started_by = forms.ChoiceField(required=False, choices=_with_any(StartedBy.choices), label="Started by")
    started_from = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}), help_text="YYYY-MM-DD, UTC"
    )
    started_to = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}), help_text="inclusive"
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        first, last = data.get("started_from"), data.get("started_to")
        if first and last and last < first:
            self.add_error("started_to", f"'To' ({last}) is before 'From' ({first}).")
        return data

    def selector_filters(self) -> dict[str, Any]:
        """The run_history keywords: the dates as a half-open range of UTC days."""
        data = self.cleaned_data
        first: dt.date | None = data.get("started_from")
        last: dt.date | None = data.get("started_to")
        return {
            "status": data.get("status", ""),
            "kind": data.get("kind", ""),
            "started_by": data.get("started_by", ""),
            "started_from": _day_start(first) if first else None,
            "started_before": _day_start(last + dt.timedelta(days=1)) if last else None,
        }

    @property
    def is_filtered(self) -> bool:
        return any(self.data.get(name) for name in self.fields)


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=timezone.get_current_timezone())


def ids_text(ids: list[int]) -> str:
    """[0, 3, 5, 6, 7] -> '0, 3, 5–7': ids as an operator writes them back."""
    parts: list[str] = []
    start = previous = None
    for number in [*ids, None]:
        if number is not None and previous is not None and number == previous + 1:
            previous = number
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}–{previous}")
        start = previous = number
    return ", ".join(parts)
