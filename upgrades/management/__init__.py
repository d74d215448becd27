"""Management commands of the upgrades app (see fleet.cli for what they share)."""
