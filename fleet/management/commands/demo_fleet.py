from typing import Any

from django.core.management.base import BaseCommand

from fleet.demo import demo_fleet_load


class Command(BaseCommand):
    help = "Load the demo fleet (regions, image catalog, eight scale sets, three users)."

    def handle(self, *args: Any, **options: Any) -> None:
        summary = demo_fleet_load()
        if summary.already_loaded:
            self.stdout.write("Demo fleet already loaded; left as it is.")
        else:
            self.stdout.write(f"Demo fleet loaded: {', '.join(summary.created)}.")
