"""Upgrade runs, batches, instance outcomes and their event log (the engine's state)."""
