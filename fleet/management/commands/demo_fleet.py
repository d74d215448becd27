from typing import Any

from django.core.management.base import BaseCommand

from fleet.demo import demo_fleet_load


class Command(BaseCommand):
    help = "Load the demo fleet (regions, image catalog, nine scale sets — one of real local processes —, three users)."

    def handle(self, *args: Any, **options: Any) -> None:
        summary = demo_fleet_load()
        if summary.already_loaded:
            added = f" (added {', '.join(summary.created)})" if summary.created else ""
            self.stdout.write(f"Demo fleet already loaded; left as it is{added}.")
        else:
            self.stdout.write(f"Demo fleet loaded: {', '.join(summary.created)}.")
