from django.urls import path

from fleet.consumers import ScaleSetConsumer

websocket_urlpatterns = [
    path("ws/scale-sets/<int:scale_set_id>/", ScaleSetConsumer.as_asgi()),
]
