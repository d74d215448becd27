"""Image references: what a scale set boots from, and the key an OS disk records."""

from __future__ import annotations

from dataclasses import dataclass

from fleet.models import ImageSource


@dataclass(frozen=True)
class ImageRef:
    """A concrete image (never 'latest'): platform, gallery or custom URI."""

    source: str
    name: str  # publisher/offer/sku, gallery/image, or the custom URI
    version: str  # empty for custom images

    @property
    def key(self) -> str:
        if self.source == ImageSource.CUSTOM:
            return f"custom:{self.name}"
        return f"{self.source}:{self.name}:{self.version}"

    @classmethod
    def from_key(cls, key: str) -> ImageRef:
        source, _, rest = key.partition(":")
        if source == ImageSource.CUSTOM:
            return cls(source, rest, "")
        name, _, version = rest.rpartition(":")
        return cls(source, name, version)

    @property
    def label(self) -> str:
        """What an operator reads on a page: the version, or the URI's last part."""
        return self.version or self.name.rsplit("/", 1)[-1]
