"""The cluster socket: refuses strangers, sends the snapshot, then the diffs."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore

from clusters import events, snapshot

from .factories import make_cluster

pytestmark = pytest.mark.django_db(transaction=True)


def session_cookie(user) -> str:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


async def open_socket(server, path: str, user=None):
    headers = {"Origin": server.url}
    if user is not None:
        headers["Cookie"] = await sync_to_async(session_cookie)(user)
    return await websockets.connect(server.ws_url + path, additional_headers=headers)


async def close_code(ws) -> int:
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 5)
    return ws.close_code


async def test_anonymous_is_refused_with_4401(asgi_server):
    cluster = await sync_to_async(make_cluster)(auth_mode="token")
    ws = await open_socket(asgi_server, f"/ws/clusters/{cluster.pk}/")
    assert await close_code(ws) == 4401


async def test_user_without_role_is_refused_with_4403(asgi_server, charlie):
    cluster = await sync_to_async(make_cluster)(auth_mode="token")
    ws = await open_socket(asgi_server, f"/ws/clusters/{cluster.pk}/", charlie)
    assert await close_code(ws) == 4403


async def test_viewer_gets_snapshot_then_diffs_for_subscribed_kinds(
    asgi_server, victor
):
    cluster = await sync_to_async(make_cluster)(auth_mode="token")
    r = snapshot.client()
    r.hset(
        snapshot.objects_key(cluster.pk, "pods"), "demo/a", json.dumps({"name": "a"})
    )
    r.hset(snapshot.state_key(cluster.pk), mapping={"stale": "0", "reachable": "1"})
    ws = await open_socket(
        asgi_server, f"/ws/clusters/{cluster.pk}/?kinds=pods", victor
    )
    state = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert state["type"] == "state" and state["stale"] is False
    snap = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert snap == {
        "type": "snapshot",
        "kind": "pods",
        "objects": {"demo/a": {"name": "a"}},
    }

    layer = get_channel_layer()
    await events.publish_changes(
        layer,
        cluster.pk,
        [
            {"kind": "nodes", "op": "upsert", "key": "n1", "obj": {"name": "n1"}},
            {"kind": "pods", "op": "upsert", "key": "demo/b", "obj": {"name": "b"}},
        ],
        stale=False,
    )
    change = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert change["type"] == "change"
    assert [c["key"] for c in change["changes"]] == [
        "demo/b"
    ]  # Not subscribed to nodes.

    await ws.send(json.dumps({"subscribe": ["pods", "nodes"]}))
    # Newly subscribed kinds get their snapshot (after the state message).
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "state"
    nodes = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert nodes["type"] == "snapshot" and nodes["kind"] == "nodes"
    await ws.close()
