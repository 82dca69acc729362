"""Webhooks: a job's end told to the URL its submitter gave, signed per Standard Webhooks.

``POST /jobs?webhook=https://...`` (either form). The URL is checked at submission and again
before each delivery: https only, and every address its host resolves to must be a public one
(no loopback, private, link-local or reserved address: the service must not be a way into the
network it runs in) unless ``TOONIFY_WEBHOOK_ALLOW_PRIVATE`` says otherwise. Redirects are not
followed.

Each delivery is a JSON POST ``{"type": "job.done" | "job.failed", "timestamp", "data": status}``
with the ``webhook-id`` (the same for every attempt: receivers drop duplicates by it),
``webhook-timestamp`` and ``webhook-signature`` headers of https://www.standardwebhooks.com,
signed with ``TOONIFY_WEBHOOK_SECRET`` by the ``standardwebhooks`` library; receivers verify it
with the same library and secret. A 2xx ends it; otherwise it is tried again after about 2, 10
and 30 seconds (tenacity's exponential wait, with a second of jitter so that receivers coming
back are not hit by every instance at once), then given up (``toonify_webhooks_total{outcome}``).
Delivery is from the instance that finished the job; if that instance stops meanwhile, the
webhook is not sent (the result still waits at its URL).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import ssl
from datetime import UTC, datetime
from urllib.parse import unquote_to_bytes, urlsplit

import httpx
from standardwebhooks import Webhook
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from .. import metrics
from ..errors import BadOption
from ..settings import Settings

logger = logging.getLogger("toonify.webhooks")
# Four attempts: at once, then after about 2, 10 and 30 s.
RETRIES = {
    "stop": stop_after_attempt(4),
    "wait": wait_exponential_jitter(multiplier=2, exp_base=5, max=30, jitter=1),
}


class NotDelivered(Exception):
    """The receiver did not take a webhook: an error status, no answer, or a host that now
    resolves to an address it may not have."""


MAX_URL_BYTES = 1024


def split_webhook(query: bytes) -> tuple[str | None, bytes]:
    """The ``webhook`` parameter of a job submission's query (None if not given), and the query
    without it (what ``/toonify`` takes). At most one."""
    found, kept = [], []
    for piece in query.split(b"&") if query else []:
        name, _, value = piece.partition(b"=")
        if name == b"webhook":
            found.append(value)
        else:
            kept.append(piece)
    if len(found) > 1:
        raise BadOption("webhook: given twice; give one URL.")
    if not found:
        return None, query
    url = unquote_to_bytes(found[0].replace(b"+", b" ")).decode("utf-8", "replace")
    return url, b"&".join(kept)


# IPv6 forms that carry an IPv4 address in their low 32 bits (RFC 4291 IPv4-compatible,
# RFC 2765 IPv4-translated, RFC 6052 NAT64 and RFC 8215 local-use NAT64): on a host with such a
# translator they reach that IPv4 address, so it is what must be public.
EMBEDDED_IPV4 = tuple(
    ipaddress.ip_network(net)
    for net in ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48")
)


def is_public_unicast(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """An address on the public internet that names one host: not loopback, private,
    link-local, reserved or multicast, also when wrapped in an IPv6 form that a translator
    unwraps (Python's ``is_global`` says True for ``::7f00:1`` and ``224.0.0.1``)."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour
        if inner is None and any(address in net for net in EMBEDDED_IPV4):
            inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if inner is not None:
            return is_public_unicast(inner)
    return address.is_global and not address.is_multicast


class WebhookSender:
    def __init__(self, settings: Settings) -> None:
        self.allow_private = settings.webhook_allow_private
        secret = settings.webhook_secret
        self.signer = Webhook(secret.get_secret_value()) if secret else None
        verify: ssl.SSLContext | bool = True
        if settings.webhook_ca_file:  # an internal CA the receivers' certificates come from
            verify = ssl.create_default_context(cafile=str(settings.webhook_ca_file))
        self.client = httpx.AsyncClient(verify=verify, timeout=10.0, follow_redirects=False)
        self._sending: set[asyncio.Task] = set()

    async def check(self, url: str) -> str:
        """``url`` if a webhook may be sent to it; BadOption (400) saying why not."""
        if self.signer is None:
            raise BadOption("webhook: this server sends no webhooks (TOONIFY_WEBHOOK_SECRET).")
        if len(url.encode()) > MAX_URL_BYTES:
            raise BadOption(f"webhook: a URL of at most {MAX_URL_BYTES} bytes.")
        try:
            parts = urlsplit(url)
            port = parts.port or 443
        except ValueError:
            raise BadOption("webhook: not a URL; give an https:// URL.") from None
        if parts.scheme != "https" or not parts.hostname or parts.username or parts.password:
            raise BadOption("webhook: give an https:// URL with a host (and no user or password).")
        try:
            found = await asyncio.get_running_loop().getaddrinfo(
                parts.hostname, port, type=socket.SOCK_STREAM
            )
        except (OSError, UnicodeError):
            raise BadOption(f"webhook: the host {parts.hostname} cannot be resolved.") from None
        addresses = {ipaddress.ip_address(info[4][0].split("%")[0]) for info in found}
        if not self.allow_private and not all(map(is_public_unicast, addresses)):
            raise BadOption(
                f"webhook: {parts.hostname} is a private, loopback or reserved address; give a "
                "public https:// URL."
            )
        return url

    def send_later(self, url: str, job_id: str, status: dict) -> None:
        """Deliver in the background: the job's slot is not held while a receiver is slow."""
        task = asyncio.create_task(self.deliver(url, job_id, status))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def deliver(self, url: str, job_id: str, status: dict) -> bool:
        """The job's end told to ``url``, tried again as ``RETRIES`` says; True once delivered."""
        retrying = AsyncRetrying(retry=retry_if_exception_type(NotDelivered), **RETRIES)
        try:
            async for attempt in retrying:
                with attempt:
                    await self._send(url, job_id, status, attempt.retry_state.attempt_number)
        except RetryError:
            metrics.webhooks.labels("given_up").inc()
            return False
        metrics.webhooks.labels("delivered").inc()
        return True

    async def _send(self, url: str, job_id: str, status: dict, attempt: int) -> None:
        assert self.signer is not None
        event = "job.done" if status["status"] == "done" else "job.failed"
        message_id = f"msg_{job_id}"  # the same for every attempt: receivers drop duplicates
        now = datetime.now(UTC)
        body = json.dumps({"type": event, "timestamp": now.isoformat(), "data": status})
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self.signer.sign(message_id, now, body),
        }
        try:
            await self.check(url)  # again: what the name resolves to may have changed
            answer = await self.client.post(url, content=body, headers=headers)
        except (httpx.HTTPError, BadOption) as exc:
            logger.info("webhook for job %s failed (attempt %d): %r", job_id, attempt, exc)
            raise NotDelivered() from exc
        if not answer.is_success:
            logger.info("webhook for job %s: %d (attempt %d)", job_id, answer.status_code, attempt)
            raise NotDelivered()

    async def close(self) -> None:
        for task in list(self._sending):
            task.cancel()
        await self.client.aclose()
