"""Cluster pages."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def cluster_list(request: HttpRequest) -> HttpResponse:
    """List the registered clusters."""
    return render(request, "clusters/cluster_list.html", {"clusters": []})
