"""Who may scrape ``/metrics``: a configured address range, or the configured bearer token.

Why not ``gateway.access.decide``: a scrape is not a user acting on studies; it is a
monitoring system reading counters that name no study, user or address. Two settings in
``[portal]`` say who may: ``metrics_networks`` (CIDR list: the Prometheus servers) and
``metrics_token`` (a bearer token, for a scraper behind a NAT or a proxy). With neither set
the endpoint is off and answers 404 like any unknown path (nothing to discover); with one
set, any other request is a 403 problem document, so a misconfigured scraper is told why.
The token is compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
from enum import StrEnum
from ipaddress import ip_address, ip_network

from gateway.settings import PortalSettings


class Scrape(StrEnum):
    """The answer for one scrape request."""

    OFF = "off"  # neither setting: 404
    REFUSED = "refused"  # 403
    ALLOWED = "allowed"


def scrape_decision(s: PortalSettings, client: str | None, authorization: str | None) -> Scrape:
    """Whether a request from ``client`` (its address) with this Authorization header may
    read the metrics."""
    token = s.metrics_token.get_secret_value() if s.metrics_token is not None else None
    if not s.metrics_networks and token is None:
        return Scrape.OFF
    if token is not None and authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            return Scrape.ALLOWED
    if client and s.metrics_networks:
        try:
            address = ip_address(client)
        except ValueError:
            return Scrape.REFUSED
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        for cidr in s.metrics_networks:
            network = ip_network(cidr, strict=False)
            if address.version == network.version and address in network:
                return Scrape.ALLOWED
    return Scrape.REFUSED
