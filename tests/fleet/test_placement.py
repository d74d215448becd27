"""Placement groups, update domains, fault domains and zones (SPEC 2 "Spread")."""

from collections import Counter

import pytest

from fleet.placement import place
from tests import factories


def layout(scale_set):
    return list(
        scale_set.instances.order_by("instance_id").values_list(
            "instance_id", "placement_group", "update_domain", "fault_domain", "zone"
        )
    )


@pytest.mark.django_db
def test_3_instances_take_update_domains_0_to_2():
    rows = layout(factories.scale_set(capacity=3, zones=[]))
    assert [(i, pg, ud, fd) for i, pg, ud, fd, _ in rows] == [(0, 0, 0, 0), (1, 0, 1, 1), (2, 0, 2, 2)]


@pytest.mark.django_db
def test_7_instances_wrap_round_five_update_domains():
    rows = layout(factories.scale_set(capacity=7, zones=[]))
    assert [ud for _, _, ud, _, _ in rows] == [0, 1, 2, 3, 4, 0, 1]
    assert [fd for _, _, _, fd, _ in rows] == [0, 1, 2, 3, 4, 0, 1]


@pytest.mark.django_db
def test_7_instances_with_three_fault_domains():
    rows = layout(factories.scale_set(capacity=7, zones=[], platform_fault_domain_count=3))
    assert [fd for _, _, _, fd, _ in rows] == [0, 1, 2, 0, 1, 2, 0]


@pytest.mark.django_db
def test_100_instances_fill_one_placement_group_20_per_update_domain():
    rows = layout(factories.scale_set(capacity=100, zones=[]))
    assert {pg for _, pg, _, _, _ in rows} == {0}
    assert Counter(ud for _, _, ud, _, _ in rows) == dict.fromkeys(range(5), 20)


@pytest.mark.django_db
def test_101_instances_open_a_second_placement_group_numbered_from_zero():
    rows = layout(factories.scale_set(capacity=101, zones=[], single_placement_group=False))
    assert Counter(pg for _, pg, _, _, _ in rows) == {0: 100, 1: 1}
    assert rows[-1] == (100, 1, 0, 0, "")


@pytest.mark.django_db
def test_1000_instances_make_ten_placement_groups_of_five_update_domains():
    rows = layout(factories.scale_set(capacity=1000, zones=[], single_placement_group=False))
    per_group_and_domain = Counter((pg, ud) for _, pg, ud, _, _ in rows)
    assert per_group_and_domain == {(pg, ud): 20 for pg in range(10) for ud in range(5)}
    assert Counter((pg, fd) for _, pg, _, fd, _ in rows) == {(pg, fd): 20 for pg in range(10) for fd in range(5)}


@pytest.mark.django_db
def test_zonal_sets_spread_round_robin_over_zones_then_update_domains():
    rows = layout(factories.scale_set(capacity=30, zones=["1", "2", "3"]))
    assert [z for *_, z in rows[:6]] == ["1", "2", "3", "1", "2", "3"]
    per_zone_and_domain = Counter((z, ud) for _, _, ud, _, z in rows)
    assert per_zone_and_domain == {(z, ud): 2 for z in "123" for ud in range(5)}


def test_a_single_placement_group_keeps_high_instance_ids_in_group_zero():
    # after scale-in and scale-out, ids exceed 99 while the set still has one group
    spot = place(250, zones=[], fault_domain_count=5, single_placement_group=True)
    assert (spot.placement_group, spot.update_domain) == (0, 0)
    spread = place(250, zones=[], fault_domain_count=5, single_placement_group=False)
    assert (spread.placement_group, spread.update_domain) == (2, 0)


@pytest.mark.django_db
def test_instance_names_and_ids_sort_numerically():
    scale_set = factories.scale_set(capacity=12, zones=[])
    ids = list(scale_set.instances.values_list("instance_id", flat=True))
    assert ids == sorted(ids) == list(range(12))
    assert scale_set.instances.get(instance_id=10).name == "web_10"
