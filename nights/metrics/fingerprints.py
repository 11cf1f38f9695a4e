"""Fingerprints of functions and models: the sha256 of what a function computes with.

A metric given as a function (:func:`nights.metrics.pair_metric`,
:func:`nights.metrics.embedding_metric`) is cached under an id derived from this fingerprint
unless it is given one, so that changing the function's code or its weights leaves the scores
of the old one behind instead of reusing them. What goes in, value by value:

* a Python function of the metric function's own module (the "home" module; ``__main__`` in a
  script): its bytecode, its constants (nested functions' code included), the names it uses, its
  default arguments, the values in its closure, and the values of the module-level globals it
  names, each by these same rules;
* a function or class of another module (``torch.nn.functional.mse_loss``, ``torch.nn.Linear``):
  its module, qualified name and the ``__version__`` of its top-level package, not its code;
* a bound method: its function and the object it is bound to; a ``functools.partial``: its
  function, arguments and keywords;
* a class of the home module: its qualified name, the code of its methods, the values of its
  other class attributes, and its base classes (by these same rules);
* a ``torch.nn.Module``: the classes of it and its submodules (as above), their public
  attributes (``training`` included), its ``repr`` (layers and settings), and every tensor of
  its ``state_dict``: name, dtype, shape and bytes;
* a tensor or NumPy array: dtype, shape and bytes;
* None, booleans, numbers, strings and bytes: their value; tuples, lists, dicts and sets: their
  items; a module (``torch``): its name and version;
* any other object: its class and its attributes (``__dict__`` and ``__slots__``), or its
  ``repr`` when it has no attributes and the ``repr`` names no memory address; else no
  fingerprint can be taken
  (:class:`~nights.errors.MetricError`: give the metric a cache id).

Left out: files and data the function reads at run time, and the code of other modules (their
package's version stands for it).

Example::

    >>> from nights.metrics.fingerprints import fingerprint
    >>> def scaled(a, b, scale=2.0):
    ...     return scale * (a - b).abs().mean(dim=(1, 2, 3))
    >>> def also_scaled(a, b, scale=3.0):
    ...     return scale * (a - b).abs().mean(dim=(1, 2, 3))
    >>> fingerprint(scaled) == fingerprint(scaled), fingerprint(scaled) == fingerprint(also_scaled)
    (True, False)
"""

from __future__ import annotations

import functools
import hashlib
import sys
import types

from ..errors import MetricError

_SCALARS = (type(None), bool, int, float, complex, str, bytes)
_FUNCTION_MEMBERS = (types.FunctionType, staticmethod, classmethod, property)


def fingerprint(value, home: str | None = None) -> str:
    """The sha256 (hex) of ``value``'s fingerprint (see the module's documentation).

    Args:
        value: a function, model, tensor or plain value.
        home: the module whose functions and classes are fingerprinted by their code (default:
            ``value``'s own module).

    Raises:
        MetricError: something ``value`` uses cannot be fingerprinted (named in the message).
    """
    home = home if home is not None else getattr(value, "__module__", None)
    hasher = _Fingerprint(home)
    hasher.add(value)
    return hasher.digest.hexdigest()


def _version(module_name: str | None) -> str:
    top = sys.modules.get((module_name or "").split(".")[0])
    return str(getattr(top, "__version__", ""))


def _names_used(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _names_used(constant)
    return names


def _slot_names(cls: type) -> list[str]:
    """The ``__slots__`` names of a class and its bases."""
    names = []
    for klass in cls.__mro__:
        slots = vars(klass).get("__slots__", ())
        names += [slots] if isinstance(slots, str) else list(slots)
    return [name for name in names if name not in ("__dict__", "__weakref__")]


def _attributes(value) -> dict:
    """An object's attributes: its ``__dict__`` and the ``__slots__`` it has set."""
    attributes = dict(getattr(value, "__dict__", {}))
    for name in _slot_names(type(value)):
        if hasattr(value, name):
            attributes[f"slot {name}"] = getattr(value, name)
    return attributes


class _Fingerprint:
    def __init__(self, home: str | None):
        self.home = home
        self.digest = hashlib.sha256()
        self.seen: dict[int, int] = {}
        self.alive: list = []  # holds what was seen, so that no id is reused meanwhile

    def write(self, *parts) -> None:
        """Each part length-prefixed: ("ab", "c") and ("a", "bc") differ."""
        for part in parts:
            data = part if isinstance(part, (bytes, memoryview)) else str(part).encode()
            self.digest.update(len(data).to_bytes(8, "little"))
            self.digest.update(data)

    def add(self, value) -> None:
        if isinstance(value, _SCALARS):
            self.write(type(value).__name__, repr(value))
            return
        if id(value) in self.seen:  # shared objects and cycles: a back-reference
            self.write("seen", self.seen[id(value)])
            return
        self.seen[id(value)] = len(self.seen)
        self.alive.append(value)
        self._add_object(value)

    def _add_object(self, value) -> None:
        torch, numpy = sys.modules.get("torch"), sys.modules.get("numpy")
        if torch is not None and isinstance(value, torch.Tensor):
            self._tensor(value)
        elif numpy is not None and isinstance(value, numpy.ndarray):
            self._array(value)
        elif torch is not None and isinstance(value, torch.nn.Module):
            self._module(value)
        elif isinstance(value, (tuple, list)):
            self.write(type(value).__name__, len(value))
            for item in value:
                self.add(item)
        elif isinstance(value, dict):
            self.write("dict", len(value))
            for key, item in value.items():
                self.add(key)
                self.add(item)
        elif isinstance(value, (set, frozenset)):
            self.write("set", *sorted(fingerprint(item, self.home) for item in value))
        elif isinstance(value, types.ModuleType):
            self.write("module", value.__name__, _version(value.__name__))
        elif isinstance(value, types.FunctionType):
            self._function(value)
        elif isinstance(value, types.MethodType):
            self.write("method")
            self.add(value.__func__)
            self.add(value.__self__)
        elif isinstance(value, functools.partial):
            self.write("partial")
            self.add((value.func, value.args, value.keywords))
        elif isinstance(value, type):
            self._class(value)
        elif isinstance(value, types.BuiltinFunctionType) or not (
            hasattr(value, "__dict__") or _slot_names(type(value))
        ):
            self._opaque(value)
        else:
            self._class(type(value))
            self.add(_attributes(value))

    def _reference(self, value) -> None:
        module = getattr(value, "__module__", None)
        name = getattr(value, "__qualname__", getattr(value, "__name__", type(value).__name__))
        self.write("reference", module, name, _version(module))

    def _opaque(self, value) -> None:
        """Builtins by name; other objects without attributes by a repr that is stable."""
        if callable(value) and hasattr(value, "__name__"):
            self._reference(value)
            return
        text = repr(value)
        if " at 0x" in text:
            raise MetricError(f"no fingerprint of {text}: its content cannot be read")
        self.write(type(value).__qualname__, text)

    def _code(self, code: types.CodeType) -> None:
        self.write("code", code.co_code, *code.co_names)
        for constant in code.co_consts:
            if isinstance(constant, types.CodeType):
                self._code(constant)
            else:
                self.add(constant)

    def _function(self, function: types.FunctionType) -> None:
        if function.__module__ != self.home:
            self._reference(function)
            return
        self._code(function.__code__)
        self.add((function.__defaults__, function.__kwdefaults__))
        for cell in function.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:  # a cell not yet filled
                self.write("empty cell")
                continue
            self.add(contents)
        for name in sorted(_names_used(function.__code__)):
            if name in function.__globals__:
                self.write("global", name)
                self.add(function.__globals__[name])

    def _class(self, cls: type) -> None:
        if cls.__module__ != self.home:
            self._reference(cls)
            return
        self.write("class", cls.__qualname__)
        for name, member in vars(cls).items():
            if isinstance(member, _FUNCTION_MEMBERS):
                self.write(name)
                functions = (member.fget, member.fset) if isinstance(member, property) else ()
                for function in functions or (getattr(member, "__func__", member),):
                    self.add(function)
            elif not (name.startswith("__") and name.endswith("__")):
                self.write("class attribute", name)
                self.add(member)
        self.write("bases")
        for base in cls.__bases__:
            self.add(base)

    def _tensor(self, tensor) -> None:
        import torch

        tensor = tensor.detach().cpu().contiguous()
        self.write("tensor", tensor.dtype, tuple(tensor.shape))
        self.write(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))

    def _array(self, array) -> None:
        if array.dtype.hasobject:
            self.write("object array", array.shape)
            self.add(array.tolist())
            return
        numpy = sys.modules["numpy"]
        self.write("array", array.dtype.str, array.shape)
        self.write(memoryview(numpy.ascontiguousarray(array).reshape(-1).view(numpy.uint8)))

    def _module(self, module) -> None:
        for part in module.modules():
            self.add(type(part))
            self.add({k: v for k, v in vars(part).items() if not k.startswith("_")})
        self.write("module repr", repr(module))
        for name, tensor in module.state_dict().items():
            self.write(name)
            self._tensor(tensor)
