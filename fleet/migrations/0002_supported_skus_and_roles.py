"""Seed the supported-SKU table for automatic OS upgrades and create the role groups.

The SKUs are the union of the tables in the three automatic-OS-upgrade documents (2018,
2019, 2022). Those tables name some publishers by display name ("Microsoft Corporation",
"Rogue Wave (OpenLogic)") and mark some SKUs with footnote stars or translate them; they are
stored here under their ARM names (MicrosoftWindowsServer, OpenLogic, 18.04-LTS,
2016-Datacenter-with-Containers, enterprise), which is what an imageReference carries.
"""

from django.db import migrations

SUPPORTED_SKUS = [
    # 2018 / 2019 documents
    ("Canonical", "UbuntuServer", "16.04-LTS"),
    ("Canonical", "UbuntuServer", "18.04-LTS"),
    ("OpenLogic", "CentOS", "7.5"),
    ("CoreOS", "CoreOS", "Stable"),
    ("MicrosoftWindowsServer", "WindowsServer", "2012-R2-Datacenter"),
    ("MicrosoftWindowsServer", "WindowsServer", "2016-Datacenter"),
    ("MicrosoftWindowsServer", "WindowsServer", "2016-Datacenter-Smalldisk"),
    ("MicrosoftWindowsServer", "WindowsServer", "2016-Datacenter-with-Containers"),
    ("MicrosoftWindowsServer", "WindowsServer", "2019-Datacenter"),
    ("MicrosoftWindowsServer", "WindowsServer", "2019-Datacenter-Smalldisk"),
    ("MicrosoftWindowsServer", "WindowsServer", "2019-Datacenter-with-Containers"),
    # 2022 document
    ("Canonical", "UbuntuServer", "18_04-LTS-Gen2"),
    ("Canonical", "0001-com-ubuntu-server-focal", "20_04-LTS"),
    ("Canonical", "0001-com-ubuntu-server-focal", "20_04-LTS-Gen2"),
    ("Canonical", "0001-com-ubuntu-server-jammy", "22_04-LTS"),
    ("MicrosoftCblMariner", "Cbl-Mariner", "cbl-mariner-1"),
    ("MicrosoftCblMariner", "Cbl-Mariner", "1-Gen2"),
    ("MicrosoftCblMariner", "Cbl-Mariner", "cbl-mariner-2"),
    ("MicrosoftCblMariner", "Cbl-Mariner", "cbl-mariner-2-Gen2"),
    ("MicrosoftSqlServer", "Sql2017-ws2019", "enterprise"),
    ("MicrosoftWindowsServer", "WindowsServer", "2016-Datacenter-gensecond"),
    ("MicrosoftWindowsServer", "WindowsServer", "2016-Datacenter-gs"),
    ("MicrosoftWindowsServer", "WindowsServer", "2016-Datacenter-with-containers-gs"),
    ("MicrosoftWindowsServer", "WindowsServer", "2019-Datacenter-Core"),
    ("MicrosoftWindowsServer", "WindowsServer", "2019-Datacenter-Core-with-Containers"),
    ("MicrosoftWindowsServer", "WindowsServer", "2019-Datacenter-gensecond"),
    ("MicrosoftWindowsServer", "WindowsServer", "2019-Datacenter-gs"),
    ("MicrosoftWindowsServer", "WindowsServer", "2019-Datacenter-with-Containers-gs"),
    ("MicrosoftWindowsServer", "WindowsServer", "2022-Datacenter"),
    ("MicrosoftWindowsServer", "WindowsServer", "2022-Datacenter-smalldisk"),
    ("MicrosoftWindowsServer", "WindowsServer", "2022-Datacenter-smalldisk-g2"),
    ("MicrosoftWindowsServer", "WindowsServer", "2022-Datacenter-azure-edition"),
    ("MicrosoftWindowsServer", "WindowsServer", "2022-Datacenter-core"),
    ("MicrosoftWindowsServer", "WindowsServer", "2022-Datacenter-core-smalldisk"),
    ("MicrosoftWindowsServer", "WindowsServer", "2022-Datacenter-g2"),
    ("MicrosoftWindowsServer", "WindowsServer", "Datacenter-core-20h2-with-containers-smalldisk-gs"),
]

ROLE_GROUPS = ["viewers", "operators"]


def seed(apps, schema_editor):
    SupportedOsSku = apps.get_model("fleet", "SupportedOsSku")
    Group = apps.get_model("auth", "Group")
    for publisher, offer, sku in SUPPORTED_SKUS:
        SupportedOsSku.objects.get_or_create(publisher=publisher, offer=offer, sku=sku)
    for name in ROLE_GROUPS:
        Group.objects.get_or_create(name=name)


def unseed(apps, schema_editor):
    SupportedOsSku = apps.get_model("fleet", "SupportedOsSku")
    for publisher, offer, sku in SUPPORTED_SKUS:
        SupportedOsSku.objects.filter(publisher=publisher, offer=offer, sku=sku).delete()


class Migration(migrations.Migration):
    dependencies = [("fleet", "0001_initial"), ("auth", "0012_alter_user_first_name_max_length")]
    operations = [migrations.RunPython(seed, unseed)]
