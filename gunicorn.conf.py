"""gunicorn settings for serving CCDash in production (read from the working
directory by ``gunicorn ccdash.wsgi``; every value can be overridden on the
command line or with ``GUNICORN_CMD_ARGS``).

Why ``gthread``: the run page's live log is a Server-Sent Events stream that
stays open for minutes (``execution.api.stream``). A sync worker would be
held by one stream; a threaded worker holds one *thread* per open stream and
keeps serving other requests on the rest. ``timeout`` is the worker's
heartbeat, which a gthread worker's main loop keeps beating while streams are
open, so it does not cut streams short. Static files come from WhiteNoise in
the same process (no separate static server needed).
"""

from __future__ import annotations

import multiprocessing
import os

bind = os.environ.get("BIND", f"127.0.0.1:{os.environ.get('PORT', '8000')}")
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", str(max(2, multiprocessing.cpu_count()))))
# Each open run page holds one thread for its event stream.
threads = int(os.environ.get("WEB_THREADS", "16"))
timeout = 30
graceful_timeout = 10
keepalive = 5
# No access log unless asked for (GUNICORN_CMD_ARGS="--access-logfile -"):
# every open page's event stream would otherwise be a line per reconnect.
accesslog = os.environ.get("WEB_ACCESS_LOG") or None
errorlog = "-"
# gunicorn's control socket is one per-user path by default: two servers on
# one machine (tests, a second instance) would fight over it.
control_socket_disable = True
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
