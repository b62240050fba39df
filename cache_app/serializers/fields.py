"""Strict JSON fields: a request is accepted exactly when it matches the OpenAPI schema.

DRF's fields coerce (``"7"`` is an integer, ``1`` a string, ``"yes"`` a boolean); the schema
says they are not, so a client generated from it would be told one thing and served another.
These fields accept only the JSON type the schema names, and every other rule they apply is one
the schema states too (bounds, ``pattern``, ``enum``). ``StrictSerializer`` refuses unknown
fields, and the schema says so (``additionalProperties: false``, see ``cache_app.api.schema``).
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.core.validators import ProhibitNullCharactersValidator, RegexValidator
from rest_framework import serializers

from cache_app.core import conf

# Python's whitespace (str.isspace, what str.strip() removes), spelled out so that every regex
# engine (Python's, ECMAScript's, Rust's) reads the schema's pattern the same way.
_SPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# No NUL (Postgres text cannot hold one) and at least one character that is not whitespace.
NOT_BLANK = rf"^[^\x00]*[^\x00{_SPACE}][^\x00]*$"
# No NUL; may be empty or blank.
NO_NUL = r"^[^\x00]*$"
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_UUID = re.compile(UUID_PATTERN)


class StrictCharField(serializers.CharField):
    """A JSON string, matched against ``pattern`` (the schema's), never trimmed.

    ``limit_setting`` names the MGECACHE setting that bounds its length (read when the
    serializer is built, so a settings change applies to the next request).
    """

    def __init__(self, *, pattern: str = NOT_BLANK, limit_setting: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        self.limit_setting = limit_setting
        if limit_setting is not None:
            kwargs["max_length"] = int(conf.get(limit_setting))
        kwargs.setdefault("allow_blank", pattern != NOT_BLANK)
        super().__init__(**kwargs)
        # The pattern says where NUL may not appear; DRF's own NUL check would say it twice.
        self.validators = [v for v in self.validators if not isinstance(v, ProhibitNullCharactersValidator)]
        message = "May not contain NUL characters." if pattern == NO_NUL else "Must not be blank or contain NUL."
        self.validators.append(RegexValidator(pattern, message=message, code="invalid"))

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer (not a string, a boolean or a float)."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    """A JSON number (not a string or a boolean)."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """``true`` or ``false`` (not ``1``, ``"yes"`` or ``"true"``)."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictChoiceField(serializers.ChoiceField):
    """One of the choices, as a JSON string."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid_choice", input=str(data)[:100])
        return super().to_internal_value(data)


class StrictUUIDField(serializers.UUIDField):
    """A UUID in its hyphenated form, as a JSON string (not an integer, hex or URN)."""

    def to_internal_value(self, data: Any) -> uuid.UUID:
        if not isinstance(data, str) or not _UUID.match(data):
            self.fail("invalid", value=str(data)[:100])
        return uuid.UUID(data)


class LeanSerializer(serializers.Serializer):
    """A Serializer whose plain fields are copied shallowly per instance, and rendered without binding.

    DRF deep-copies every declared field for each serializer instance, re-running each field's
    ``__init__``: on a cache hit that was a fifth of the request's CPU. A plain field holds no
    per-instance state until ``bind()`` sets its name and parent on the copy, so a shallow copy
    serves. Fields that hold other fields (serializers, ``child``) are still deep-copied, i.e. built
    afresh; a field that reads a setting when built (``limit_setting``) is rebuilt only when that
    setting has changed since it was last built.

    Output: when every field is plain (no ``source``, no nesting, nothing write-only, no attribute
    fetching or request of its own), an instance is rendered straight from the declared fields,
    which hold no state ``to_representation`` reads; anything else (a missing attribute or a method
    included) takes DRF's own path.
    """

    # A memo, not state: each entry is checked against the current setting before use.
    # (class, field name) -> the field as last built for its limit setting's value.
    _rebuilt: dict[tuple[type, str], serializers.Field] = {}
    _renders_plainly = False  # set per subclass, from its declared fields, when it is defined

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._renders_plainly = _plain_fields(cls)

    def get_fields(self) -> dict[str, serializers.Field]:
        return {name: self._copy(name, field) for name, field in self._declared_fields.items()}

    def _copy(self, name: str, field: serializers.Field) -> serializers.Field:
        if _holds_fields(field):
            return copy.deepcopy(field)
        setting = getattr(field, "limit_setting", None)
        if setting is not None:
            field = self._rebuilt.get((type(self), name), field)
            if getattr(field, "max_length", None) != int(conf.get(setting)):
                # deepcopy re-runs __init__, which reads the setting; kept for the next instances
                field = self._rebuilt[(type(self), name)] = copy.deepcopy(field)
        return copy.copy(field)

    def to_representation(self, instance: Any) -> Any:
        if not self._renders_plainly:
            return super().to_representation(instance)
        fields = self._declared_fields
        try:
            if isinstance(instance, Mapping):
                values = {name: instance[name] for name in fields}
            else:
                values = {name: getattr(instance, name) for name in fields}
        except (KeyError, AttributeError, ObjectDoesNotExist):
            return super().to_representation(instance)  # DRF applies defaults, nulls and omissions
        if any(callable(value) for value in values.values()):
            return super().to_representation(instance)  # DRF calls a method attribute
        return {
            name: None if value is None else fields[name].to_representation(value) for name, value in values.items()
        }


def _holds_fields(field: serializers.Field) -> bool:
    """A serializer, or a field with a ``child`` (lists, dicts) or a ``child_relation`` (many related)."""
    return isinstance(field, serializers.BaseSerializer) or hasattr(field, "child") or hasattr(field, "child_relation")


def _plain_fields(cls: type[LeanSerializer]) -> bool:
    """Whether ``cls`` can render from its declared fields (see LeanSerializer).

    Fields that fetch their own attribute (related fields) or read the request (URLs), and
    serializers that choose their fields per instance, need DRF's binding.
    """
    return cls.get_fields is LeanSerializer.get_fields and all(
        field.source is None
        and not field.write_only
        and not _holds_fields(field)
        and type(field).get_attribute is serializers.Field.get_attribute
        and not isinstance(field, (serializers.FileField, serializers.RelatedField))
        for field in cls._declared_fields.values()
    )


class StrictSerializer(LeanSerializer):
    """A JSON object with only the declared fields: an unknown field is a 400, not silently dropped."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(str(name) for name in data if name not in self.fields)
            if unknown:
                raise serializers.ValidationError({name[:100]: ["Unknown field."] for name in unknown[:20]})
        return super().to_internal_value(data)
