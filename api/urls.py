from django.urls import path, re_path

from api import actions, arm, catalog_urls, openapi, pages, plan_views, views

SCALE_SETS = "providers/Microsoft.Compute/virtualMachineScaleSets"
GROUP = "subscriptions/<str:subscription_id>/resourceGroups/<str:resource_group>"
SCALE_SET = f"{GROUP}/{SCALE_SETS}/<str:name>"

app_name = "api"
urlpatterns = [
    path("api-tokens/", pages.token_list, name="token-list"),
    path("api-tokens/<int:token_id>/revoke", pages.token_revoke_view, name="token-revoke"),
    path("console/api/openapi.json", openapi.openapi_view, name="openapi"),
    path("subscriptions", views.subscription_list, name="subscription-list"),
    path(f"subscriptions/<str:subscription_id>/{SCALE_SETS}", views.scale_set_list, name="scale-set-list-all"),
    path(f"{GROUP}/{SCALE_SETS}", views.scale_set_list, name="scale-set-list"),
    path(SCALE_SET, views.scale_set, name="scale-set"),
    path(f"{SCALE_SET}/instanceView", views.scale_set_instance_view, name="scale-set-instance-view"),
    path(f"{SCALE_SET}/virtualMachines", views.vm_list, name="vm-list"),
    path(f"{SCALE_SET}/virtualMachines/<str:instance_id>", views.vm_get, name="vm"),
    path(
        f"{SCALE_SET}/virtualMachines/<str:instance_id>/instanceView", views.vm_instance_view, name="vm-instance-view"
    ),
    path(f"{SCALE_SET}/rollingUpgrades/latest", views.rolling_upgrade_latest, name="rolling-upgrade-latest"),
    path(f"{SCALE_SET}/osUpgradeHistory", views.os_upgrade_history, name="os-upgrade-history"),
    path(f"{SCALE_SET}/extensions", views.extension_list, name="extension-list"),
    path(f"{SCALE_SET}/extensions/<str:extension_name>", views.extension, name="extension"),
    path(f"{SCALE_SET}/osRollingUpgrade", actions.os_rolling_upgrade, name="os-rolling-upgrade"),
    path(f"{SCALE_SET}/extensionRollingUpgrade", actions.extension_rolling_upgrade, name="extension-rolling-upgrade"),
    path(f"{SCALE_SET}/rollingUpgrades/cancel", actions.rolling_upgrade_cancel, name="rolling-upgrade-cancel"),
    path(f"{SCALE_SET}/manualupgrade", actions.manual_upgrade, name="manual-upgrade"),
    path(f"{SCALE_SET}/reimage", actions.reimage, name="reimage"),
    path(f"{SCALE_SET}/start", actions.start, name="start"),
    path(f"{SCALE_SET}/restart", actions.restart, name="restart"),
    path(f"{SCALE_SET}/poweroff", actions.power_off, name="power-off"),
    path(f"{SCALE_SET}/deallocate", actions.deallocate, name="deallocate"),
    path(
        "subscriptions/<str:subscription_id>/providers/Microsoft.Compute/locations/<str:location>/operations/"
        "<str:operation_id>",
        actions.operation_status,
        name="operation",
    ),
    path(f"{catalog_urls.CONSOLE_SET}/plan", plan_views.scale_set_plan, name="console-plan"),
    *catalog_urls.urlpatterns,
    # last: anything else under /subscriptions answers ARM's 404, not an HTML page
    # [\s\S], not ".": a newline in the path must not fall through to an HTML 404.
    re_path(r"^subscriptions(?P<rest>/[\s\S]*)?$", arm.unknown_path, name="unknown-path"),
]
