"""gunicorn settings for the `web` process (Procfile). Read from the environment by gunicorn itself."""

import os

from meetbridge.logs import logging_dict

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
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
