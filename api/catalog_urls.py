"""Routes of the image catalog, gallery image versions and the console's own (beyond-ARM) API."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
