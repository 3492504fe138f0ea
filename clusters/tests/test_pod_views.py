"""The pods page reads one page from the index: pages, filters, the htmx partial."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from clusters import snapshot

from .factories import make_cluster

pytestmark = pytest.mark.django_db


@pytest.fixture
def cluster():
    cluster = make_cluster(
        auth_mode="token", api_server="http://127.0.0.1:9", token="t"
    )
    pods: dict[str, dict | None] = {}
    for i in range(230):
        ns = ("a", "b", "c")[i % 3]
        pods[f"{ns}/p{i:03d}"] = {
            "name": f"p{i:03d}",
            "namespace": ns,
            "phase": "Pending" if i % 10 == 0 else "Running",
            "node": f"n{i % 2}",
            "owner": f"ReplicaSet/Web-{i % 7}",
            "ready": "1/1",
            "restarts": 0,
        }
    snapshot.write_objects(cluster.pk, "pods", pods)
    snapshot.client().hset(
        snapshot.state_key(cluster.pk), mapping={"stale": "0", "reachable": "1"}
    )
    return cluster


def keys_in(response) -> list[str]:
    return re.findall(r'<tr data-key="([^"]+)"', response.content.decode())


def test_pages_are_cut_from_the_sorted_keys(client, victor, cluster):
    client.force_login(victor)
    url = reverse("clusters:pods", args=[cluster.pk])
    first = client.get(url)
    all_keys = sorted(snapshot.read_objects(cluster.pk, "pods"))
    assert keys_in(first) == all_keys[:100]
    assert b"230</span> of 230 pods" in first.content
    third = client.get(url, {"page": "3"})
    assert keys_in(third) == all_keys[200:]
    # Past the end (or nonsense): the last page, or the first.
    assert keys_in(client.get(url, {"page": "99"})) == all_keys[200:]
    assert keys_in(client.get(url, {"page": "x"})) == all_keys[:100]


def test_filters_combine_and_count_on_the_server(client, victor, cluster):
    client.force_login(victor)
    url = reverse("clusters:pods", args=[cluster.pk])
    objects = snapshot.read_objects(cluster.pk, "pods")
    response = client.get(
        url, {"namespace": "b", "phase": "Pending", "node": "n0", "q": "web-2"}
    )
    want = sorted(
        k
        for k, o in objects.items()
        if k.startswith("b/")
        and o["phase"] == "Pending"
        and o["node"] == "n0"
        and "web-2" in o["owner"].lower()
    )
    assert want and keys_in(response) == want
    assert f"{len(want)}</span> of 230 pods".encode() in response.content
    assert b"<option selected>b</option>" in response.content


def test_paging_with_htmx_renders_only_the_table(client, victor, cluster):
    client.force_login(victor)
    url = reverse("clusters:pods", args=[cluster.pk])
    response = client.get(
        url, {"page": "2"}, headers={"HX-Request": "true", "HX-Target": "pod-table"}
    )
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="pod-table">')
    assert 'class="tabs"' not in body and "<html" not in body
    assert len(keys_in(response)) == 100


def test_rows_carry_no_forms_and_the_actions_template_follows_the_role(
    client, victor, olivia, cluster
):
    url = reverse("clusters:pods", args=[cluster.pk])
    client.force_login(olivia)
    page = client.get(url).content.decode()
    table = page[page.index('<div id="pod-table">') : page.index("<template")]
    assert "<form" not in table and "csrfmiddlewaretoken" not in table
    assert "delete-pod" in page[page.index("<template") :]
    client.force_login(victor)
    assert b"delete-pod" not in client.get(url).content


def test_rows_escape_what_the_cluster_sent(client, victor, cluster):
    snapshot.write_objects(
        cluster.pk,
        "pods",
        {
            "a/0-odd": {
                "name": "0-odd",
                "namespace": "a",
                "phase": "Pending",
                "reason": 'Err"<img>',
                "owner": "Job/<script>x</script>",
                "created": "2026-01-01T00:00:00Z",
                "usage": None,
            }
        },
    )
    client.force_login(victor)
    body = client.get(reverse("clusters:pods", args=[cluster.pk])).content.decode()
    row = body[body.index('<tr data-key="a/0-odd">') :].split("</tr>", 1)[0]
    assert "<script>" not in row and "&lt;script&gt;x&lt;/script&gt;" in row
    assert "Err&quot;&lt;img&gt;" in row
    assert f'href="/clusters/{cluster.pk}/yaml/pods/a/0-odd/"' in row
    assert '<time data-relative datetime="2026-01-01T00:00:00Z">' in row
