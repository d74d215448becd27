"""Version ordering and 'latest' resolution, for platform and gallery images (SPEC 2)."""

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from hypothesis import given
from hypothesis import strategies as st

from fleet import clock, services
from fleet.images import ImageRef
from fleet.models import Gallery, GalleryImage, ImagePublication, ImageSource, ScaleSet
from fleet.selectors import latest_gallery_version, latest_platform_version, target_image, target_images
from fleet.versions import highest, parse_version, version_sort_key
from tests import factories


def test_versions_compare_numerically_part_by_part():
    assert parse_version("2016.127.20180613") < parse_version("2016.127.20190101")
    assert parse_version("10") > parse_version("9")
    assert parse_version("1.10.0") > parse_version("1.9.9")
    assert highest(["1.9.0", "1.10.0", "1.2.0"]) == "1.10.0"
    assert highest([]) is None


@pytest.mark.parametrize("bad", ["", "latest", "1..2", "1.2a", "v1", "1.-2", " 1.2"])
def test_a_version_that_is_not_dotted_numbers_is_refused_clearly(bad):
    with pytest.raises(ValidationError, match="is not a version"):
        parse_version(bad)


version_parts = st.lists(st.integers(min_value=0, max_value=10**10), min_size=1, max_size=4)


@given(version_parts, version_parts)
def test_the_database_sort_key_orders_like_the_version(a, b):
    left, right = ".".join(map(str, a)), ".".join(map(str, b))
    assert (version_sort_key(left) < version_sort_key(right)) == (parse_version(left) < parse_version(right))


@pytest.mark.django_db
def test_latest_platform_version_is_the_highest_published_in_that_region():
    eastus, westus = factories.region("eastus"), factories.region("westus")
    for version in ["18.04.9", "18.04.10", "18.04.202301010"]:
        factories.publish(version, eastus)
    factories.publish("18.04.202402020", westus)  # newer, but not in eastus
    spec = {"publisher": "Canonical", "offer": "UbuntuServer", "sku": "18.04-LTS"}
    assert latest_platform_version(**spec, region_id=eastus.pk) == "18.04.202301010"
    assert latest_platform_version(**spec, region_id=westus.pk) == "18.04.202402020"
    assert latest_platform_version(**{**spec, "sku": "20.04-LTS"}, region_id=eastus.pk) is None


@pytest.mark.django_db
def test_a_version_published_later_becomes_latest_only_from_its_publication_time():
    eastus = factories.region()
    now = clock.now()
    factories.publish("18.04.1", eastus, at=now - dt.timedelta(days=1))
    factories.publish("18.04.2", eastus, at=now + dt.timedelta(hours=1))
    spec = {"publisher": "Canonical", "offer": "UbuntuServer", "sku": "18.04-LTS", "region_id": eastus.pk}
    assert latest_platform_version(**spec) == "18.04.1"
    assert latest_platform_version(**spec, at=now + dt.timedelta(hours=2)) == "18.04.2"


@pytest.mark.django_db
def test_publishing_again_to_more_regions_adds_them_and_keeps_the_first_date():
    eastus, westus = factories.region("eastus"), factories.region("westus")
    first_day = clock.now() - dt.timedelta(days=3)
    factories.publish("18.04.5", eastus, at=first_day)
    factories.publish("18.04.5", eastus, westus)
    publications = ImagePublication.objects.filter(image_version__version="18.04.5")
    assert sorted(p.region.name for p in publications) == ["eastus", "westus"]
    assert publications.get(region=eastus).published_at == first_day


@pytest.mark.django_db
def test_publishing_latest_or_a_malformed_version_is_refused():
    eastus = factories.region()
    for bad in ["latest", "1.x"]:
        with pytest.raises(ValidationError):
            factories.publish(bad, eastus)


@pytest.fixture
def gallery_image(db):
    eastus = factories.region("eastus")
    gallery = Gallery.objects.create(subscription_id="s", resource_group="rg", name="g", region=eastus)
    return GalleryImage.objects.create(gallery=gallery, name="app", os_type="Linux")


def test_gallery_latest_needs_completed_replication_in_the_region(gallery_image, frozen_clock):
    eastus, westus = factories.region("eastus"), factories.region("westus")
    services.gallery_image_version_publish(image=gallery_image, name="1.0.0", target_regions=[eastus, westus])
    services.gallery_image_version_publish(
        image=gallery_image, name="1.1.0", target_regions=[eastus, westus], replication_seconds=600
    )
    services.gallery_image_version_publish(image=gallery_image, name="1.2.0", target_regions=[eastus])
    assert latest_gallery_version(gallery_image_id=gallery_image.pk, region_id=westus.pk) == "1.0.0"
    assert latest_gallery_version(gallery_image_id=gallery_image.pk, region_id=eastus.pk) == "1.2.0"
    frozen_clock.advance_simulated(600)
    services.gallery_replication_advance(clock.now())
    assert latest_gallery_version(gallery_image_id=gallery_image.pk, region_id=westus.pk) == "1.1.0"


def test_gallery_versions_excluded_from_latest_never_count(gallery_image):
    eastus = factories.region("eastus")
    services.gallery_image_version_publish(image=gallery_image, name="1.0.0", target_regions=[eastus])
    services.gallery_image_version_publish(
        image=gallery_image, name="2.0.0", target_regions=[eastus], exclude_from_latest=True
    )
    assert latest_gallery_version(gallery_image_id=gallery_image.pk, region_id=eastus.pk) == "1.0.0"


def test_gallery_versions_order_numerically_and_must_be_major_minor_patch(gallery_image):
    eastus = factories.region("eastus")
    for name in ["1.9.0", "1.10.0", "1.2.0"]:
        services.gallery_image_version_publish(image=gallery_image, name=name, target_regions=[eastus])
    assert latest_gallery_version(gallery_image_id=gallery_image.pk, region_id=eastus.pk) == "1.10.0"
    with pytest.raises(ValidationError, match="Major.Minor.Patch"):
        services.gallery_image_version_publish(image=gallery_image, name="1.0", target_regions=[eastus])
    with pytest.raises(ValidationError, match="at least one target region"):
        services.gallery_image_version_publish(image=gallery_image, name="3.0.0", target_regions=[])


def test_target_image_resolves_latest_for_platform_gallery_and_custom(gallery_image):
    eastus = factories.region("eastus")
    services.gallery_image_version_publish(image=gallery_image, name="1.0.0", target_regions=[eastus])
    platform = factories.scale_set("platform")
    gallery = factories.scale_set(
        "gallery", image_source="gallery", gallery_image=gallery_image, image_version="latest"
    )
    custom = factories.scale_set("custom", image_source="custom", custom_image_uri="https://x/vhds/a.vhd")
    pinned = factories.scale_set("pinned", image_version=factories.OLD_VERSION)
    factories.publish(factories.NEW_VERSION, eastus)
    assert target_image(platform) == ImageRef(
        ImageSource.PLATFORM, "Canonical/UbuntuServer/18.04-LTS", factories.NEW_VERSION
    )
    assert target_image(pinned).version == factories.OLD_VERSION
    assert target_image(gallery) == ImageRef(ImageSource.GALLERY, "g/app", "1.0.0")
    assert target_image(custom).key == "custom:https://x/vhds/a.vhd"
    assert target_image(custom).label == "a.vhd"


def test_target_images_for_many_sets_costs_two_queries(gallery_image, django_assert_num_queries):
    eastus = factories.region("eastus")
    services.gallery_image_version_publish(image=gallery_image, name="1.0.0", target_regions=[eastus])
    for n in range(5):
        factories.scale_set(f"p{n}", capacity=1)
        factories.scale_set(f"g{n}", capacity=1, image_source="gallery", gallery_image=gallery_image)
    sets = list(ScaleSet.objects.select_related("gallery_image__gallery"))
    with django_assert_num_queries(2):
        resolved = target_images(sets)
    assert {ref.version for ref in resolved.values() if ref} == {factories.OLD_VERSION, "1.0.0"}


def test_instances_record_the_concrete_image_they_were_made_from():
    ref = ImageRef(ImageSource.PLATFORM, "Canonical/UbuntuServer/18.04-LTS", "18.04.1")
    assert ImageRef.from_key(ref.key) == ref
    custom = ImageRef(ImageSource.CUSTOM, "https://x/a:b.vhd", "")
    assert ImageRef.from_key(custom.key) == custom


@pytest.mark.django_db
def test_publishing_tells_open_pages_of_sets_whose_latest_may_move(monkeypatch, django_capture_on_commit_callbacks):
    from fleet import events

    told: list[int] = []
    monkeypatch.setattr(events, "send", lambda group, message: told.append(group))
    scale_set = factories.scale_set("web", 2)
    jammy = {"image_publisher": "Canonical", "image_offer": "ubuntu", "image_sku": "22_04-lts"}
    factories.publish("22.04.202601010", scale_set.region, **jammy)
    other = factories.scale_set("other", 2, **jammy, image_version="latest")
    with django_capture_on_commit_callbacks(execute=True):
        factories.publish("18.04.202601010", scale_set.region)
    assert f"scale-set.{scale_set.pk}" in told
    assert f"scale-set.{other.pk}" not in told
