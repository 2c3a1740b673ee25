"""Store specs: one text syntax that names a store, used by the CLI tools, the chaos config and
the benchmarks.

    lmdb:PATH                                  duckdb:PATH
    kuzu:PATH?buffer_pool_size=64MiB           tinydb:PATH?sync=false
    networkx:PATH                              faiss:PATH?dimension=384&index=hnsw
    chroma:PATH?collection=notes               chroma+http://HOST:PORT?collection=NAME
    package.module:Class?path=PATH&opt=value   (a third-party adapter)

Everything after the first ``?`` is options, ``name=value`` joined by ``&`` (URL-encoded).
Each option must be a keyword parameter of the adapter's constructor, and its value is
converted to the parameter's type (int, float, bool or str, read from the annotation or the
default), so a typo or a bad value is refused while parsing, before any store is opened.
Ranges are the adapter's to check: they are checked by its constructor, which opens nothing
until every argument is good. A PATH is taken literally (no percent-decoding, ``~`` expanded);
it cannot contain ``?``. A bad spec raises InvalidInputError with a one-line message naming the
spec and what is wrong.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import os
import re
import types
import typing
import urllib.parse
from collections.abc import Mapping
from typing import Any

from memsys.domain.errors import InvalidInputError

_BACKENDS = ("tinydb", "networkx", "faiss", "chroma", "kuzu", "lmdb", "duckdb")
_REMOTE_SCHEMES = ("chroma+http", "chroma+https")
# Arguments a spec gives by its own syntax (the path, Chroma's server URL), never as options.
_CHROMA_URL_ARGS = {"host", "port", "server"}
_THIRD_PARTY = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*)$")
_NAMED = re.compile(r"^([A-Za-z_][\w.-]*)=(.+)$", re.DOTALL)
_SIZE = re.compile(r"^([0-9][0-9_]*)\s*(k|kb|kib|m|mb|mib|g|gb|gib)$", re.IGNORECASE)
_SIZE_FACTORS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_SCALARS = {"bool": bool, "int": int, "float": float, "str": str}


def _fail(text: Any, why: str) -> InvalidInputError:
    message = f"bad store spec {text!r}: {why}"
    return InvalidInputError(" ".join(message.split()))  # one line, whatever the cause said


@dataclasses.dataclass(frozen=True)
class StoreSpec:
    """A parsed store spec. ``backend`` is a short name ('lmdb', ...) or 'package.module:Class';
    ``path`` is None for a Chroma server (``server`` holds its URL) and may be None for a
    third-party adapter that takes no path; ``options`` are typed constructor arguments."""

    backend: str
    path: str | None
    options: Mapping[str, Any]
    text: str
    server: str | None = None

    @classmethod
    def parse(cls, text: str) -> StoreSpec:
        return parse_spec(text)

    @property
    def third_party(self) -> bool:
        return ":" in self.backend

    @property
    def name(self) -> str:
        """A default store name: the backend's short name, or the class name in lower case."""
        return self.backend.rpartition(":")[2].lower() if self.third_party else self.backend

    def adapter_class(self) -> type:
        return _resolve_class(self.backend, self.text)

    def open(self, **overrides: Any) -> Any:
        """Construct the adapter (which opens, or creates, the store). ``overrides`` are extra
        constructor arguments (``name=``, an ``embedder=``) that a spec cannot spell."""
        kwargs: dict[str, Any] = dict(self.options)
        if self.path is not None:
            kwargs["path"] = self.path
        if self.server is not None:
            kwargs["server"] = self.server
        kwargs.update(overrides)
        return self.adapter_class()(**kwargs)

    def __str__(self) -> str:
        """The canonical spec: options sorted, booleans as true/false; parses back to an equal spec."""
        options = {k: _format(v) for k, v in sorted(self.options.items())}
        if self.server is not None:
            head = f"chroma+{self.server}"
        elif self.third_party:
            if self.path is not None:
                options = {"path": self.path, **options}
            head = self.backend
        else:
            head = f"{self.backend}:{self.path}"
        if not options:
            return head
        return head + "?" + urllib.parse.urlencode(options, safe="/:~", quote_via=urllib.parse.quote)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StoreSpec):
            return NotImplemented
        return (self.backend, self.path, dict(self.options), self.server) == \
            (other.backend, other.path, dict(other.options), other.server)

    def __hash__(self) -> int:
        return hash(str(self))


def parse_spec(text: Any) -> StoreSpec:
    """Parse one store spec (see the module docstring); InvalidInputError if it is bad."""
    if isinstance(text, StoreSpec):
        return text
    if not isinstance(text, str):
        raise InvalidInputError(f"a store spec is a str such as 'lmdb:PATH', got {type(text).__name__}")
    if not text.strip():
        raise _fail(text, "empty; write BACKEND:PATH, e.g. 'lmdb:data/lmdb'")
    if any(ord(c) < 32 for c in text):
        raise _fail(text, "contains a control character")
    head, _, query = text.partition("?")
    pairs = _parse_query(text, query)
    scheme = head.split(":", 1)[0].lower()
    if scheme in _REMOTE_SCHEMES:
        server = _parse_server(text, head[len("chroma+"):])
        options = _typed_options(text, "chroma", pairs)
        _check_required(text, "chroma", options | {"server": server})
        return StoreSpec("chroma", None, options, text, server=server)
    if scheme in ("http", "https"):
        raise _fail(text, "a server spec names its backend: chroma+http://HOST:PORT")
    backend, sep, path = head.partition(":")
    if sep and backend in _BACKENDS:
        if not path.strip():
            raise _fail(text, f"missing path: write {backend}:PATH")
        if path.startswith("//"):
            raise _fail(text, f"{backend} is embedded: give a file or folder path, not a URL")
        path = os.path.expanduser(path)
        options = _typed_options(text, backend, pairs)
        _check_required(text, backend, options | {"path": path})
        return StoreSpec(backend, path, options, text)
    match = _THIRD_PARTY.match(head)
    if match and match.group(1).lower() not in _BACKENDS:
        target = f"{match.group(1)}:{match.group(2)}"
        raw_path = pairs.pop("path", None)
        path = os.path.expanduser(raw_path) if raw_path is not None else None
        if raw_path is not None and not raw_path.strip():
            raise _fail(text, "path= is empty")
        options = _typed_options(text, target, pairs)
        _check_required(text, target, options if path is None else options | {"path": path})
        return StoreSpec(target, path, options, text)
    if not sep:
        raise _fail(text, f"no backend: write BACKEND:PATH with BACKEND one of {', '.join(_BACKENDS)}, "
                          "chroma+http://HOST:PORT, or package.module:Class?path=PATH")
    raise _fail(text, f"unknown backend {backend!r}: use one of {', '.join(_BACKENDS)}, chroma+http://HOST:PORT, "
                      "or package.module:Class?path=PATH for a third-party adapter")


def parse_named_spec(text: str) -> tuple[str, StoreSpec]:
    """``NAME=SPEC`` or ``SPEC`` -> (store name, spec); the name defaults to the spec's ``name``."""
    if not isinstance(text, str):
        raise InvalidInputError(f"a store spec is a str such as 'lmdb:PATH', got {type(text).__name__}")
    match = _NAMED.match(text)
    # 'lmdb:x?sync=false' has an '=' too: a name never contains ':' or '?', so it cannot be one.
    if match and ":" not in match.group(1) and "?" not in match.group(1):
        return match.group(1), parse_spec(match.group(2))
    spec = parse_spec(text)
    return spec.name, spec


# ---------------------------------------------------------------------------------------- parts


def _parse_query(text: str, query: str) -> dict[str, str]:
    if not query:
        return {}
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise _fail(text, "options must be NAME=VALUE joined by '&'") from None
    found: dict[str, str] = {}
    for key, value in pairs:
        if key in found:
            raise _fail(text, f"option {key!r} is given twice")
        found[key] = value
    return found


def _parse_server(text: str, url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise _fail(text, "credentials in the URL are not supported")
    if parts.path not in ("", "/") or parts.fragment:
        raise _fail(text, "give only the scheme, host and port of the server (no path)")
    host = parts.hostname
    if not host:
        raise _fail(text, "names no host: write chroma+http://HOST:PORT")
    if not re.fullmatch(r"[A-Za-z0-9.\-_:]+", host):
        raise _fail(text, f"bad host {host!r}")
    try:
        port = parts.port
    except ValueError:
        raise _fail(text, "the port must be a number from 1 to 65535") from None
    if port == 0:
        raise _fail(text, "the port must be a number from 1 to 65535")
    shown_host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{shown_host}" + (f":{port}" if port is not None else "")


def _resolve_class(backend: str, text: str) -> type:
    if ":" not in backend:
        from memsys.adapters import adapter_class

        return adapter_class(backend)
    module_name, _, class_name = backend.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _fail(text, f"unknown backend or module {module_name!r} ({type(exc).__name__}: {exc}); built-in "
                          f"backends are {', '.join(_BACKENDS)}") from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise _fail(text, f"module {module_name!r} has no class {class_name!r}")
    return cls


def _parameters(text: str, backend: str) -> tuple[dict[str, inspect.Parameter], bool]:
    """The constructor's keyword parameters by name, and whether it takes **kwargs."""
    cls = _resolve_class(backend, text)
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError) as exc:
        raise _fail(text, f"cannot read the constructor of {cls.__name__}: {exc}") from exc
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = {n: p for n, p in signature.parameters.items() if p.kind in kinds}
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    return params, var_kw


def _check_required(text: str, backend: str, given: Mapping[str, Any]) -> None:
    params, var_kw = _parameters(text, backend)
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in given]
    if "path" in missing:
        raise _fail(text, f"missing path: {backend} needs one" + ("" if ":" not in backend else " (?path=PATH)"))
    if missing:
        raise _fail(text, f"{backend} needs option(s) {', '.join(missing)}")
    if not var_kw:
        unknown = sorted(set(given) - set(params))
        if unknown:
            raise _fail(text, f"{backend} takes no {', '.join(unknown)}")


def _typed_options(text: str, backend: str, pairs: Mapping[str, str]) -> dict[str, Any]:
    params, var_kw = _parameters(text, backend)
    reserved = {"path"} | (_CHROMA_URL_ARGS if backend == "chroma" else set())
    settable = sorted(n for n, p in params.items() if n not in reserved and _types(p) is not None)
    options: dict[str, Any] = {}
    for key, raw in pairs.items():
        if key == "path":
            raise _fail(text, f"path is given after the colon ({backend}:PATH), not as an option")
        if key in reserved:
            raise _fail(text, f"option {key!r} is not for a spec: a Chroma server is chroma+http://HOST:PORT")
        param = params.get(key)
        if param is None:
            if var_kw and key.isidentifier():
                options[key] = _guess(raw)
                continue
            raise _fail(text, f"unknown option {key!r} for {backend}; it takes: {', '.join(settable) or 'none'}")
        allowed = _types(param)
        if allowed is None:
            raise _fail(text, f"option {key!r} of {backend} is not a number, bool or string and cannot be given "
                              "in a spec")
        options[key] = _convert(text, key, raw, allowed)
    return options


def _types(param: inspect.Parameter) -> tuple[type, ...] | None:
    """The scalar types a parameter takes (bool, int, float, str), () if any, None if none."""
    annotation = param.annotation
    if annotation is inspect.Parameter.empty or annotation is Any or annotation == "Any":
        default = param.default
        if default is None or default is inspect.Parameter.empty:
            return ()
        return (type(default),) if type(default) in _SCALARS.values() else None
    if isinstance(annotation, str):
        names = [part.strip() for part in annotation.split("|")]
        found = tuple(_SCALARS[n] for n in names if n in _SCALARS)
    else:
        members = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
            else (annotation,)
        found = tuple(m for m in members if m in _SCALARS.values())
    return found or None


def _convert(text: str, key: str, raw: str, allowed: tuple[type, ...]) -> Any:
    if not allowed:
        return _guess(raw)
    value = raw.strip()
    if bool in allowed:
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
    if int in allowed:
        number = _int(value)
        if number is not None:
            return number
    if float in allowed:
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is not None and math.isfinite(number):
            return number
    if str in allowed:
        if not raw:
            raise _fail(text, f"option {key!r} is empty")
        return raw
    wanted = " or ".join({bool: "true/false", int: "an integer", float: "a finite number"}[t] for t in allowed)
    raise _fail(text, f"option {key!r} must be {wanted}, got {raw!r}")


def _int(value: str) -> int | None:
    """An int from '384', '-1', '1_000' or a size such as '64MiB' / '1g'; None if it is none."""
    if re.fullmatch(r"[+-]?[0-9][0-9_]*", value) and "__" not in value and not value.endswith("_"):
        return int(value)
    size = _SIZE.match(value)
    if size:
        return int(size.group(1)) * _SIZE_FACTORS[size.group(2)[0].lower()]
    return None


def _guess(raw: str) -> Any:
    """Type an option the constructor does not annotate: bool, int, float, else the text."""
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    number = _int(raw)
    if number is not None:
        return number
    try:
        value = float(raw)
        return value if math.isfinite(value) else raw
    except ValueError:
        return raw


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


__all__ = ["StoreSpec", "parse_spec", "parse_named_spec"]
