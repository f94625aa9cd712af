"""Check a dashboard's JSON against Grafana's dashboard model as grafana-foundation-sdk types it.

grafana-foundation-sdk (Apache-2.0, by Grafana Labs) is generated from Grafana's own schemas
(the dashboard kind and each core panel's and data source's options) for one Grafana
version. It ships typed Python models, not a JSON Schema file, so the check is done with
those models, three ways:

1. **Known keys, unchanged values.** The JSON is decoded into the typed model and encoded
   again: every key of the input must come back with the same value. A key the model does
   not know (a misspelt ``gridpos``, an option of another panel type) is dropped by the
   decoder and so reported.
2. **Types.** Every value the model decoded is checked against the model's type hints
   (int, float, str, bool, lists, maps, the enums' values, nested models).
3. **Required keys.** An attribute whose type is not optional must be in the input
   (``schemaVersion``, a panel's ``gridPos`` h/w/x/y, a query's ``refId``...).

Data source queries the SDK has no model for (InfluxDB's Flux targets) pass through as an
untyped bag: only their keys' presence is checked, by the test that uses this module.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from typing import Any

from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.cog.runtime import UnknownDataquery
from grafana_foundation_sdk.models.dashboard import Dashboard

register_default_plugins()

_SENTINEL_KEYS: dict[type, dict[str, str]] = {}


def _json_keys(cls: type) -> dict[str, str]:
    """attribute name -> JSON key of an SDK model class, found by encoding a marker."""
    if cls in _SENTINEL_KEYS:
        return _SENTINEL_KEYS[cls]
    out: dict[str, str] = {}
    try:
        base = cls()
    except TypeError:
        _SENTINEL_KEYS[cls] = out
        return out
    for attr in typing.get_type_hints(cls):
        marker = object()
        saved = getattr(base, attr, None)
        setattr(base, attr, marker)
        try:
            payload = base.to_json()
        except Exception:  # noqa: S112 - an attribute whose encoding needs a real value
            continue
        finally:
            setattr(base, attr, saved)
        for key, value in payload.items():
            if value is marker:
                out[attr] = key
    _SENTINEL_KEYS[cls] = out
    return out


def _is_model(x: Any) -> bool:
    return callable(getattr(x, "to_json", None)) and hasattr(type(x), "from_json")


def _type_errors(value: Any, hint: Any, path: str) -> list[str]:
    """Why ``value`` does not fit ``hint`` (empty: it fits)."""
    if hint is Any or hint is object:
        return []
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        tries = [_type_errors(value, a, path) for a in args]
        if any(not t for t in tries):
            return []
        return [f"{path}: {value!r:.80} fits none of {hint}"]
    if hint is type(None):
        return [] if value is None else [f"{path}: expected null, got {value!r:.80}"]
    if origin is typing.Literal:
        return [] if value in args else [f"{path}: {value!r} not one of {args}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        return [e for i, v in enumerate(value) for e in _type_errors(v, args[0], f"{path}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{path}: expected an object, got {type(value).__name__}"]
        return [e for k, v in value.items()
                for e in (_type_errors(k, args[0], f"{path} key") +
                          _type_errors(v, args[1], f"{path}.{k}"))]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        allowed = {m.value for m in hint}
        raw = value.value if isinstance(value, enum.Enum) else value
        return [] if raw in allowed else [f"{path}: {value!r} not one of {sorted(allowed)}"]
    if hint is bool:
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean, got {value!r:.80}"]
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected an integer, got {value!r:.80}"]
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected a number, got {value!r:.80}"]
    if hint is str:
        return [] if isinstance(value, str) else [f"{path}: expected a string, got {value!r:.80}"]
    if isinstance(hint, type):
        if isinstance(value, dict) and hasattr(hint, "from_json"):
            # The SDK's decoders keep some lists of models (transformations) as raw JSON.
            decoded = hint.from_json(value)
            back = json.loads(json.dumps(decoded, cls=JSONEncoder))
            return _diff(value, back, path) + model_errors(decoded, path, value)
        if not isinstance(value, hint):
            return [f"{path}: expected {hint.__name__}, got {type(value).__name__}"]
        return model_errors(value, path)
    return []


def model_errors(obj: Any, path: str, given: dict[str, Any] | None = None) -> list[str]:
    """Type errors of a decoded SDK model and, with ``given`` (its JSON), missing
    required keys."""
    if isinstance(obj, UnknownDataquery) or not _is_model(obj):
        return []
    errors: list[str] = []
    cls = type(obj)
    hints = typing.get_type_hints(cls)
    keys = _json_keys(cls)
    for attr, hint in hints.items():
        value = getattr(obj, attr, None)
        optional = type(None) in typing.get_args(hint) or hint is Any
        key = keys.get(attr, attr)
        if given is not None and not optional and key not in given:
            errors.append(f"{path}: required key {key!r} missing")
        if value is None:
            continue
        sub_given = given.get(key) if isinstance(given, dict) else None
        p = f"{path}.{key}"
        if _is_model(value):
            if not _fits_class(value, hint):
                errors.append(f"{p}: {type(value).__name__} where {hint} is expected")
            errors += model_errors(value, p, sub_given if isinstance(sub_given, dict) else None)
        elif isinstance(value, list) and any(_is_model(v) for v in value):
            items = sub_given if isinstance(sub_given, list) else []
            for i, v in enumerate(value):
                g = items[i] if i < len(items) and isinstance(items[i], dict) else None
                errors += model_errors(v, f"{p}[{i}]", g) if _is_model(v) else \
                    _type_errors(v, _list_item(hint) or Any, f"{p}[{i}]")
        else:
            errors += _type_errors(value, hint, p)
    return errors


def _fits_class(value: Any, hint: Any) -> bool:
    """Is ``value`` of a model class the hint allows (``object``/``Any``: any)?"""
    if hint is Any or hint is object:
        return True
    allowed = [h for h in (hint, *typing.get_args(hint)) if isinstance(h, type)]
    for h in list(typing.get_args(hint)):
        allowed += [a for a in typing.get_args(h) if isinstance(a, type)]
    return any(isinstance(value, a) for a in allowed) or object in allowed


def _list_item(hint: Any) -> Any:
    for h in (hint, *typing.get_args(hint)):
        if typing.get_origin(h) is list:
            return typing.get_args(h)[0]
    return None


def _diff(given: Any, back: Any, path: str) -> list[str]:
    """Keys and values of ``given`` that the round trip lost or changed."""
    if isinstance(given, dict):
        if not isinstance(back, dict):
            return [f"{path}: became {type(back).__name__}"]
        out = []
        for k, v in given.items():
            if k not in back:
                out.append(f"{path}.{k}: not in Grafana's model (dropped)")
            else:
                out += _diff(v, back[k], f"{path}.{k}")
        return out
    if isinstance(given, list):
        if not isinstance(back, list) or len(back) != len(given):
            return [f"{path}: list changed"]
        return [e for i, (a, b) in enumerate(zip(given, back, strict=True))
                for e in _diff(a, b, f"{path}[{i}]")]
    if given != back or (type(given) is not type(back) and not (
            isinstance(given, int | float) and isinstance(back, int | float))):
        return [f"{path}: {given!r:.60} came back as {back!r:.60}"]
    return []


def dashboard_errors(data: dict[str, Any]) -> list[str]:
    """Every way ``data`` departs from Grafana's dashboard model (empty: it conforms)."""
    model = Dashboard.from_json(data)
    back = json.loads(json.dumps(model, cls=JSONEncoder))
    errors = _diff(data, back, "$")
    errors += model_errors(model, "$", data)
    for i, panel in enumerate(model.panels or []):
        for j, target in enumerate(getattr(panel, "targets", None) or []):
            if not isinstance(target, cogvariants.Dataquery):
                errors.append(f"$.panels[{i}].targets[{j}]: not a data query")
    return errors
