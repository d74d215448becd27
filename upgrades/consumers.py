"""The rollout pages' socket: it says "changed", and the page fetches what it shows.

`ws/rollouts/` joins `rollouts` (every rollout); `ws/rollouts/<id>/` joins `rollout.<id>` and
the `run.<id>` groups of the runs the rollout has rolling forward, so the progress of each set
moves on the page between the rollout's own steps. Every message becomes `{"type":
"changed"}`: the page fetches its fragment (at most once a second), so a message never
carries state that could be stale or lost. The page also fetches it each time the socket
opens, which stands for the snapshot: nothing changed in between goes unseen.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from fleet.consumers import CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED, LiveConsumer
from upgrades.events import ROLLOUTS_GROUP, rollout_group, run_group
from upgrades.models import Rollout, RolloutTarget, TargetStatus

CHANGED = {"type": "changed"}


class RolloutConsumer(LiveConsumer):
    """Authenticates, joins the list's group or one rollout's (and its runs'), accepts; then
    forwards every change as `changed`."""

    rollout_id: int | None = None

    async def connect(self) -> None:
        self.joined: set[str] = set()
        # Accept before closing, as the scale-set socket does: the page then sees why.
        if not self.scope["user"].is_authenticated:
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        rollout_id = self.scope["url_route"]["kwargs"].get("rollout_id")
        if rollout_id is None:
            await self._join({ROLLOUTS_GROUP})
            await self.accept()
            return
        self.rollout_id = int(rollout_id)
        # Join before reading, so a change committed in between still arrives.
        await self._join({rollout_group(self.rollout_id)})
        runs = await self._running_runs()
        if runs is None:
            await self._leave(set(self.joined))
            await self.accept()
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self._join({run_group(run_id) for run_id in runs})
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self._leave(set(getattr(self, "joined", set())))

    async def rollout_changed(self, event: dict[str, Any]) -> None:
        """upgrades.events published a change of a rollout (this one, or any for the list)."""
        if self.rollout_id is not None:
            await self._follow_runs()
        await self.send_json(CHANGED)

    async def run_update(self, event: dict[str, Any]) -> None:
        """A run of this rollout made progress: the set's counts on the page move."""
        await self.send_json(CHANGED)

    async def _follow_runs(self) -> None:
        """Listen to the runs rolling forward now, and no longer to those that ended."""
        assert self.rollout_id is not None
        runs = await self._running_runs() or set()
        wanted = {rollout_group(self.rollout_id)} | {run_group(run_id) for run_id in runs}
        await self._leave(self.joined - wanted)
        await self._join(wanted - self.joined)

    async def _join(self, groups: set[str]) -> None:
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.add(group)

    async def _leave(self, groups: set[str]) -> None:
        for group in groups:
            await self.channel_layer.group_discard(group, self.channel_name)
            self.joined.discard(group)

    @database_sync_to_async
    def _running_runs(self) -> set[int] | None:
        """The runs this rollout has rolling forward; None if there is no such rollout."""
        rollout_id = self.rollout_id
        assert rollout_id is not None
        if not Rollout.objects.filter(pk=rollout_id).exists():
            return None
        runs = RolloutTarget.objects.filter(step__rollout_id=rollout_id, status=TargetStatus.RUNNING)
        return {run_id for run_id in runs.values_list("run_id", flat=True) if run_id is not None}
