"""Who may scrape /metrics (``portal.scrape``): off without settings, a network list, a
bearer token; and the metric labels stay bounded whatever an event carries."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from gateway import metrics
from gateway.audit import AuditEvent
from gateway.settings import PortalSettings
from portal.scrape import Scrape, scrape_decision

TOKEN = "a-scrape-token-of-some-length"


@pytest.mark.parametrize(
    ("settings", "client", "auth", "expected"),
    [
        ({}, "127.0.0.1", None, Scrape.OFF),
        ({}, "127.0.0.1", f"Bearer {TOKEN}", Scrape.OFF),
        ({"metrics_networks": ["10.0.5.0/24"]}, "10.0.5.7", None, Scrape.ALLOWED),
        ({"metrics_networks": ["10.0.5.0/24"]}, "::ffff:10.0.5.7", None, Scrape.ALLOWED),
        ({"metrics_networks": ["10.0.5.0/24"]}, "10.0.6.7", None, Scrape.REFUSED),
        ({"metrics_networks": ["10.0.5.0/24"]}, "testclient", None, Scrape.REFUSED),
        ({"metrics_networks": ["fd00::/8"]}, "fd00::5", None, Scrape.ALLOWED),
        ({"metrics_token": TOKEN}, "203.0.113.9", f"Bearer {TOKEN}", Scrape.ALLOWED),
        ({"metrics_token": TOKEN}, "203.0.113.9", f"bearer {TOKEN}", Scrape.ALLOWED),
        ({"metrics_token": TOKEN}, "203.0.113.9", f"Bearer {TOKEN}x", Scrape.REFUSED),
        ({"metrics_token": TOKEN}, "203.0.113.9", TOKEN, Scrape.REFUSED),
        ({"metrics_token": TOKEN}, "203.0.113.9", f"Basic {TOKEN}", Scrape.REFUSED),
        ({"metrics_token": TOKEN}, "127.0.0.1", None, Scrape.REFUSED),
    ],
)
def test_scrape_decision(
    settings: dict[str, object], client: str, auth: str | None, expected: Scrape
) -> None:
    assert scrape_decision(PortalSettings(**settings), client, auth) is expected  # type: ignore[arg-type]


def test_bad_settings_are_refused_at_load() -> None:
    with pytest.raises(ValidationError):
        PortalSettings(metrics_networks=["10.0.0.0/33"])
    with pytest.raises(ValidationError, match="at least 16"):
        PortalSettings(metrics_token=SecretStr("short"))


def test_labels_from_events_stay_bounded() -> None:
    def value(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    before = value("ztbridge_login_failures_total", reason="other")
    metrics.observe(AuditEvent("login.failed", "a", "b", "denied", {"reason": "x" * 500}))
    assert value("ztbridge_login_failures_total", reason="other") == before + 1
    before = value("ztbridge_associations_refused_total", check="other")
    metrics.observe(AuditEvent("association.refused", "a", "", "refused", {"check": "A B\n"}))
    assert value("ztbridge_associations_refused_total", check="other") == before + 1
    before = value("ztbridge_instances_refused_total", reason="out-of-resources")
    metrics.observe(AuditEvent("instance.refused", "a", "", "refused", {"status": "0xA700"}))
    assert value("ztbridge_instances_refused_total", reason="out-of-resources") == before + 1
