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

On PostgreSQL the values fixed at the first call (the strings, booleans and integers the
queryset was built with: statuses, roles, ``LIMIT 1``) are written into the SQL as
literals, and only the named values stay parameters (docs/decisions.md#0052). A prepared
statement whose partial-index predicates (``status = 'pending'``) are parameters cannot use
those indexes in a generic plan, so PostgreSQL judged the generic plan dearer and planned
the statement afresh on every run; with literals it settles on the generic plan after
five runs and stops planning.

A write and the read after it can go as one statement (PostgreSQL): ``fetch(with_=...)``
puts a data-modifying ``WITH`` clause (``update_statement`` builds one from a queryset)
before the compiled SELECT, which reads the rows as they were before the write and may
name the clause's ``RETURNING`` rows.
"""

from __future__ import annotations

import copy
import functools
import re
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from django.db import connection
from django.db.models import Model, QuerySet
from django.db.models.expressions import DatabaseDefault, RawSQL
from django.db.models.query import get_related_populators  # type: ignore[attr-defined]  # not in the stubs
from django.db.models.sql import UpdateQuery
from django.db.models.sql.compiler import SQLCompiler
from django.db.transaction import TransactionManagementError
from psycopg import sql as pgsql
from psycopg.types.numeric import Int2, Int4, Int8

M = TypeVar("M", bound=Model)

# Set by the test suite: compare every call against a fresh compile.
CHECKS = False

# Integers no id, count or limit takes: a parameter equal to one of them came from the
# value of that name.
_MARKER_BASE = -7_340_032_000_000
# An update's integers may be counts in a small positive column (a claim number), which
# Django refuses to compare with an id-sized or negative value: markers in the range of
# every integer column, which no fixed value of these statements is (_compile checks that
# each marker is found; a fixed value equal to one would be swapped too).
_COUNT_MARKER_BASE = 32_000
# Likewise a moment no timestamp is (the first microseconds of year 1): the datetime values.
_TIME_MARKER = datetime(1, 1, 1, tzinfo=UTC)


# Integers as Django sends them: plain, or psycopg's Int2/Int4/Int8 (an expression's
# integer, ``F() + 1``, and some columns' values).
_INT_TYPES = (int, Int2, Int4, Int8)
# The non-text values written in as literals.
_INLINED_TYPES = (bool, *_INT_TYPES)

# A placeholder, or an escaped percent sign, in Django's SQL.
_PLACEHOLDER = re.compile(r"%[s%]")

# A WITH clause's body and its parameters: ("name AS (UPDATE ... RETURNING ...)", [...]).
Clause = tuple[str, Sequence[Any]]


def update_statement(rows: QuerySet[Any], values: dict[str, Any]) -> tuple[str, Sequence[Any]]:
    """``rows.update(**values)`` as SQL and parameters, not run: to put in a ``WITH``
    clause (add ``RETURNING``), so the write and what depends on it are one statement."""
    query = rows.query.chain(UpdateQuery)
    assert isinstance(query, UpdateQuery)
    query.add_update_values(values)
    sql, params = query.get_compiler(using=rows.db).as_sql()
    return sql, params


class CompiledUpdate:
    """An UPDATE (for a ``WITH`` clause) built from a queryset once per process, like a
    ``CompiledSelect``: ``build(**values)`` returns the rows and their changes, and each
    call only swaps the values in. ``ints`` name the integer values (ids), ``times`` the
    aware datetimes (timestamps): both reach ``build``. ``fields`` name columns set from
    any value, prepared for the database by their model field as Django's update does
    (None: NULL); ``build`` leaves them out of its changes. Only on PostgreSQL, where the
    other values (statuses, an ``F() + 1``) are written in as literals
    (docs/decisions.md#0052); elsewhere the statement is compiled on every call."""

    def __init__(self, build: Callable[..., tuple[QuerySet[Any], dict[str, Any]]], *,
                 ints: Sequence[str] = (), times: Sequence[str] = (),
                 fields: Sequence[str] = ()) -> None:
        self._build = build
        self._markers: dict[str, Any] = {name: _COUNT_MARKER_BASE + n for n, name in enumerate(ints)}
        self._markers.update({name: _TIME_MARKER + timedelta(microseconds=n)
                              for n, name in enumerate(times)})
        # A text no value is, sent as the column's whole expression: its position is the
        # column's parameter, and the value is prepared here rather than by the compile.
        self._fields = {name: f"\x00compiled update: {name}\x00" for name in fields}
        self._statement: _Statement | None = None
        self._prepare: dict[str, Callable[[Any], Any]] = {}

    def statement(self, **values: Any) -> tuple[str, list[Any]]:
        """The UPDATE and its parameters with ``values`` swapped in (add ``RETURNING``)."""
        if set(values) != set(self._markers) | set(self._fields):
            raise TypeError(f"expected values {sorted([*self._markers, *self._fields])}, "
                            f"got {sorted(values)}")
        for name, marker in self._markers.items():
            if type(values[name]) is not type(marker):
                raise TypeError(f"{name} must be {type(marker).__name__}, "
                                f"not {type(values[name]).__name__}")
        named = {name: values[name] for name in self._markers}
        if connection.vendor != "postgresql":
            return self._fresh(named, {name: values[name] for name in self._fields})
        if self._statement is None:
            self._statement = self._compile()
        prepared = {name: None if values[name] is None else prepare(values[name])
                    for name, prepare in self._prepare.items()}
        if CHECKS:
            self._statement.check(*self._fresh(named, self._field_markers()), named,
                                  mismatch="a compiled update no longer matches its queryset:")
        return self._statement.sql, self._statement.bound({**named, **prepared})

    def _fresh(self, named: dict[str, Any], fields: dict[str, Any]) -> tuple[str, list[Any]]:
        """Django's compile of the update, ``fields`` set as given."""
        rows, changes = self._build(**named)
        sql, params = update_statement(rows, {**changes, **fields})
        return sql, list(params)

    def _field_markers(self) -> dict[str, RawSQL]:
        return {name: RawSQL("%s", (marker,)) for name, marker in self._fields.items()}

    def _compile(self) -> _Statement:
        rows, _ = self._build(**self._markers)
        meta = rows.model._meta
        self._prepare = {name: functools.partial(meta.get_field(name).get_db_prep_save,
                                                 connection=connection)
                         for name in self._fields}
        return _Statement.located(*self._fresh(self._markers, self._field_markers()),
                                  {**self._markers, **self._fields}, kind="update")


def insert_statement(obj: Model, *, computed: dict[str, str]) -> tuple[str, list[Any]]:
    """``obj.save()``'s INSERT as ``INSERT INTO <table> (<columns>) SELECT <values>``, not
    run: the caller adds ``FROM`` (and ``RETURNING``) and puts it in a ``WITH`` clause.
    ``computed`` gives columns (by attname) an SQL expression instead of the instance's
    value, such as an id another part of the statement allocates; the primary key is
    written only when it is among them. A field left to its database default is left out."""
    quote = connection.ops.quote_name
    columns, values, params = [], [], []
    for column_field in obj._meta.concrete_fields:
        if column_field.attname in computed:
            columns.append(quote(column_field.column))
            values.append(computed[column_field.attname])
            continue
        if column_field.primary_key:
            continue
        value = column_field.pre_save(obj, add=True)
        if isinstance(value, DatabaseDefault):
            continue
        columns.append(quote(column_field.column))
        values.append("%s")
        params.append(column_field.get_db_prep_save(value, connection))
    return (f"INSERT INTO {quote(obj._meta.db_table)} ({', '.join(columns)})"
            f" SELECT {', '.join(values)}", params)


def _slots(params: Sequence[Any], markers: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Each value name's parameter positions (where its marker is)."""
    return {name: tuple(i for i, p in enumerate(params) if _same_kind(p, marker) and p == marker)
            for name, marker in markers.items()}


def _same_kind(param: Any, marker: Any) -> bool:
    if type(marker) is int:
        return type(param) in _INT_TYPES
    return type(param) is type(marker)


def _inlinable(value: Any) -> bool:
    # str subclasses too: the statuses and roles are TextChoices members. Of the int
    # subclasses, psycopg's own (Django sends an expression's integer, ``F() + 1``, as
    # Int4), not enums, which psycopg would write as their names.
    return isinstance(value, str) or type(value) in _INLINED_TYPES


def _inline_fixed(sql: str, params: Sequence[Any], *, keep: set[int]) -> tuple[str, list[Any]]:
    """``sql`` with every parameter not in ``keep`` (positions) that is a str, bool or int
    written in as a PostgreSQL literal (quoted by psycopg); the others stay placeholders.
    Elsewhere than PostgreSQL the statement is returned as it is."""
    if connection.vendor != "postgresql":
        return sql, list(params)
    connection.ensure_connection()  # psycopg quotes the literals for this connection
    raw = connection.connection
    remaining: list[Any] = []
    position = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal position
        if match.group() == "%%":
            return "%%"
        index, position = position, position + 1
        value = params[index]
        if index in keep or not _inlinable(value):
            remaining.append(value)
            return "%s"
        if isinstance(value, str):
            value = str.__str__(value)  # a choice's text, as its parameter sent it
        # A literal's own percent signs are escaped: the SQL is still formatted with %s.
        return pgsql.Literal(value).as_string(raw).strip().replace("%", "%%")

    inlined = _PLACEHOLDER.sub(replace, sql)
    if position != len(params):
        raise ShapeError(f"{position} placeholders for {len(params)} parameters in {sql}")
    return inlined, remaining


class ShapeError(AssertionError):
    """The cached SQL no longer matches what the queryset compiles to."""


@dataclass(frozen=True)
class _Statement:
    """A compiled statement: its SQL with the fixed values written in, where each named
    value goes, and the same as Django compiled it, before the literals (for CHECKS)."""

    sql: str
    params: tuple[Any, ...]
    slots: dict[str, tuple[int, ...]]  # value name -> parameter positions
    raw_sql: str
    raw_params: tuple[Any, ...]
    raw_slots: dict[str, tuple[int, ...]]

    @classmethod
    def located(cls, raw_sql: str, raw_params: Sequence[Any], markers: dict[str, Any], *,
                kind: str) -> _Statement:
        """Django's compile with a marker for each named value: where the markers are,
        and the other values written in."""
        raw_slots = _slots(raw_params, markers)
        missing = [name for name, positions in raw_slots.items() if not positions]
        if missing:
            raise ShapeError(f"the {kind} does not take {missing} as parameters")
        named = {position for positions in raw_slots.values() for position in positions}
        sql, params = _inline_fixed(raw_sql, raw_params, keep=named)
        return cls(sql=sql, params=tuple(params), slots=_slots(params, markers),
                   raw_sql=raw_sql, raw_params=tuple(raw_params), raw_slots=raw_slots)

    def bound(self, values: dict[str, Any]) -> list[Any]:
        """The parameters with ``values`` in their slots."""
        params = list(self.params)
        for name, positions in self.slots.items():
            for position in positions:
                params[position] = values[name]
        return params

    def check(self, sql: str, fresh: Sequence[Any], values: dict[str, Any], *,
              mismatch: str) -> None:
        """A fresh compile with the real ``values`` (``sql``, ``fresh``) is the statement
        as Django first compiled it, values swapped in; else ShapeError(``mismatch``)."""
        cached = list(self.raw_params)
        for name, positions in self.raw_slots.items():
            if name in values:
                for position in positions:
                    cached[position] = values[name]
        if sql != self.raw_sql or list(fresh) != cached:
            raise ShapeError(f"{mismatch}\ncached: {self.raw_sql} {cached}"
                             f"\nfresh:  {sql} {list(fresh)}")


@dataclass(frozen=True)
class _Plan(_Statement):
    compiler: SQLCompiler
    # Each thread's reader of the rows (_Reader), made on its first run there.
    readers: threading.local = field(default_factory=threading.local, compare=False)

    def reader(self) -> _Reader:
        reader: _Reader | None = getattr(self.readers, "reader", None)
        if reader is None:
            reader = self.readers.reader = _Reader(self)
        return reader


class CompiledSelect(Generic[M]):
    """``build(**values)`` returns the queryset; ``values`` are the integer names it
    takes. ``fetch`` / ``first`` run it with real values."""

    def __init__(self, build: Callable[..., QuerySet[M]], *values: str) -> None:
        self._build = build
        self._names = values
        self._plans: dict[tuple[str, Hashable], _Plan] = {}

    def first(self, *, shape: Hashable = (), with_: Clause | None = None,
              **values: int) -> M | None:
        rows = self.fetch(shape=shape, with_=with_, **values)
        return rows[0] if rows else None

    def fetch(self, *, shape: Hashable = (), with_: Clause | None = None,
              **values: int) -> list[M]:
        """The rows, with ``values`` swapped in; ``with_``: a ``WITH`` clause's body
        (``name AS (statement)``) and its parameters, run in the same statement."""
        plan, params = self._ready(shape, values)
        if with_ is not None:
            return self._run(plan, params, with_)
        return self._run(plan, params)

    def statement(self, *, shape: Hashable = (), **values: int) -> tuple[str, list[Any]]:
        """The SELECT and its parameters, not run: a part of a larger statement (read
        its columns by name; the models it would build are not made)."""
        plan, params = self._ready(shape, values)
        return plan.sql, params

    def _ready(self, shape: Hashable, values: dict[str, int]) -> tuple[_Plan, list[Any]]:
        if set(values) != set(self._names):
            raise TypeError(f"expected values {sorted(self._names)}, got {sorted(values)}")
        for name, value in values.items():
            if type(value) is not int:
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        key = (connection.vendor, shape)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._compile()
        params = plan.bound(values)
        if plan.compiler.query.select_for_update and connection.get_autocommit():
            # Django refuses this when it compiles; a cached plan must refuse it too, or the
            # row lock would be taken and released at once.
            raise TransactionManagementError("select_for_update cannot be used outside of a transaction.")
        if CHECKS:
            self._check(plan, values)
        return plan, params

    def _compile(self) -> _Plan:
        markers = {name: _MARKER_BASE - n for n, name in enumerate(self._names)}
        compiler = self._build(**markers).query.get_compiler(using=connection.alias)
        raw_sql, raw_params = compiler.as_sql()
        located = _Statement.located(raw_sql, raw_params, markers, kind="query")
        return _Plan(**vars(located), compiler=compiler)

    def _check(self, plan: _Plan, values: dict[str, int]) -> None:
        """The queryset built with the real values compiles to the cached statement as
        it was before its fixed values were written in."""
        sql, fresh = self._build(**values).query.get_compiler(using=connection.alias).as_sql()
        plan.check(sql, fresh, values, mismatch=(
            "a compiled statement no longer matches its queryset: pass what changed it as shape."))

    @staticmethod
    def _run(plan: _Plan, params: list[Any], with_: Clause | None = None) -> list[M]:
        """Django's ModelIterable, minus the compile: rows, their converters (JSON,
        decimals), the select_related models and the annotations."""
        sql = plan.sql if with_ is None else f"WITH {with_[0]} {plan.sql}"
        with connection.cursor() as cursor:
            cursor.execute(sql, params if with_ is None else [*with_[1], *params])
            rows = cursor.fetchall()
        reader = plan.reader()
        objects = []
        for row in reader.rows(rows):
            obj = reader.model.from_db(connection.alias, reader.init_list,
                                       row[reader.start:reader.end])
            for populator in reader.populators:
                populator.populate(row, obj)
            for name, position in reader.annotations:
                setattr(obj, name, row[position])
            objects.append(obj)
        return objects


class _Reader:
    """What turns one compiled statement's rows into models, worked out once per thread's
    connection (Django's ModelIterable works it out on every evaluation: the converters
    of 150-odd columns cost about as much as the rest of reading the row)."""

    def __init__(self, plan: _Plan) -> None:
        # This thread's own connection for the converters; the shared plan is never changed.
        compiler = copy.copy(plan.compiler)
        compiler.connection = connection
        self.compiler = compiler
        select, klass_info = compiler.select, compiler.klass_info
        assert klass_info is not None
        self.model = klass_info["model"]
        self.start, self.end = klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1
        self.init_list = [column[0].target.attname for column in select[self.start:self.end]]
        self.populators = get_related_populators(klass_info, select, connection.alias)
        self.annotations = list(compiler.annotation_col_map.items())
        fields = [column[0] for column in select[0:compiler.col_count]]
        self.converters = compiler.get_converters(fields)
        assert not compiler.has_composite_fields(fields), "composite keys are not read here"

    def rows(self, rows: list[tuple[Any, ...]]) -> Any:
        if not self.converters:
            return rows
        return self.compiler.apply_converters(rows, self.converters)
