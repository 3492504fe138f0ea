"""fakekube: an in-memory fake Kubernetes API server for tests and benchmarks.

Real HTTP(S) on 127.0.0.1, reached through the official ``kubernetes`` and
``kubernetes_asyncio`` clients. See :class:`FakeKubeServer`.
"""

from .server import FakeKubeServer, RecordedRequest
from .store import ApiError, Event, Store

__all__ = ["ApiError", "Event", "FakeKubeServer", "RecordedRequest", "Store"]
