"""Image and extension version numbers: parsed and compared numerically, part by part.

`2016.127.20180613` < `2016.127.20190101`, and `10` > `9` (never compared as strings).
"""

from django.core.exceptions import ValidationError

LATEST = "latest"
_PART_WIDTH = 12  # digits per part in the sortable key; Azure versions fit in 10


def parse_version(version: str) -> tuple[int, ...]:
    """`1.2.30` -> (1, 2, 30); anything but dot-separated whole numbers is refused."""
    parts = version.split(".")
    if not version or not all(part.isascii() and part.isdigit() for part in parts):
        raise ValidationError(
            f"'{version}' is not a version: use whole numbers separated by dots, like 1.0.0 or 2016.127.20180613.",
            code="invalid_version",
        )
    if any(len(part.lstrip("0")) > _PART_WIDTH for part in parts):
        raise ValidationError(f"'{version}' has a part longer than {_PART_WIDTH} digits.")
    return tuple(int(part) for part in parts)


def version_sort_key(version: str) -> str:
    """A string that sorts like the version, for ORDER BY in the database."""
    return ".".join(str(part).zfill(_PART_WIDTH) for part in parse_version(version))


def highest(versions: list[str]) -> str | None:
    return max(versions, key=parse_version, default=None)
