from django.urls import path

from upgrades import replay_views, rollout_views, views

app_name = "upgrades"
urlpatterns = [
    path("history/", views.history, name="history"),
    path("scale-sets/<int:scale_set_id>/history/", views.scale_set_history, name="scale-set-history"),
    path("runs/<int:run_id>/", views.run_detail, name="run-detail"),
    path("runs/<int:run_id>/replay.json", replay_views.replay_data, name="run-replay"),
    # Operator actions (POST only): each redirects back to the scale-set page.
    path("scale-sets/<int:scale_set_id>/model/", views.model_change, name="model-change"),
    path("scale-sets/<int:scale_set_id>/manual-upgrade/", views.manual_upgrade, name="manual-upgrade"),
    path("scale-sets/<int:scale_set_id>/rolling-upgrade/", views.rolling_upgrade, name="rolling-upgrade"),
    path("scale-sets/<int:scale_set_id>/os-upgrade/", views.os_upgrade_now, name="os-upgrade"),
    path("scale-sets/<int:scale_set_id>/cancel/", views.cancel, name="cancel"),
    path("scale-sets/<int:scale_set_id>/reimage/", views.reimage, name="reimage"),
    path("scale-sets/<int:scale_set_id>/power/", views.power, name="power"),
    path(
        "scale-sets/<int:scale_set_id>/automatic-os-upgrade/",
        views.automatic_os_upgrade,
        name="automatic-os-upgrade",
    ),
    # Automatic rollouts (read-only): `?fragment=1` returns only the part a live page swaps in.
    path("rollouts/", rollout_views.rollout_list, name="rollout-list"),
    path("rollouts/<int:rollout_id>/", rollout_views.rollout_detail, name="rollout-detail"),
]
