"""Pagination of ``GET runs``: limit/offset with a total ``count``.

Why not a cursor: the workbench shows "n runs" and jumps to a page, which a
cursor cannot do. The cost is that runs created while a client pages shift
later pages by that many rows (the list is newest first); a client that must
not miss a run filters on ``status`` or re-reads from ``offset=0``.

Page shape (DRF's): ``{"count", "next", "previous", "results"}``.
"""

from __future__ import annotations

from rest_framework.pagination import LimitOffsetPagination


class RunPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 500
