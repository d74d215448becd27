"""Refusals the interfaces turn into ARM errors (409 OperationNotAllowed), form errors or
a CLI exit code. Bad input itself is a django ValidationError."""


class OperationNotAllowed(Exception):
    """The request is well formed but the set's state forbids it now (R-ONE-1, R-CANCEL-1)."""

    code = "OperationNotAllowed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NothingToUpgrade(OperationNotAllowed):
    """Every chosen instance is already on the target (or protected): no run is recorded."""


class ScaleSetBusy(OperationNotAllowed):
    """Another run rolls forward on the set (R-ONE-1)."""
