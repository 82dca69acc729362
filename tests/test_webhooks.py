"""Webhooks when a job ends (toonify/jobs/webhooks.py): which URLs are taken, the signature a
receiver verifies with the Standard Webhooks library, and delivery from a served instance to a
real https receiver."""

from __future__ import annotations

import asyncio
import io
import json
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest
from standardwebhooks import Webhook

from toonify.errors import BadOption
from toonify.jobs.webhooks import WebhookSender, split_webhook
from toonify.settings import Settings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_the_webhook_is_taken_out_of_the_query_once():
    url, rest = split_webhook(
        b"size=256&webhook=https%3A%2F%2Fexample.org%2Fhook%3Fa%3D1&format=png"
    )
    assert url == "https://example.org/hook?a=1" and rest == b"size=256&format=png"
    assert split_webhook(b"size=256") == (None, b"size=256")
    assert split_webhook(b"webhook=&size=256") == ("", b"size=256")  # given empty: checked
    with pytest.raises(BadOption, match="twice"):
        split_webhook(b"webhook=https://a.example&webhook=https://b.example")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://93.184.216.34/hook", "https://"),
        ("https://user:secret@93.184.216.34/hook", "no user"),
        ("https:///hook", "https://"),
        ("", "https://"),
        ("https://127.0.0.1/hook", "private, loopback"),
        ("https://localhost:8443/hook", "private, loopback"),
        ("https://10.1.2.3/hook", "private, loopback"),
        ("https://169.254.169.254/latest/meta-data", "private, loopback"),  # cloud metadata
        ("https://[::1]/hook", "private, loopback"),
        ("https://[::ffff:127.0.0.1]/hook", "private, loopback"),
        ("https://[::7f00:1]/hook", "private, loopback"),  # IPv4-compatible
        ("https://[::127.0.0.1]/hook", "private, loopback"),
        ("https://[::ffff:0:7f00:1]/hook", "private, loopback"),  # IPv4-translated
        ("https://[64:ff9b::7f00:1]/hook", "private, loopback"),  # NAT64
        ("https://[64:ff9b::a9fe:a9fe]/hook", "private, loopback"),  # NAT64 to the metadata
        ("https://[64:ff9b:1::a01:203]/hook", "private, loopback"),  # local-use NAT64
        ("https://[2002:7f00:1::]/hook", "private, loopback"),  # 6to4
        ("https://[2002:a01:203::1]/hook", "private, loopback"),  # 6to4 to 10.1.2.3
        ("https://224.0.0.1/hook", "private, loopback"),  # multicast
        ("https://[ff0e::1]/hook", "private, loopback"),
        ("https://93.184.216.34:99999/hook", "not a URL"),
        ("https://93.184.216.34/" + "a" * 1100, "at most"),
    ],
)
def test_urls_a_webhook_may_not_go_to_are_a_400_saying_why(url, why):
    sender = WebhookSender(Settings(webhook_secret=SECRET))
    with pytest.raises(BadOption, match=why) as refused:
        asyncio.run(sender.check(url))
    assert refused.value.status == 400 and refused.value.code == "bad_option"


def test_public_urls_are_taken_and_private_ones_only_where_allowed():
    public = WebhookSender(Settings(webhook_secret=SECRET))
    assert asyncio.run(public.check("https://93.184.216.34/hook")) == "https://93.184.216.34/hook"
    for wrapped in ("[64:ff9b::5db8:d822]", "[2002:5db8:d822::1]", "[2606:4700::1111]"):
        assert asyncio.run(public.check(f"https://{wrapped}/hook"))  # public inside: taken
    private = WebhookSender(Settings(webhook_secret=SECRET, webhook_allow_private=True))
    assert asyncio.run(private.check("https://127.0.0.1:8443/hook"))
    with pytest.raises(BadOption, match="no webhooks"):  # no secret: no webhooks at all
        asyncio.run(WebhookSender(Settings()).check("https://93.184.216.34/hook"))


# --- delivered by a served instance to a real https receiver ----------------------------------


class Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict, bytes]]] = []
    answers: ClassVar[list[int]] = []  # statuses to answer, in turn; then 204

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        status = type(self).answers.pop(0) if type(self).answers else 204
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def https_receiver(tmp_path):
    """An https server on 127.0.0.1 with a self-signed certificate: its URL and the CA file."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    Receiver.received, Receiver.answers = [], []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}/hook", str(cert)
    server.shutdown()


def test_a_served_job_tells_its_webhook_signed_and_once_delivered(
    serve, default_models, astronaut, https_receiver, tmp_path
):
    url, ca_file = https_receiver
    server = serve(
        queue_dir=str(tmp_path / "queue"),
        webhook_secret=SECRET,
        webhook_allow_private="true",
        webhook_ca_file=ca_file,
    )
    Receiver.answers = [500]  # the first attempt fails: the webhook is sent again
    photo = io.BytesIO()
    astronaut.save(photo, "JPEG")
    with httpx.Client(base_url=server.url, timeout=60) as client:
        job = client.post("/jobs/raw", params={"webhook": url}, content=photo.getvalue())
        assert job.status_code == 202, job.text
        job = job.json()
        ends = time.monotonic() + 60
        while len(Receiver.received) < 2:
            assert time.monotonic() < ends, Receiver.received
            time.sleep(0.1)  # the receiver's arrivals, polled
        status = client.get(job["status_url"]).json()
        result = client.get(job["result_url"])
        # Where private addresses are allowed, https is still required.
        refused = client.post("/jobs/raw", params={"webhook": "http://x"}, content=b"")
    assert refused.status_code == 400 and refused.json()["error"] == "bad_option"
    assert status["status"] == "done" and result.status_code == 200
    (first_headers, _), (headers, body) = Receiver.received
    assert first_headers["webhook-id"] == headers["webhook-id"] == f"msg_{job['id']}"
    event = Webhook(SECRET).verify(body, headers)  # raises unless the signature holds
    assert event["type"] == "job.done" and event["data"]["id"] == job["id"]
    assert event["data"]["status"] == "done" and event["data"]["result_url"] == job["result_url"]
    with pytest.raises(Exception, match="signature"):
        Webhook("whsec_" + "A" * 32).verify(body, headers)  # another secret: not ours
    assert json.loads(body)["data"]["level"] == "full"


def test_a_receiver_that_keeps_failing_is_tried_four_times_then_given_up(
    https_receiver, monkeypatch
):
    """Four attempts with the same webhook-id, each signed anew, then given up; a receiver that
    takes the second attempt ends it there."""
    from tenacity import wait_none

    from toonify.jobs import webhooks

    url, ca_file = https_receiver
    monkeypatch.setitem(webhooks.RETRIES, "wait", wait_none())  # the schedule's waits: none
    settings = Settings(webhook_secret=SECRET, webhook_allow_private=True, webhook_ca_file=ca_file)
    status = {"id": "job-1", "status": "done"}

    async def deliver() -> bool:
        sender = WebhookSender(settings)
        try:
            return await sender.deliver(url, "job-1", status)
        finally:
            await sender.close()

    Receiver.answers = [500] * 10
    assert asyncio.run(deliver()) is False
    assert len(Receiver.received) == 4
    assert {headers["webhook-id"] for headers, _ in Receiver.received} == {"msg_job-1"}
    Receiver.received, Receiver.answers = [], [503]
    assert asyncio.run(deliver()) is True and len(Receiver.received) == 2
