"""Real local alert receivers: an SMTP server (aiosmtpd) and an HTTP server taking Slack-style JSON POSTs."""

from __future__ import annotations

import email
import email.policy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from tests.api_server import free_port


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        parts = [p.get_content() for p in message.walk() if p.get_content_type() in ("text/html", "text/plain")]
        self.messages.append(
            {
                "from": envelope.mail_from,
                "to": list(envelope.rcpt_tos),
                "subject": str(message["subject"]),
                "event": str(message["X-Pipeline-Alert"]),
                "body": "\n".join(parts),
            }
        )
        return "250 Message accepted for delivery"


class AlertReceivers:
    """Start both receivers; `mail` and `posts` collect what arrived; `env` and `config` point the pipeline at them."""

    def __init__(self) -> None:
        self.mailbox = _Mailbox()
        self.smtp = Controller(self.mailbox, hostname="127.0.0.1", port=free_port())
        self.posts: list[dict[str, Any]] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                posts.append(
                    {"path": self.path, "content_type": self.headers.get("content-type"), "json": json.loads(body)}
                )
                self.send_response(200)
                self.send_header("content-type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")  # what Slack answers

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self._thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    def __enter__(self) -> AlertReceivers:
        self.smtp.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.smtp.stop()
        self.http.shutdown()

    @property
    def mail(self) -> list[dict[str, Any]]:
        return self.mailbox.messages

    @property
    def env(self) -> dict[str, str]:
        smtp = {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": self.smtp.port,
            "extra": {"disable_tls": True, "disable_ssl": True, "retry_limit": 0, "timeout": 10},
        }
        hook = {
            "conn_type": "slackwebhook",
            "host": f"http://127.0.0.1:{self.http.server_port}",
            "password": "T000/B000/alerts",
        }
        return {"AIRFLOW_CONN_SMTP_ALERTS": json.dumps(smtp), "AIRFLOW_CONN_ALERTS_WEBHOOK": json.dumps(hook)}

    config = {
        "base_url": "https://airflow.example.test",
        "email": {"conn_id": "smtp_alerts", "to": ["ml-oncall@example.test"], "from_email": "airflow@example.test"},
        "webhook": {"conn_id": "alerts_webhook"},
    }

    def by_event(self) -> dict[str, list[dict[str, Any]]]:
        """Return {event: [{"mail": ..., "post": ...}]}, pairing each email with the webhook post of the same text."""
        out: dict[str, list[dict[str, Any]]] = {}
        for mail in self.mail:
            out.setdefault(mail["event"], []).append(mail)
        return out


class LineageReceiver:
    """A local OpenLineage HTTP endpoint (what Marquez serves at /api/v1/lineage): `events` collects what arrived."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        events = self.events

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                events.append(json.loads(body))
                self.send_response(201)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self._thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    def __enter__(self) -> LineageReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.shutdown()

    @property
    def env(self) -> dict[str, str]:
        """Airflow's OpenLineage provider configured to send every event here, at once."""
        transport = {"type": "http", "url": f"http://127.0.0.1:{self.http.server_port}", "endpoint": "api/v1/lineage"}
        return {
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "nightly-ml",
        }
