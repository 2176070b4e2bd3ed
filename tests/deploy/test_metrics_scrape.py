"""deploy/ scrapes the workers' metrics on the port the worker serves them on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.deploy.conftest import COMPOSE
from tests.deploy.kube import render
from tests.deploy.test_compose import dotenv, interpolate

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "deploy" / "kubernetes"


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_the_compose_prometheus_scrapes_every_worker_on_its_metrics_port() -> None:
    compose: dict[str, Any] = interpolate(
        yaml.safe_load((COMPOSE / "compose.yaml").read_text()), dotenv(COMPOSE / ".env")
    )
    worker = compose["services"]["meshfleet-worker"]
    port = flag(worker["command"], "--metrics-port")
    assert port in worker["expose"]
    config = yaml.safe_load((COMPOSE / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["meshfleet-worker"]
    assert str(discovery["port"]) == port


def test_every_kubernetes_worker_pod_is_annotated_for_scraping_on_its_metrics_port() -> None:
    for directory in (KUBERNETES / "base", KUBERNETES / "overlays" / "kubernetes-backend"):
        (deployment,) = [o for o in render(directory) if o["kind"] == "Deployment"]
        template = deployment["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        (container,) = template["spec"]["containers"]
        port = flag(container["args"], "--metrics-port")
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == port
        assert annotations["prometheus.io/path"] == "/metrics"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == int(port), directory
