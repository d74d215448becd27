from django.apps import AppConfig


class UpgradesConfig(AppConfig):
    name = "upgrades"
    verbose_name = "Upgrades"

    def ready(self) -> None:
        # A run waiting on its batch looks again as soon as the simulator changes the batch's
        # instances, instead of at its next poll (fleet calls back; it never imports upgrades).
        from fleet import services
        from upgrades import engine

        services.on_simulator_steps_applied(engine.wake_runs_watching)
