"""Where an instance lands: placement group, update domain, fault domain and zone.

Pure functions (no ORM). Placement groups hold at most 100 instances; update and fault
domains are numbered within each placement group. Instance n of a regional set goes to
UD n mod 5 and FD n mod platformFaultDomainCount within its group (SPEC 2). In a zonal set
the instances are spread round-robin over the zones first, then over UDs and FDs within each
zone, so that every zone has all its update domains (docs/DECISIONS.md).
"""

from dataclasses import dataclass

PLACEMENT_GROUP_SIZE = 100
UPDATE_DOMAIN_COUNT = 5  # the platform's fixed spread; pages derive their rows from data


@dataclass(frozen=True)
class Placement:
    placement_group: int
    update_domain: int
    fault_domain: int
    zone: str


def place(instance_id: int, *, zones: list[str], fault_domain_count: int, single_placement_group: bool) -> Placement:
    if single_placement_group:
        placement_group, index = 0, instance_id
    else:
        placement_group, index = divmod(instance_id, PLACEMENT_GROUP_SIZE)
    zone = ""
    if zones:
        zone = zones[index % len(zones)]
        index //= len(zones)
    return Placement(
        placement_group=placement_group,
        update_domain=index % UPDATE_DOMAIN_COUNT,
        fault_domain=index % fault_domain_count,
        zone=zone,
    )
