"""Serve a demo cluster: ``python -m clusters.fakekube --port 8001 --populate small``."""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import threading

from .server import FakeKubeServer

SIZES = {
    "none": {"nodes": 0, "pods": 0, "namespaces": 0, "deployments": 0},
    "small": {"nodes": 3, "pods": 12, "namespaces": 2, "deployments": 4},
    "medium": {"nodes": 50, "pods": 1000, "namespaces": 10, "deployments": 50},
    "large": {"nodes": 500, "pods": 10000, "namespaces": 20, "deployments": 200},
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m clusters.fakekube")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--token", default="test-token")
    p.add_argument(
        "--plain-http",
        action="store_true",
        help="serve http:// (kubectl/client-go then will not send the bearer token)",
    )
    p.add_argument("--metrics", action="store_true", help="serve metrics.k8s.io")
    p.add_argument("--populate", choices=sorted(SIZES), default="small")
    p.add_argument("--no-controllers", action="store_true")
    p.add_argument("--churn", type=float, default=0.0, help="pod changes per second")
    p.add_argument("--kubeconfig", default=None, help="where to write the kubeconfig")
    args = p.parse_args(argv)

    srv = FakeKubeServer(
        args.token,
        host=args.host,
        port=args.port,
        tls=not args.plain_http,
        metrics=args.metrics,
    )
    srv.start()
    srv.populate(**SIZES[args.populate])
    if args.metrics:
        for n in srv.store.list("nodes"):
            srv.set_node_usage(n["metadata"]["name"], "250m", "1Gi")
    if not args.no_controllers:
        srv.simulate_controllers(True)
    if args.churn:
        srv.churn(args.churn, duration=10**9)
    path = args.kubeconfig or os.path.join(
        tempfile.gettempdir(), f"fakekube-{srv.port}.yaml"
    )
    srv.write_kubeconfig(path)
    print(f"fakekube serving {srv.url} ({args.populate} cluster)", flush=True)
    print(f"kubeconfig: {path}", flush=True)
    print(f"  KUBECONFIG={path} kubectl get pods -A", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    srv.stop()


if __name__ == "__main__":
    main()
