"""Keep the dev server's access log for people: the workbench's own live
requests (event streams, list refreshes, static files) are not logged when
they succeed, so ``make run``'s terminal shows what a person did."""

from __future__ import annotations

import logging
import re

# Paths the workbench requests by itself, again and again, while a page is open.
QUIET_PATHS = re.compile(
    r"^(/api/execution/runs/\d+/stream"
    r"|/api/execution/runs\?"
    r"|/api/execution/providers\?"
    r"|/api/execution/approvals/count"
    r"|[^ ]*[?&]fragment="
    r"|/static/"
    r"|/favicon\.ico)"
)


class QuietPollingFilter(logging.Filter):
    """Drop ``django.server`` records of successful repeated requests; errors
    (status ≥ 400) are always kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) < 2 or not isinstance(args[0], str):
            return True
        parts = args[0].split()
        path = parts[1] if len(parts) > 1 else ""
        try:
            status = int(str(args[1]))
        except ValueError:
            return True
        return not (status < 400 and QUIET_PATHS.match(path))
