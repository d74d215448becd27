from django.urls import path

from fleet.consumers import FleetConsumer, ScaleSetConsumer
from upgrades.consumers import RolloutConsumer

websocket_urlpatterns = [
    path("ws/fleet/", FleetConsumer.as_asgi()),
    path("ws/scale-sets/<int:scale_set_id>/", ScaleSetConsumer.as_asgi()),
    path("ws/rollouts/", RolloutConsumer.as_asgi()),
    path("ws/rollouts/<int:rollout_id>/", RolloutConsumer.as_asgi()),
]
