from django.urls import path

from fleet import views

app_name = "fleet"
urlpatterns = [
    path("", views.scale_set_list, name="scale-set-list"),
    path("scale-sets/<int:scale_set_id>/", views.scale_set_detail, name="scale-set-detail"),
    path("audit/", views.audit_log, name="audit-log"),
]
