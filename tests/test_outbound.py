"""Outbound calls (callbacks, connector base URLs) reach public addresses only, resolved once and pinned.

No test here sends traffic off this machine: every connection goes through a guard that lets
only loopback through, and public names are answered by a fake resolver.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl

import pytest
from django.utils import timezone
from pytest_httpserver import HTTPServer

from approvals import events
from approvals.models import CallbackDelivery, Proposal
from connectors import outbound
from connectors.adapters.base import PermanentError, Target
from connectors.adapters.rest import RestAdapter
from tests.conftest import proposal_body

URL = "/api/v1/proposals/"
PUBLIC = "93.184.215.14"  # a public address; only ever connected to through the guard below
REAL_GETADDRINFO = socket.getaddrinfo


@pytest.fixture(autouse=True)
def connections(monkeypatch) -> list[tuple[str, int]]:
    """Every address a connection is opened to; anything but loopback fails the test instead of leaving the machine."""
    opened: list[tuple[str, int]] = []
    real_connect = outbound._connect

    def guard(address, *args, **kwargs):
        opened.append(address)
        assert ipaddress.ip_address(address[0]).is_loopback, f"a test tried to connect to {address}"
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(outbound, "_connect", guard)
    return opened


@pytest.fixture
def dns(monkeypatch) -> dict[str, list[list[str]]]:
    """A fake resolver: name -> successive answers (the last repeats). Other names resolve for real (literals, localhost)."""
    answers: dict[str, list[list[str]]] = {}
    asked: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return REAL_GETADDRINFO(host, port, *args, **kwargs)
        asked.append(host)
        queue = answers[host]
        addresses = queue.pop(0) if len(queue) > 1 else queue[0]
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    answers["asked"] = asked  # type: ignore[assignment]
    return answers


@pytest.fixture
def matrix(demo_matrix):
    return demo_matrix


# ---- the address policy ----------------------------------------------------------------------

@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "::", "fd00::1", "fe80::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "fec0::1",
])
def test_non_public_addresses_are_refused(settings, address):
    settings.OUTBOUND_ALLOWLIST = ""
    assert outbound.address_problem(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", [PUBLIC, "1.1.1.1", "2606:4700:4700::1111", "::ffff:93.184.215.14"])
def test_public_addresses_are_allowed(settings, address):
    settings.OUTBOUND_ALLOWLIST = ""
    assert outbound.address_problem(ipaddress.ip_address(address)) == ""


def test_the_allowlist_admits_addresses_networks_and_names(settings, dns):
    settings.OUTBOUND_ALLOWLIST = "10.1.0.0/16, 127.0.0.1 ,billing.internal"
    dns["billing.internal"] = [["192.168.7.7"]]

    assert outbound.address_problem(ipaddress.ip_address("10.1.2.3")) == ""
    assert outbound.address_problem(ipaddress.ip_address("::ffff:127.0.0.1")) == ""
    assert outbound.address_problem(ipaddress.ip_address("10.2.0.1"))
    assert outbound.check_url("https://billing.internal/api") == ["192.168.7.7"]


def test_a_name_is_refused_if_any_of_its_addresses_is_not_public(settings, dns):
    settings.OUTBOUND_ALLOWLIST = ""
    dns["mixed.example"] = [[PUBLIC, "127.0.0.1"]]

    with pytest.raises(outbound.OutboundRefused, match="127.0.0.1, a loopback address"):
        outbound.check_url("https://mixed.example/hook")


# ---- callback_url at submission ----------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "https://127.0.0.1/hook", "http://127.0.0.1:8080/hook", "https://10.0.0.1/hook", "https://169.254.169.254/latest/meta-data",
    "https://[::1]/hook", "http://localhost/hook", "https://internal.example/hook", "https://[::ffff:10.0.0.1]/hook",
    "https://0.0.0.0/hook",
])
def test_a_callback_url_to_a_non_public_address_is_refused_at_submission(api, matrix, settings, dns, url):
    settings.OUTBOUND_ALLOWLIST = ""
    dns["internal.example"] = [["127.0.0.1"]]

    response = api.post(URL, proposal_body(callback_url=url), format="json")

    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["callback_url"]
    assert "public addresses only" in response.json()["errors"]["callback_url"][0]
    assert Proposal.objects.count() == 0


def test_an_unresolvable_callback_host_is_refused(api, matrix, settings, monkeypatch):
    settings.OUTBOUND_ALLOWLIST = ""

    def no_such_host(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    response = api.post(URL, proposal_body(callback_url="https://nowhere.invalid/hook"), format="json")

    assert response.status_code == 400
    assert "cannot be resolved" in response.json()["errors"]["callback_url"][0]


@pytest.mark.parametrize("url", ["https://127.0.0.1/hook", "http://localhost:8080/hook", "https://[::1]/hook"])
def test_a_listed_local_callback_url_is_accepted(api, matrix, settings, url):
    settings.OUTBOUND_ALLOWLIST = "127.0.0.1,localhost,::1"

    response = api.post(URL, proposal_body(callback_url=url), format="json")

    assert response.status_code == 201, response.json()


def test_a_public_callback_url_is_accepted(api, matrix, settings, dns):
    settings.OUTBOUND_ALLOWLIST = ""
    dns["agent.example"] = [[PUBLIC]]

    response = api.post(URL, proposal_body(callback_url="https://agent.example/hooks/hitl"), format="json")

    assert response.status_code == 201, response.json()


# ---- at delivery and connection time -----------------------------------------------------------

def test_a_stored_callback_to_a_loopback_address_is_refused_at_delivery(api, matrix, settings, httpserver: HTTPServer,
                                                                      connections):
    """Stored while loopback was allowed (or by another writer): the delivery checks again and calls nothing."""
    body = proposal_body(callback_url=httpserver.url_for("/hook"))
    assert api.post(URL, body, format="json").status_code == 201
    settings.OUTBOUND_ALLOWLIST = ""
    delivery = CallbackDelivery.objects.create(
        proposal=Proposal.objects.get(), event="proposal.decided", url=httpserver.url_for("/hook"), payload={"x": 1},
        next_attempt_at=timezone.now(),
    )

    events.deliver(delivery.pk)

    delivery.refresh_from_db()
    assert "loopback" in delivery.last_error and delivery.last_status is None
    assert connections == [] and httpserver.log == []


def test_a_connector_base_url_at_the_metadata_address_is_refused_before_connecting(settings, connections):
    settings.OUTBOUND_ALLOWLIST = ""
    adapter = RestAdapter({"base_url": "http://169.254.169.254/latest"}, {})

    with pytest.raises(PermanentError, match="169.254.169.254, a link-local address"):
        adapter.read(Target("meta-data", "iam"))
    assert connections == []


def test_dns_rebinding_cannot_swap_the_checked_address(settings, dns, connections, monkeypatch, httpserver: HTTPServer):
    """The name answers public first and loopback second: the one resolution is checked and connected to.

    The guard routes the connection to the checked public address onto the local server, which
    shows the request arrived with its own Host header and went nowhere else.
    """
    settings.OUTBOUND_ALLOWLIST = ""
    dns["rebind.example"] = [[PUBLIC], ["127.0.0.1"]]
    real_connect = socket.create_connection

    def to_local_server(address, *args, **kwargs):
        connections.append(address)
        assert address[0] == PUBLIC, f"connected to {address}, not the checked address"
        return real_connect(("127.0.0.1", httpserver.port), *args, **kwargs)

    monkeypatch.setattr(outbound, "_connect", to_local_server)
    httpserver.expect_request("/invoice/INV-1").respond_with_json({"status": "open"})
    adapter = RestAdapter({"base_url": f"http://rebind.example:{httpserver.port}"}, {})

    assert adapter.read(Target("invoice", "INV-1")) == {"status": "open"}
    assert connections == [(PUBLIC, httpserver.port)]
    assert dns["asked"] == ["rebind.example"]  # resolved once
    (request, _), = httpserver.log
    assert request.headers["Host"] == f"rebind.example:{httpserver.port}"


def test_https_keeps_the_name_for_sni_and_the_certificate_check(connections, monkeypatch):
    """The socket goes to the checked address; TLS is wrapped with the URL's name, not the address."""
    wrapped: list[str] = []
    left, right = socket.socketpair()
    monkeypatch.setattr(outbound, "_connect", lambda address, *a, **k: connections.append(address) or left)

    context = ssl.create_default_context()
    context.wrap_socket = lambda sock, server_hostname=None: wrapped.append(server_hostname) or sock

    connection = outbound.PinnedHTTPSConnection("api.vendor.example", addresses=[PUBLIC], context=context)
    connection.connect()

    assert connections == [(PUBLIC, 443)] and wrapped == ["api.vendor.example"]
    left.close(), right.close()
