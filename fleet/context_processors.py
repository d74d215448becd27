from typing import Any

from django.conf import settings
from django.http import HttpRequest

from fleet.roles import is_operator


def console(request: HttpRequest) -> dict[str, Any]:
    """What every page's frame shows: compressed time, and whether the user may act."""
    return {
        "time_scale": settings.TIME_SCALE,
        "time_compressed": settings.TIME_SCALE != 1,
        "user_is_operator": is_operator(request.user),
    }
