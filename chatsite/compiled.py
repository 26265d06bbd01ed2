"""Hot SELECTs compiled once per process.

Django builds and compiles a queryset's SQL every time it is evaluated. For the few
statements on every turn's path (a conversation with four related rows, three subqueries
and row locks; an answer with its profile, conversation, org and reservation) that costs
more CPU than PostgreSQL spends running them (see docs/decisions.md#0032). A
``CompiledSelect`` builds its queryset once per database vendor and *shape*, with a
marker value for each integer parameter, keeps the SQL and what Django needs to turn
rows into models, and from then on only swaps the real values into the parameters.

What may vary between calls is therefore explicit: the named integer values (ids), and
a ``shape`` key the caller passes for anything else the queryset is built from (a
setting that adds a filter). Everything else is fixed at the first call. Tests turn on
``CHECKS``: every call then also compiles the queryset the slow way and fails loudly if
the SQL or its parameters differ, so a forgotten shape input cannot go unnoticed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.db import connection
from django.db.models import Model, QuerySet
from django.db.models.query import get_related_populators  # type: ignore[attr-defined]  # not in the stubs
from django.db.models.sql.compiler import SQLCompiler
from django.db.transaction import TransactionManagementError

M = TypeVar("M", bound=Model)

# Set by the test suite: compare every call against a fresh compile.
CHECKS = False

# Integers no id, count or limit takes: a parameter equal to one of them came from the
# value of that name.
_MARKER_BASE = -7_340_032_000_000


class ShapeError(AssertionError):
    """The cached SQL no longer matches what the queryset compiles to."""


@dataclass(frozen=True)
class _Plan:
    sql: str
    params: tuple[Any, ...]
    slots: dict[str, tuple[int, ...]]  # value name -> parameter positions
    compiler: SQLCompiler


class CompiledSelect(Generic[M]):
    """``build(**values)`` returns the queryset; ``values`` are the integer names it
    takes. ``fetch`` / ``first`` run it with real values."""

    def __init__(self, build: Callable[..., QuerySet[M]], *values: str) -> None:
        self._build = build
        self._names = values
        self._plans: dict[tuple[str, Hashable], _Plan] = {}

    def first(self, *, shape: Hashable = (), **values: int) -> M | None:
        rows = self.fetch(shape=shape, **values)
        return rows[0] if rows else None

    def fetch(self, *, shape: Hashable = (), **values: int) -> list[M]:
        if set(values) != set(self._names):
            raise TypeError(f"expected values {sorted(self._names)}, got {sorted(values)}")
        for name, value in values.items():
            if type(value) is not int:
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        key = (connection.vendor, shape)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._compile()
        params = list(plan.params)
        for name, positions in plan.slots.items():
            for position in positions:
                params[position] = values[name]
        if plan.compiler.query.select_for_update and connection.get_autocommit():
            # Django refuses this when it compiles; a cached plan must refuse it too, or the
            # row lock would be taken and released at once.
            raise TransactionManagementError("select_for_update cannot be used outside of a transaction.")
        if CHECKS:
            self._check(plan, params, values)
        return self._run(plan, params)

    def _compile(self) -> _Plan:
        markers = {name: _MARKER_BASE - n for n, name in enumerate(self._names)}
        compiler = self._build(**markers).query.get_compiler(using=connection.alias)
        sql, params = compiler.as_sql()
        slots = {name: tuple(i for i, p in enumerate(params) if type(p) is int and p == marker)
                 for name, marker in markers.items()}
        missing = [name for name, positions in slots.items() if not positions]
        if missing:
            raise ShapeError(f"the query does not take {missing} as parameters")
        return _Plan(sql=sql, params=tuple(params), slots=slots, compiler=compiler)

    def _check(self, plan: _Plan, params: list[Any], values: dict[str, int]) -> None:
        sql, fresh = self._build(**values).query.get_compiler(using=connection.alias).as_sql()
        if sql != plan.sql or list(fresh) != params:
            raise ShapeError(
                "a compiled statement no longer matches its queryset: pass what changed it "
                f"as shape.\ncached: {plan.sql} {params}\nfresh:  {sql} {list(fresh)}"
            )

    @staticmethod
    def _run(plan: _Plan, params: list[Any]) -> list[M]:
        """Django's ModelIterable, minus the compile: rows, their converters (JSON,
        decimals), the select_related models and the annotations."""
        # This thread's own connection for the converters; the shared plan is never changed.
        compiler = copy.copy(plan.compiler)
        compiler.connection = connection
        with connection.cursor() as cursor:
            cursor.execute(plan.sql, params)
            rows = cursor.fetchall()
        select, klass_info = compiler.select, compiler.klass_info
        assert klass_info is not None
        model_cls = klass_info["model"]
        start, end = klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1
        init_list = [column[0].target.attname for column in select[start:end]]
        populators = get_related_populators(klass_info, select, connection.alias)
        objects = []
        for row in compiler.results_iter([rows]):
            obj = model_cls.from_db(connection.alias, init_list, row[start:end])
            for populator in populators:
                populator.populate(row, obj)
            for name, position in compiler.annotation_col_map.items():
                setattr(obj, name, row[position])
            objects.append(obj)
        return objects
