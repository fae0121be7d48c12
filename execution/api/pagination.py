"""Pagination of ``GET runs``: limit/offset with a total ``count``, plus a
keyset ``beforeId`` for "load more".

Why offset is kept: the workbench shows "n runs" and jumps to a page, which a
cursor alone cannot do. Runs created while a client pages shift later pages
by that many rows (the list is newest first); a client that must not miss or
repeat a run pages with ``beforeId=<last id it has>`` instead, which is stable.

Cost at 100,000 runs: the page is read in two steps — the ids of the page
from the ``(project, <filter>, -id)`` index (skipping ``offset`` index
entries, no table rows) in a subquery, and only those rows are read — so a
deep offset costs about what the first page does. Two queries (count and
page) for every page and filter. ``count`` is counted on the same index.

``count`` is exact up to ``EXACT_COUNT_LIMIT`` matching runs. Above that,
counting every matching index entry on each request was the largest cost
left (about 5 ms per 100,000 runs on SQLite), so a larger total is counted
once and kept for ``COUNT_CACHE_S`` seconds per server process, during which
the filter is not counted at all: a label such as "100,213 runs" may lag by a
few seconds; a page never does.

Page shape (DRF's): ``{"count", "next", "previous", "results"}``.
"""

from __future__ import annotations

import hashlib

from django.core.cache import cache
from rest_framework.pagination import LimitOffsetPagination

EXACT_COUNT_LIMIT = 10_000
COUNT_CACHE_S = 5.0


class RunPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 500

    def get_count(self, queryset) -> int:
        unordered = queryset.order_by()
        key = "run-count:" + hashlib.sha256(str(unordered.query).encode()).hexdigest()
        cached = cache.get(key)
        if cached is not None:
            # Only totals above the exact limit are kept: no count at all
            # for this request (counting 10,001 index entries was its cost).
            return cached
        seen = unordered[: EXACT_COUNT_LIMIT + 1].count()
        if seen <= EXACT_COUNT_LIMIT:
            return seen
        total = unordered.count()
        cache.set(key, total, COUNT_CACHE_S)
        return total

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.limit = self.get_limit(request)
        if self.limit is None:
            return None
        self.count = self.get_count(queryset)
        self.offset = self.get_offset(request)
        if self.count > self.limit and self.template is not None:
            self.display_page_controls = True
        if self.count == 0 or self.offset > self.count:
            return []
        # The page's ids come from the index alone (a subquery with its own
        # LIMIT/OFFSET); only those rows are read and joined.
        page_ids = queryset.order_by("-id").values("id")[self.offset : self.offset + self.limit]
        related = view.page_related() if view is not None and hasattr(view, "page_related") else ()
        return list(
            queryset.model.objects.filter(pk__in=page_ids).select_related(*related).order_by("-id")
        )
