"""Records declared once: frozen, keyword-or-positional value objects whose
fields are class annotations, as with ``dataclasses``, but that cost
nothing to define.

Every ``queuectl enqueue`` and ``status`` call defines the records again
(they are module-level classes), and ``dataclasses`` costs more there than
the whole call should: importing it pulls in ``inspect``, and each class is
made by generating and compiling its methods. A :class:`Record` subclass
instead keeps its fields in a tuple and shares generic methods; mypy treats
it as a frozen dataclass (``dataclass_transform``). Field metadata (how a
value is checked, shown or stored) rides on :func:`field`.
"""

from __future__ import annotations

# typing is not imported at run time (it costs more than this module).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Self, dataclass_transform
else:
    def dataclass_transform(**kwargs):
        return lambda obj: obj


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class Field:
    """One declared field: its name, default (or default factory) and metadata."""

    __slots__ = ("default", "factory", "kw_only", "meta", "name")

    def __init__(self, default: Any = MISSING, factory: Callable[[], Any] | None = None,
                 meta: dict[str, Any] | None = None, kw_only: bool | None = None) -> None:
        self.name = ""
        self.default = default
        self.factory = factory
        self.meta: dict[str, Any] = meta or {}
        self.kw_only = kw_only

    @property
    def required(self) -> bool:
        return self.default is MISSING and self.factory is None


def field(default: Any = MISSING, *, default_factory: Callable[[], Any] | None = None,
          meta: dict[str, Any] | None = None, kw_only: bool | None = None) -> Any:
    """A field with a default, a default factory or metadata."""
    return Field(default, default_factory, meta, kw_only)


class FrozenError(AttributeError):
    """Records cannot be changed; use ``replace``."""


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
class Record:
    """Base of every record. ``class Job(Record, kw_only=True)`` takes
    keyword arguments only."""

    __slots__ = ()
    _fields: tuple[Field, ...] = ()
    _names: tuple[str, ...] = ()
    _positional: tuple[str, ...] = ()
    _name_set: frozenset[str] = frozenset()
    _defaults: dict[str, Any] = {}  # noqa: RUF012 - set per class, never changed
    _factories: tuple[Field, ...] = ()

    def __init_subclass__(cls, *, kw_only: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields = {f.name: f for f in cls._fields}
        # (Not inspect.get_annotations: importing inspect is what we avoid.)
        own = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
        for name in own:
            if name.startswith("_") or name.isupper():
                continue
            value = cls.__dict__.get(name, MISSING)
            spec = value if isinstance(value, Field) else Field(value)
            spec.name = name
            if spec.kw_only is None:
                spec.kw_only = kw_only
            if name in cls.__dict__:
                delattr(cls, name)
            fields[name] = spec
        cls._fields = tuple(fields.values())
        cls._names = tuple(fields)
        cls._positional = tuple(f.name for f in cls._fields if not f.kw_only)
        cls._name_set = frozenset(fields)
        cls._defaults = {f.name: f.default for f in cls._fields if f.default is not MISSING}
        cls._factories = tuple(f for f in cls._fields if f.factory is not None)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        if args:
            if len(args) > len(cls._positional):
                raise TypeError(f"{cls.__name__}() takes at most {len(cls._positional)} "
                                f"positional arguments ({len(args)} given)")
            for name, value in zip(cls._positional, args, strict=False):
                if name in kwargs:
                    raise TypeError(f"{cls.__name__}() got two values for {name!r}")
                kwargs[name] = value
        values = {**cls._defaults, **kwargs}
        if len(values) != len(cls._names) or not cls._name_set.issuperset(kwargs):
            self._complete(values, kwargs)
        object.__setattr__(self, "__dict__", values)
        self.__post_init__()

    def _complete(self, values: dict[str, Any], kwargs: dict[str, Any]) -> None:
        """Fill in default factories; refuse missing and unknown fields."""
        cls = type(self)
        unknown = [name for name in kwargs if name not in cls._name_set]
        if unknown:
            raise TypeError(f"{cls.__name__}() got unknown field(s): {', '.join(unknown)}")
        for spec in cls._factories:
            if spec.name not in kwargs:
                values[spec.name] = spec.factory()  # type: ignore[misc]
        missing = [name for name in cls._names if name not in values]
        if missing:
            raise TypeError(f"{cls.__name__}() needs {', '.join(map(repr, missing))}")

    def __post_init__(self) -> None:
        """Normalise values after ``__init__`` and ``replace`` (a hook)."""

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenError(f"cannot delete field {name!r}")

    def _values(self) -> tuple[Any, ...]:
        values = self.__dict__
        return tuple(values[name] for name in self._names)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={self.__dict__[f.name]!r}" for f in self._fields
                          if not f.meta.get("internal"))
        return f"{type(self).__name__}({shown})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.__dict__.copy()))

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed."""
        unknown = changes.keys() - set(self._names)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s): {', '.join(unknown)}")
        copy: Self = _rebuild(type(self), {**self.__dict__, **changes})
        return copy

    def as_dict(self) -> dict[str, Any]:
        """Field name -> value, in field order (shallow; enums stay enums)."""
        values = self.__dict__
        return {name: values[name] for name in self._names}

    @classmethod
    def _with_defaults(cls, values: dict[str, Any]) -> Self:
        """A record of ``values`` over the defaults, for a constructor that
        names every field without one itself and normalises its values (no
        checks, no ``__post_init__``: the fast way)."""
        made: Self = object.__new__(cls)
        object.__setattr__(made, "__dict__", {**cls._defaults, **values})
        return made

    @classmethod
    def record_fields(cls) -> tuple[Field, ...]:
        return cls._fields

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return cls._names


def _rebuild(cls: type[Any], values: dict[str, Any]) -> Any:
    record = object.__new__(cls)
    object.__setattr__(record, "__dict__", values)
    record.__post_init__()
    return record
