"""A MatrixSpec as YAML (or as plain JSON-ready data), for review, versioning and import/export.

The text form is canonical: keys in a fixed order, values equal to their defaults left
out (but for the few a reader always wants: name, default_outcome, a tier's required and
sla_minutes), name sets sorted, decimals written as strings (YAML floats would round them). So
`load_matrix(dump_matrix(spec)) == spec` for every valid spec, and `dump_matrix(load_matrix(text)) == text`
for text that dump_matrix wrote. Reading is strict: an unknown key or a wrong type raises a
MatrixError whose path names the field ("rules[2].amount_min: not a decimal"), because a
typo in a governance rule must not silently widen it. Reading and writing use subclasses of
PyYAML's SafeLoader / SafeDumper (what safe_load / safe_dump use): plain data only, plus a
refusal of duplicate keys and aliases, and inline lists of names for readability.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from decimal import Decimal
from typing import Any

import yaml

from policies.matrix_spec import (
    Budget,
    MatrixError,
    MatrixSpec,
    MatrixTest,
    Rule,
    Tier,
    to_decimal,
    validate,
)

__all__ = ["dump_matrix", "load_matrix", "matrix_to_dict", "matrix_from_dict"]


# ---------------------------------------------------------------------------- value codecs
# Each codec turns plain data into a spec value (load) and back (dump); `path` locates errors.


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _load_str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise MatrixError(path, "not a string")
    return value


def _load_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MatrixError(path, "not an integer")
    return value


def _load_number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MatrixError(path, "not a number")
    return float(value)


def _load_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise MatrixError(path, "not true or false")
    return value


def _load_decimal(value: Any, path: str) -> Decimal:
    if isinstance(value, float):
        raise MatrixError(path, f"not a decimal (write it as a string, e.g. '{value}')")
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise MatrixError(path, "not a decimal")
    try:
        return to_decimal(value)
    except ValueError:
        raise MatrixError(path, "not a decimal") from None


def _dump_decimal(value: Any, path: str) -> str:
    if not isinstance(value, Decimal):
        raise MatrixError(path, "not a decimal")
    return str(value)


def _load_names(value: Any, path: str) -> frozenset[str]:
    return frozenset(_load_name_list(value, path))


def _dump_names(value: Any, path: str) -> list[str]:
    if not isinstance(value, frozenset) or not all(isinstance(v, str) for v in value):
        raise MatrixError(path, "not a set of strings")
    return sorted(value)


def _load_name_list(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise MatrixError(path, "not a list of strings")
    for i, item in enumerate(value):
        _load_str(item, f"{path}[{i}]")
    return tuple(value)


def _dump_name_list(value: Any, path: str) -> list[str]:
    if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
        raise MatrixError(path, "not a tuple of strings")
    return list(value)


def _load_facts(value: Any, path: str) -> dict[str, Any]:
    """Test facts stay plain data; validate() checks them against Facts."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise MatrixError(path, "not a mapping of fact names")
    return dict(value)


def _dump_facts(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MatrixError(path, "not a mapping of plain values")
    return dict(value)


def _identity(value: Any, path: str) -> Any:
    return value


def _objects(cls: type) -> tuple[Callable[[Any, str], Any], Callable[[Any, str], Any]]:
    """Codec for a list of nested dataclass objects (tiers, rules, budgets, tests)."""

    def load(value: Any, path: str) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise MatrixError(path, "not a list")
        return tuple(_load_object(cls, item, f"{path}[{i}]") for i, item in enumerate(value))

    def dump(value: Any, path: str) -> list[dict[str, Any]]:
        if not isinstance(value, tuple):
            raise MatrixError(path, "not a tuple")
        return [_dump_object(cls, item, f"{path}[{i}]") for i, item in enumerate(value)]

    return load, dump


# ---------------------------------------------------------------------------- schemas


@dataclass(frozen=True)
class _Key:
    name: str
    load: Callable[[Any, str], Any]
    dump: Callable[[Any, str], Any] = _identity
    always: bool = False  # written even when equal to its default, because a reader needs it


STR, INT, NUMBER, BOOL = (_load_str,), (_load_int,), (_load_number,), (_load_bool,)
DECIMAL, NAMES, NAME_LIST = (_load_decimal, _dump_decimal), (_load_names, _dump_names), (_load_name_list, _dump_name_list)

_SCHEMAS: dict[type, tuple[_Key, ...]] = {
    Tier: (
        _Key("group", *STR), _Key("required", *INT, always=True), _Key("mode", *STR), _Key("sla_minutes", *INT, always=True),
        _Key("escalation_group", *STR), _Key("bulk_allowed", *BOOL), _Key("remind_at", *NUMBER),
        _Key("signed_links", *BOOL),
    ),
    Rule: (
        _Key("name", *STR), _Key("description", *STR), _Key("connectors", *NAMES), _Key("actions", *NAMES),
        _Key("agents", *NAMES), _Key("target_types", *NAMES), _Key("currency", *STR), _Key("amount_min", *DECIMAL),
        _Key("amount_max", *DECIMAL), _Key("confidence_min", *NUMBER), _Key("confidence_max", *NUMBER),
        _Key("impacts", *NAMES), _Key("fields_any", *NAMES), _Key("touches_sensitive", *BOOL),
        _Key("missing_facts", *BOOL), _Key("amount_mismatch", *BOOL), _Key("override_rate_min", *NUMBER), _Key("budget_exceeded", *STR),
        _Key("conflicting_record", *BOOL), _Key("overrides_min", *INT), _Key("burst_ratio_min", *NUMBER),
        _Key("unusual_amount", *BOOL), _Key("first_actions", *INT),
        _Key("outcome", *STR), _Key("sample_percent", *INT), _Key("tiers", *_objects(Tier)), _Key("max_age_minutes", *INT),
    ),
    Budget: (
        _Key("name", *STR), _Key("metric", *STR), _Key("cap", *DECIMAL), _Key("window_minutes", *INT),
        _Key("connectors", *NAMES), _Key("actions", *NAMES), _Key("agents", *NAMES),
    ),
    MatrixTest: (
        _Key("name", *STR), _Key("facts", _load_facts, _dump_facts), _Key("expect", *STR),
        _Key("expect_rules", *NAME_LIST),
    ),
    MatrixSpec: (
        _Key("version", *INT), _Key("name", *STR, always=True), _Key("default_outcome", *STR, always=True),
        _Key("default_tiers", *_objects(Tier)), _Key("sensitive_fields", *NAMES), _Key("required_facts", *NAME_LIST),
        _Key("budgets", *_objects(Budget)), _Key("rules", *_objects(Rule)), _Key("tests", *_objects(MatrixTest)),
        _Key("default_max_age_minutes", *INT), _Key("info_wait_minutes", *INT),
    ),
}


def _defaults(cls: type) -> dict[str, Any]:
    """Each field's default, MISSING for required ones."""
    return {f.name: f.default for f in fields(cls)}


_DEFAULTS = {cls: _defaults(cls) for cls in _SCHEMAS}


def _load_object(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise MatrixError(path, "not a mapping")
    schema, defaults = _SCHEMAS[cls], _DEFAULTS[cls]
    known = [key.name for key in schema]
    for name in data:
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f"; did you mean {close[0]}?" if close else f" (known: {', '.join(known)})"
            raise MatrixError(_at(path, str(name)), "unknown key" + hint)
    kwargs = {}
    for key in schema:
        where = _at(path, key.name)
        if key.name not in data:
            if defaults[key.name] is MISSING:
                raise MatrixError(where, "required")
            continue
        value = data[key.name]
        if value is None and defaults[key.name] is None:
            kwargs[key.name] = None  # an explicit null is the same as leaving the key out
        else:
            kwargs[key.name] = key.load(value, where)
    return cls(**kwargs)


def _dump_object(cls: type, obj: Any, path: str) -> dict[str, Any]:
    if not isinstance(obj, cls):
        raise MatrixError(path, f"not a {cls.__name__}")
    defaults = _DEFAULTS[cls]
    out = {}
    for key in _SCHEMAS[cls]:
        value = getattr(obj, key.name)
        if key.always or defaults[key.name] is MISSING or value != defaults[key.name]:
            out[key.name] = None if value is None else key.dump(value, _at(path, key.name))
    return out


# ---------------------------------------------------------------------------- public API


def matrix_to_dict(spec: MatrixSpec) -> dict[str, Any]:
    """Plain, JSON-ready data in canonical form (what dump_matrix writes as YAML)."""
    return _dump_object(MatrixSpec, spec, "")


def matrix_from_dict(data: Any, *, check: bool = True) -> MatrixSpec:
    """A spec from plain data. Raises MatrixError for structure errors, and (if check) the first validate() error."""
    spec = _load_object(MatrixSpec, data, "")
    if check:
        errors = validate(spec)
        if errors:
            raise errors[0]
    return spec


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes lists of plain scalars inline ("actions: [credit, refund]") and the rest as blocks."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    inline = all(isinstance(item, (str, int, float, bool)) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=inline)


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    # PyYAML writes these raw in plain and single-quoted style, where a reader takes them for line breaks
    style = '"' if any(ch in data for ch in "\x85\u2028\u2029\ufeff") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(str, _represent_str)


def dump_matrix(spec: MatrixSpec) -> str:
    """Canonical YAML text of a spec."""
    return yaml.dump(
        matrix_to_dict(spec), Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100
    )


class _Loader(yaml.SafeLoader):
    """safe_load, stricter: a repeated key would silently override the first (say a second amount_min),
    and aliases can make nested data exponentially large, so both are refused."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            raise MatrixError(_line(self.peek_event().start_mark), "YAML aliases (*name) are not allowed in a matrix")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str):
                if key in seen:
                    raise MatrixError(_line(key_node.start_mark), f"duplicate key {key}")
                seen.add(key)
        return super().construct_mapping(node, deep)


def _line(mark: Any) -> str:
    return f"line {mark.line + 1}" if mark is not None else ""


def load_matrix(text: str, *, check: bool = True) -> MatrixSpec:
    """A spec from YAML text. With check=False only structure is checked, so validate() can list every problem."""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        where = _line(getattr(exc, "problem_mark", None))
        raise MatrixError(where, f"invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise MatrixError("", "a matrix must be a YAML mapping")
    return matrix_from_dict(data, check=check)
