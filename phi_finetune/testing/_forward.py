"""``Forward``: an attribute of one object that lives on another it holds."""

from __future__ import annotations

from typing import Generic, Literal, TypeVar, cast, overload

__all__ = ["Forward"]

_T = TypeVar("_T")


class Forward(Generic[_T]):
    """A ``FakeAzureML`` attribute kept on its scope, store or dispatcher (writes go there)."""

    def __init__(self, holder: Literal["_scope", "_store", "_dispatcher"], doc: str = "") -> None:
        self._holder = holder
        self._name = ""
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Forward[_T]: ...

    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> _T: ...

    def __get__(self, obj: object | None, objtype: type | None = None) -> _T | Forward[_T]:
        if obj is None:
            return self
        return cast(_T, getattr(getattr(obj, self._holder), self._name))

    def __set__(self, obj: object, value: _T) -> None:
        setattr(getattr(obj, self._holder), self._name, value)
