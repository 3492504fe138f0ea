"""The webhook endpoint: authenticated by signature, not by login."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import hooks


@csrf_exempt
@login_not_required
@require_POST
def receive(request: HttpRequest, forge: str, name: str) -> JsonResponse:
    """Verify and record a webhook delivery, and start a run for a push."""
    limit = settings.SLIPWAY["WEBHOOK_MAX_BYTES"]
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return JsonResponse({"error": "bad Content-Length"}, status=400)
    if declared > limit:
        return JsonResponse({"error": f"body larger than {limit} bytes"}, status=413)
    try:
        body = request.body
    except RequestDataTooBig:
        return JsonResponse({"error": f"body larger than {limit} bytes"}, status=413)
    result = hooks.receive(
        forge,
        name,
        dict(request.headers),
        body,
        remote_addr=request.META.get("REMOTE_ADDR"),
    )
    return JsonResponse(result.body, status=result.status)
