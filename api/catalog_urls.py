"""Routes of the image catalog, gallery image versions and the console's own (beyond-ARM) API.

Included by api.urls before its catch-all; the last route here answers ARM's 404 for any other
path under /console/api/, so API clients never get an HTML page.
"""

from django.urls import URLPattern, path, re_path

from api import arm, catalog, console

LOCATION = "subscriptions/<str:subscription_id>/providers/Microsoft.Compute/locations/<str:location>"
PUBLISHERS = f"{LOCATION}/publishers"
OFFERS = f"{PUBLISHERS}/<str:publisher>/artifacttypes/vmimage/offers"
SKUS = f"{OFFERS}/<str:offer>/skus"
VERSIONS = f"{SKUS}/<str:sku>/versions"
GALLERY_VERSIONS = (
    "subscriptions/<str:subscription_id>/resourceGroups/<str:resource_group>/providers/Microsoft.Compute/"
    "galleries/<str:gallery>/images/<str:image>/versions"
)
CONSOLE = "console/api"
CONSOLE_SET = (
    f"{CONSOLE}/subscriptions/<str:subscription_id>/resourceGroups/<str:resource_group>/"
    "virtualMachineScaleSets/<str:name>"
)

urlpatterns: list[URLPattern] = [
    path(PUBLISHERS, catalog.publisher_list, name="catalog-publishers"),
    path(OFFERS, catalog.offer_list, name="catalog-offers"),
    path(SKUS, catalog.sku_list, name="catalog-skus"),
    path(VERSIONS, catalog.version_list, name="catalog-versions"),
    path(f"{VERSIONS}/<str:version>", catalog.version_get, name="catalog-version"),
    path(GALLERY_VERSIONS, catalog.gallery_image_version_list, name="gallery-image-versions"),
    path(f"{GALLERY_VERSIONS}/<str:version>", catalog.gallery_image_version_view, name="gallery-image-version"),
    path(f"{CONSOLE}/platformImageVersions", console.platform_image_version_publish, name="console-image-versions"),
    path(f"{CONSOLE}/extensionVersions", console.extension_version_publish, name="console-extension-versions"),
    path(f"{CONSOLE}/faultProfiles/<path:target>", console.fault_profile_view, name="console-fault-profile"),
    path(f"{CONSOLE}/runs/<str:run_id>", console.run_detail, name="console-run"),
    path(f"{CONSOLE}/runs/<str:run_id>/events", console.run_events, name="console-run-events"),
    path(f"{CONSOLE_SET}/maintenance", console.maintenance_set, name="console-maintenance"),
    path(f"{CONSOLE_SET}/runs", console.scale_set_runs, name="console-scale-set-runs"),
    # last: anything else under /console/api answers ARM's 404, not an HTML page
    # [\s\S], not ".": a newline in the path must not fall through to an HTML 404.
    re_path(r"^console/api(?P<rest>/[\s\S]*)?$", arm.unknown_path, name="console-unknown-path"),
]
