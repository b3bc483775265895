"""gunicorn settings for the `web` process (Procfile). Read from the environment by gunicorn itself."""

import os

from meetbridge.config import MAX_WEBHOOK_BODY_BYTES
from meetbridge.logs import logging_dict


def _address(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# BIND and PORT as the contract names them; METRICS_PORT (when set) serves /metrics on localhost alone.
bind = [_address(os.environ.get("BIND", "").strip() or "0.0.0.0", os.environ.get("PORT", "").strip() or "8000")]
if os.environ.get("METRICS_PORT", "").strip():
    bind.append(_address("127.0.0.1", os.environ["METRICS_PORT"].strip()))
# Threads absorb slow clients; processes use the cores. WEB_CONCURRENCY is gunicorn's own knob.
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "8"))
timeout = 30
graceful_timeout = 20
keepalive = 5
# gunicorn's control socket is not used, and its default path is shared by every gunicorn of the same user.
control_socket_disable = True
# Access log lines go through the same redaction as every other line (the webhook URL carries ?token=).
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
logconfig_dict = logging_dict(os.environ.get("LOG_LEVEL", "INFO").upper(), os.environ.get("LOG_FORMAT", "json"))


def pre_request(worker, req):
    """A request whose body is answered unread must close its connection.

    After an answer, gunicorn drains at most 64 KiB of an unread body and then closes the connection, although
    the answer said `Connection: keep-alive`: a client (a proxy's upstream pool) that sends its next request on
    it gets no answer. `Connection: close` must therefore be decided before the answer goes out, and a header
    set by the app cannot do it (hop-by-hop: gunicorn drops it); the request's own close flag does.
    """
    worker.log.debug("%s %s", req.method, req.path)
    body = getattr(req, "body", None)
    if body is None:
        return
    # No endpoint reads a declared body over the limit (werkzeug refuses it: MAX_CONTENT_LENGTH).
    declared = next((value for name, value in req.headers if name == "CONTENT-LENGTH"), "")
    if declared.isdigit() and int(declared) > MAX_WEBHOOK_BODY_BYTES:
        req.force_close()
    # For what only the app knows (it stopped reading a chunked body): see webhooks/meetergo.py.
    body.meetbridge_close_connection = req.force_close
