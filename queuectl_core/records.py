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
        values: dict[str, Any] = {}
        for spec in cls._fields:
            if spec.name in kwargs:
                values[spec.name] = kwargs.pop(spec.name)
            elif spec.default is not MISSING:
                values[spec.name] = spec.default
            elif spec.factory is not None:
                values[spec.name] = spec.factory()
            else:
                raise TypeError(f"{cls.__name__}() needs {spec.name!r}")
        if kwargs:
            raise TypeError(f"{cls.__name__}() got unknown field(s): {', '.join(kwargs)}")
        object.__setattr__(self, "__dict__", values)
        self.__post_init__()

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
        """Field name -> value (shallow; enums stay enums)."""
        return dict(self.__dict__)

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
