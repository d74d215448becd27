"""The API tokens page: a logged-in user lists, makes and revokes their own tokens."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from api.models import ApiToken
from api.tokens import token_create, token_revoke


class TokenForm(forms.Form):
    name = forms.CharField(max_length=80, help_text="What the token is for, e.g. 'nightly pipeline'.")


@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    """GET lists the user's tokens; POST makes one and shows its plaintext on this answer only
    (it is not stored, so a reload or a redirect could never show it again)."""
    form = TokenForm(request.POST or None)
    created: tuple[ApiToken, str] | None = None
    if request.method == "POST" and form.is_valid():
        try:
            created = token_create(user=request.user, name=form.cleaned_data["name"])  # type: ignore[arg-type]  # logged in
        except ValidationError as error:
            form.add_error("name", error.messages[0])
        else:
            form = TokenForm()
    tokens = ApiToken.objects.filter(user=request.user.pk)
    response = render(
        request,
        "api/token_list.html",
        {
            "form": form,
            "tokens": tokens,
            "created": created[0] if created else None,
            "plaintext": created and created[1],
        },
    )
    if created:
        response["Cache-Control"] = "no-store"  # the secret must not stay in a cache
    return response


@require_POST
def token_revoke_view(request: HttpRequest, token_id: int) -> HttpResponse:
    """Revoke one of the user's own tokens (another user's is a 404, not a 403: no probing)."""
    token = get_object_or_404(ApiToken, pk=token_id, user=request.user.pk)
    token_revoke(token=token)
    messages.success(request, f"Token “{token.name}” is revoked; clients using it are refused from now on.")
    return HttpResponseRedirect(reverse("api:token-list"))
