"""Where every reconciler process shares token budgets: the database, or Redis.

Both keep, per (provider, token key), the observation ``Budget.newer_than``
prefers: within one window the lowest ``remaining``; a later reset starts a
new window. Nothing here ever sees a credential, only its hash.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from django.db import IntegrityError, transaction

from connectors.budget import Budget
from connectors.models import ProviderBudget

REDIS_PREFIX = "ccdash:budget:"
# A Redis entry outlives its window by this much, then disappears by itself.
REDIS_GRACE_S = 300


def _epoch(moment: datetime) -> float:
    return moment.timestamp()


def _moment(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _from_row(row: ProviderBudget) -> Budget:
    return Budget(
        row.provider_id,
        row.token_key,
        row.limit,
        row.remaining,
        _epoch(row.reset_at),
        _epoch(row.observed_at),
    )


class DatabaseBudgetStore:
    """``ProviderBudget`` rows; one short transaction per published budget."""

    def publish(self, budgets: list[Budget]) -> None:
        for budget in budgets:
            self._publish_one(budget)

    def _publish_one(self, budget: Budget) -> None:
        values = {
            "limit": budget.limit,
            "remaining": budget.remaining,
            "reset_at": _moment(budget.reset_at),
            "observed_at": _moment(budget.observed_at),
        }
        key = {"provider_id": budget.provider_id, "token_key": budget.key}
        with transaction.atomic():
            row = ProviderBudget.objects.select_for_update().filter(**key).first()
            if row is None:
                try:
                    with transaction.atomic():
                        ProviderBudget.objects.create(**key, **values)
                    return
                except IntegrityError:  # another process created it meanwhile
                    row = ProviderBudget.objects.select_for_update().get(**key)
            if budget.newer_than(_from_row(row)):
                ProviderBudget.objects.filter(pk=row.pk).update(**values)

    def load(self) -> list[Budget]:
        return [_from_row(row) for row in ProviderBudget.objects.all()]


class RedisBudgetStore:
    """One JSON value per token under ``ccdash:budget:<provider>:<key>``,
    replaced by a Lua compare so concurrent processes keep the newer one."""

    _REPLACE = """
    local old = redis.call('GET', KEYS[1])
    local new = cjson.decode(ARGV[1])
    if old then
        local o = cjson.decode(old)
        if math.abs(new.reset_at - o.reset_at) < tonumber(ARGV[3]) then
            if new.remaining >= o.remaining then return 0 end
        elseif new.reset_at < o.reset_at then
            return 0
        end
    end
    redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
    return 1
    """

    def __init__(self, url: str, *, prefix: str = REDIS_PREFIX) -> None:
        import redis

        self.prefix = prefix
        self.client = redis.Redis.from_url(url)
        self._replace = self.client.register_script(self._REPLACE)

    def publish(self, budgets: list[Budget]) -> None:
        from connectors.budget import SAME_WINDOW_S

        for budget in budgets:
            value = json.dumps(
                {
                    "provider_id": budget.provider_id,
                    "key": budget.key,
                    "limit": budget.limit,
                    "remaining": budget.remaining,
                    "reset_at": budget.reset_at,
                    "observed_at": budget.observed_at,
                }
            )
            ttl = max(1, int(budget.reset_at - budget.observed_at) + REDIS_GRACE_S)
            name = f"{self.prefix}{budget.provider_id}:{budget.key}"
            self._replace(keys=[name], args=[value, ttl, SAME_WINDOW_S])

    def load(self) -> list[Budget]:
        names = list(self.client.scan_iter(match=f"{self.prefix}*", count=500))
        budgets = []
        for raw in self.client.mget(names) if names else []:
            if raw is None:
                continue
            data = json.loads(raw)
            budgets.append(
                Budget(
                    data["provider_id"],
                    data["key"],
                    int(data["limit"]),
                    int(data["remaining"]),
                    float(data["reset_at"]),
                    float(data["observed_at"]),
                )
            )
        return budgets
