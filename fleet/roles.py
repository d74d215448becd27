"""Who may do what: viewers read, operators act, staff administer (every page needs login)."""

from typing import Any

VIEWERS = "viewers"
OPERATORS = "operators"

# The demo's logins (user name, password, role), printed by `make run`. Demo only.
DEMO_USERS = [
    ("admin", "admin-demo", "staff"),
    ("operator", "operator-demo", OPERATORS),
    ("viewer", "viewer-demo", VIEWERS),
]


def is_operator(user: Any) -> bool:
    if not user.is_authenticated:
        return False
    if user.is_staff or user.is_superuser:
        return True
    return any(group.name == OPERATORS for group in user.groups.all())
