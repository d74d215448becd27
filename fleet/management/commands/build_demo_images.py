"""Build the demo app's image versions in the local image store and publish them to the
catalog, so local-process scale sets can boot from them and be upgraded to them."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from fleet import clock, services
from fleet.cli import ConsoleCommand, refusal, regions_named
from fleet.drivers.local import images
from fleet.drivers.local.images import BEHAVIOURS, DEMO_APP, DEMO_RELEASES, DemoRelease
from fleet.models import ImagePublication, Region
from fleet.selectors import latest_platform_version
from fleet.versions import LATEST, parse_version

SLOW_BOOT_SECONDS = 20.0  # a "slow" version given without --boot-seconds


def _describe(behaviour: str, boot_seconds: float) -> str:
    return f"{behaviour} (boot {boot_seconds:g} s)" if behaviour == "slow" else behaviour


class Command(ConsoleCommand):
    help = (
        f"Build the demo app ({'/'.join(DEMO_APP)}) in the local image store and publish it in the catalog. "
        "Without --version: the demo set, "
        + ", ".join(f"{r.version} {_describe(r.behaviour, r.boot_seconds)}" for r in DEMO_RELEASES)
        + " (published a day apart, oldest first; 'latest' is the highest version, so the healthy "
        f"{DEMO_RELEASES[-1].version} keeps sets on 'latest' healthy and a broken build is rolled out only when "
        "an operator pins it). With --version: that one version, published now. Running it again changes "
        "nothing: built versions are kept, published ones are not published again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--version", help="build and publish this version only, e.g. 2.0.0")
        parser.add_argument(
            "--behaviour",
            choices=list(BEHAVIOURS),
            help="with --version: how its program behaves (default healthy). "
            + " ".join(f"{name}: {text}" for name, text in BEHAVIOURS.items()),
        )
        parser.add_argument(
            "--boot-seconds",
            type=float,
            help=f"with --version and --behaviour slow: seconds before it listens (default {SLOW_BOOT_SECONDS:g})",
        )
        parser.add_argument("--region", help="publish in these regions only (comma-separated; default: all)")
        parser.add_argument("--only-build", action="store_true", help="build in the local store, publish nothing")
        parser.add_argument(
            "--rebuild",
            action="store_true",
            help="build again versions already in the store (after the program changed, or to change a behaviour)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        releases, dated = _releases(options)
        regions = [] if options["only_build"] else _regions(options["region"])
        builds = {release.version: images.find(release.key) for release in releases}
        for release in releases:
            existing = builds[release.version]
            if existing and not options["rebuild"] and _differs(existing, release):
                raise CommandError(
                    f"{release.version} is already built as {_describe(existing.behaviour, existing.boot_seconds)}; "
                    f"give --rebuild to build it as {_describe(release.behaviour, release.boot_seconds)} "
                    "(instances made from it keep their copy until reimaged)."
                )
        self.stdout.write(f"Local image store: {images.store_root()}")
        now = clock.now()
        for index, release in enumerate(releases):
            # The demo set reads as a release history, one version a day; one version is new today.
            at = now - dt.timedelta(days=len(releases) - 1 - index) if dated else now
            built = _build(release, builds[release.version], rebuild=options["rebuild"])
            published = _publish(release, regions, at=at) if regions else ""
            self.stdout.write(
                f"{release.version}  {_describe(release.behaviour, release.boot_seconds)}: {built}"
                + (f"; {published}" if published else "; not published (--only-build)")
            )
        if regions:
            self._report_latest(regions)

    def _report_latest(self, regions: list[Region]) -> None:
        """Which version sets on 'latest' now take, region by region, and a warning when it is
        a broken one."""
        publisher, offer, sku = DEMO_APP
        by_version: dict[str | None, list[str]] = defaultdict(list)
        for region in regions:
            version = latest_platform_version(publisher=publisher, offer=offer, sku=sku, region_id=region.pk)
            by_version[version].append(region.name)
        for version, names in by_version.items():
            if version is None:
                continue
            build = images.find(DemoRelease(version, "healthy").key)
            behaviour = build.behaviour if build else "not in the local store"
            self.stdout.write(f"latest in {', '.join(names)}: {version} ({behaviour})")
            if behaviour != "healthy":
                self.stdout.write(
                    f"  warning: scale sets on 'latest' in {', '.join(names)} take {version}, which is not healthy."
                )


def _releases(options: dict[str, Any]) -> tuple[list[DemoRelease], bool]:
    """The versions to build ([the demo set] or [--version]), checked before anything is
    done; and whether to date them as a release history (the demo set) or now."""
    version = options["version"]
    if version is None:
        if options["behaviour"] is not None or options["boot_seconds"] is not None:
            raise CommandError("--behaviour and --boot-seconds go with --version (the demo set has its own).")
        return list(DEMO_RELEASES), True
    if version == LATEST:
        raise CommandError("--version: 'latest' is resolved, never built or published; give a version like 2.0.0.")
    try:
        parse_version(version)
    except ValidationError as error:
        raise refusal(error, headline="--version:") from None
    behaviour = options["behaviour"] or "healthy"
    boot_seconds = options["boot_seconds"]
    if boot_seconds is None:
        boot_seconds = SLOW_BOOT_SECONDS if behaviour == "slow" else 0.0
    try:
        images.validate_behaviour(behaviour, boot_seconds)
    except ValueError as error:
        raise CommandError(str(error)) from None
    return [DemoRelease(version, behaviour, boot_seconds)], False


def _regions(names: str | None) -> list[Region]:
    if names is not None:
        return regions_named(names, option="--region")
    regions = list(Region.objects.order_by("name"))
    if not regions:
        raise CommandError(
            "There is no region to publish in: load the demo fleet (manage.py demo_fleet) or add regions first, "
            "or give --only-build."
        )
    return regions


def _differs(build: images.ImageBuild, release: DemoRelease) -> bool:
    return (build.behaviour, build.boot_seconds) != (release.behaviour, release.boot_seconds)


def _build(release: DemoRelease, existing: images.ImageBuild | None, *, rebuild: bool) -> str:
    if existing is not None and not rebuild:
        return "already built"
    try:
        images.build(release.key, behaviour=release.behaviour, boot_seconds=release.boot_seconds)
    except (ValueError, OSError) as error:
        raise CommandError(f"{release.version} was not built: {error}") from None
    return "rebuilt" if existing is not None else "built"


def _publish(release: DemoRelease, regions: list[Region], *, at: dt.datetime) -> str:
    """Publish the version where it is not yet (a region it is in keeps its publication)."""
    publisher, offer, sku = DEMO_APP
    already = set(
        ImagePublication.objects.filter(
            image_version__publisher=publisher,
            image_version__offer=offer,
            image_version__sku=sku,
            image_version__version=release.version,
            region__in=regions,
        ).values_list("region_id", flat=True)
    )
    missing = [region for region in regions if region.pk not in already]
    done = []
    if missing:
        try:
            services.platform_image_publish(
                publisher=publisher, offer=offer, sku=sku, version=release.version, regions=missing, at=at
            )
        except ValidationError as error:
            raise refusal(error, headline=f"{release.version} was not published:") from None
        done.append(f"published in {', '.join(r.name for r in missing)}")
    if already:
        done.append(f"already published in {', '.join(r.name for r in regions if r.pk in already)}")
    return "; ".join(done)
