"""`manage.py local_processes status|resume|stop`: the real processes of local-process sets.

`make run` resumes them when the console starts (instances recorded as running whose process
is gone are started again from their OS directories) and stops them when it exits.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from fleet.drivers.local import driver as local
from fleet.models import DriverName, InstanceProcess


class Command(BaseCommand):
    help = "Show, resume or stop the processes of local-process scale sets"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["status", "resume", "stop"])

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        if action == "resume":
            count = local.resume_all()
            self.stdout.write(f"{count} instance(s) recorded as running have no process: the worker starts them.")
        elif action == "stop":
            count = local.stop_all() + local.stop_processes(local.orphan_processes())
            self.stdout.write(f"Stopped {count} process(es).")
        else:
            self._status()

    def _status(self) -> None:
        processes = (
            InstanceProcess.objects.filter(instance__scale_set__driver=DriverName.LOCAL)
            .select_related("instance__scale_set")
            .order_by("instance__scale_set__name", "instance__instance_id")
        )
        self.stdout.write(f"{'instance':32} {'pid':>7} {'port':>6} {'alive':6} {'health':13} last probe")
        for process in processes:
            instance = process.instance
            alive = bool(process.pid) and local.process_alive(process.pid or 0, local.instance_directory(instance))
            self.stdout.write(
                f"{instance.name:32} {process.pid or '-':>7} {process.port or '-':>6} {'yes' if alive else 'no':6} "
                f"{instance.health_state:13} {process.last_answer}"
            )
