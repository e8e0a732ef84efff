"""Shared building blocks of the kubetune API: the model base class and validated scalar types.

Every kind's spec and status is built from these, so the rules for names, paths and quantities are
written once and reused by the operator, the trainer, the server and the CRD generator.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic_core import to_jsonable_python

API_GROUP = "kubetune.dev"
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"


class ApiModel(BaseModel):
    """Base of every API object: camelCase on the wire, unknown fields rejected, docstrings as docs."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The camelCase JSON form, without unset optional fields (what a user would write)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def nested_default(factory: type[BaseModel]) -> Any:
    """A field whose omitted object is filled with its own defaults, here and in the CRD.

    The CRD's `default` is the complete object (the model's defaults by wire name, e.g. `{maxNewTokens: 256,
    maxNewTokensLimit: 2048, ...}`), not `{}`. kube-apiserver validates every default AS WRITTEN when the CRD is
    created, against its node's schema and CEL rules, without first applying the nested defaults inside it: a
    `default: {}` on a node whose rule reads its fields (`self.maxNewTokens <= self.maxNewTokensLimit`) fails with
    "no such key" and the whole CRD is refused. Guarding every rule with `has()` would also pass, but each rule
    (and every future one) would have to remember it, a guarded rule passes vacuously on the half-empty objects it
    exists to check, and `kubectl explain` would still show `{}`. A complete default is accepted by the server as
    is, shows users the real values, and is what the models fill in (tests/api/test_crd_defaults.py checks all
    three). Computed when the schema is generated, so it follows the model's defaults; dumped in Python mode, then
    made JSON the way pydantic writes the fields' own defaults, so numbers read as declared (`alpha: 32`, as on the
    `alpha` field, not `32.0`).
    """

    def complete_default(schema: dict[str, Any]) -> None:
        schema["default"] = to_jsonable_python(factory().model_dump(by_alias=True, exclude_none=True))

    return Field(default_factory=factory, json_schema_extra=complete_default)


_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_HF_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
_QUANTITY = re.compile(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def _dns1123_label(value: str) -> str:
    if len(value) > 63 or not _DNS1123_LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a valid DNS-1123 label: use at most 63 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit (e.g. 'sentiment-v1')"
        )
    return value


def _dns1123_subdomain(value: str) -> str:
    if len(value) > 253 or not _DNS1123_SUBDOMAIN.match(value):
        raise ValueError(
            f"{value!r} is not a valid Kubernetes object name: use at most 253 lower-case letters, digits, "
            "'-' and '.', starting and ending with a letter or digit (e.g. 'hf-token')"
        )
    return value


def _hf_repo_id(value: str) -> str:
    if not _HF_REPO_ID.match(value) or ".." in value or "--" in value:
        raise ValueError(
            f"{value!r} is not a Hugging Face repository id: expected 'org/name' of letters, digits, '-', '_' "
            "and '.' (e.g. 'meta-llama/Llama-2-7b-hf'); for a model on a volume use 'pvc' instead"
        )
    return value


def _relative_path(value: str) -> str:
    if value.startswith("/") or "\\" in value:
        raise ValueError(f"{value!r} must be a path relative to the volume root, without a leading '/'")
    if any(part == ".." for part in value.split("/")):
        raise ValueError(f"{value!r} must not contain '..': paths stay inside their volume")
    if "\x00" in value:
        raise ValueError("path must not contain NUL characters")
    return value.strip("/")


def _https_url(value: str) -> str:
    if not value.startswith("https://") or len(value) <= len("https://"):
        raise ValueError(f"{value!r} is not allowed: dataset URLs must use https:// (plain http is refused)")
    if any(ch.isspace() for ch in value):
        raise ValueError(f"{value!r} is not a valid URL: it contains white space")
    return value


def _quantity(value: int | str) -> str:
    text = str(value)
    if not _QUANTITY.match(text):
        raise ValueError(
            f"{value!r} is not a Kubernetes quantity: use a number with an optional suffix "
            "such as '500m', '4', '16Gi' or '1.5G'"
        )
    return text


def _data_key(value: str) -> str:
    if len(value) > 253 or not _SECRET_KEY.match(value):
        raise ValueError(f"{value!r} is not a valid key: use letters, digits, '-', '_' and '.'")
    return value


def _int_as_text(value: Any) -> Any:
    """Accept `cpu: 4` as well as `cpu: "4"`, as kubectl users write both."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


# Each type validates in Python with a message that explains the rule, and carries the same rule into the
# CRD (a pattern, or a CEL rule where a pattern cannot say it) so the API server rejects it too.
_LABEL_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_SUBDOMAIN_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_HF_REPO_PATTERN = "^[A-Za-z0-9][-A-Za-z0-9_.]*/[A-Za-z0-9][-A-Za-z0-9_.]*$"
_RELATIVE_PATH_RULE = {
    "rule": "!self.startsWith('/') && !self.matches('(^|/)[.][.](/|$)')",
    "message": "must be a path relative to the volume root, without a leading '/' or '..'",
}

Dns1123Label = Annotated[
    str,
    Field(min_length=1, max_length=63, json_schema_extra={"pattern": _LABEL_PATTERN}),
    AfterValidator(_dns1123_label),
]
ObjectName = Annotated[
    str,
    Field(min_length=1, max_length=253, json_schema_extra={"pattern": _SUBDOMAIN_PATTERN}),
    AfterValidator(_dns1123_subdomain),
]
HfRepoId = Annotated[
    str,
    Field(min_length=3, max_length=193, json_schema_extra={"pattern": _HF_REPO_PATTERN}),
    AfterValidator(_hf_repo_id),
]
RelativePath = Annotated[
    str,
    Field(max_length=1024, json_schema_extra={"x-kubernetes-validations": [_RELATIVE_PATH_RULE]}),
    AfterValidator(_relative_path),
]
HttpsUrl = Annotated[
    str,
    Field(min_length=9, max_length=2048, json_schema_extra={"pattern": "^https://[^\\s]+$"}),
    AfterValidator(_https_url),
]
Quantity = Annotated[
    int | str,
    BeforeValidator(_int_as_text),
    AfterValidator(_quantity),
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]
DataKey = Annotated[
    str,
    Field(min_length=1, max_length=253, json_schema_extra={"pattern": "^[-._a-zA-Z0-9]+$"}),
    AfterValidator(_data_key),
]
ShortText = Annotated[str, Field(max_length=253)]


# Label keys and values, and extended resource names, as the API server checks them in pods (a pod template
# that breaks them is refused when the operator creates the Job or Deployment; the CRD refuses them first).
_NAME_PART = "([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]"
_PREFIX_PART = "[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL_KEY_PATTERN = f"^({_PREFIX_PART}/)?{_NAME_PART}$"
_LABEL_VALUE_PATTERN = "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_EXTENDED_RESOURCE_PATTERN = f"^{_PREFIX_PART}/{_NAME_PART}$"
_LABEL_KEY = re.compile(_LABEL_KEY_PATTERN)
_LABEL_VALUE = re.compile(_LABEL_VALUE_PATTERN)
_EXTENDED_RESOURCE = re.compile(_EXTENDED_RESOURCE_PATTERN)
_LABEL_KEY_RULE = (
    "must be a valid label key: an optional DNS subdomain prefix and '/', then a name of at most 63 letters, "
    "digits, '-', '_' or '.' that starts and ends with a letter or digit (e.g. 'nvidia.com/gpu.product')"
)
_LABEL_KEYS_CEL = {"rule": f"self.all(k, k.matches('{_LABEL_KEY_PATTERN}'))", "message": f"every key {_LABEL_KEY_RULE}"}
_EXTENDED_RESOURCE_CEL = {
    "rule": "!self.contains('kubernetes.io/') && !self.startsWith('requests.')",
    "message": "must be an extended resource name outside the kubernetes.io domain (e.g. 'nvidia.com/gpu')",
}


def _label_key(value: str) -> str:
    prefix, _, name = value.rpartition("/")
    if len(prefix) > 253 or len(name) > 63 or not _LABEL_KEY.match(value):
        raise ValueError(f"{value!r} {_LABEL_KEY_RULE}")
    return value


def _optional_label_key(value: str) -> str:
    return _label_key(value) if value else value


def _label_value(value: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise ValueError(
            f"{value!r} is not a valid label value: at most 63 letters, digits, '-', '_' or '.', starting and "
            "ending with a letter or digit (or empty)"
        )
    return value


def _label_keys(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        _label_key(key)
    return value


def _extended_resource(value: str) -> str:
    prefix, _, name = value.rpartition("/")
    if len(prefix) > 253 or len(name) > 63 or not _EXTENDED_RESOURCE.match(value):
        raise ValueError(
            f"{value!r} is not an extended resource name: use a lower-case domain, '/', and a name "
            "(e.g. 'nvidia.com/gpu', 'amd.com/gpu', 'nvidia.com/mig-1g.10gb')"
        )
    if "kubernetes.io/" in value or value.startswith("requests."):
        raise ValueError(f"{value!r} {_EXTENDED_RESOURCE_CEL['message']}")
    return value


LabelKey = Annotated[
    str,
    Field(min_length=1, max_length=317, json_schema_extra={"pattern": _LABEL_KEY_PATTERN}),
    AfterValidator(_label_key),
]
TolerationKey = Annotated[
    str,
    Field(max_length=317, json_schema_extra={"pattern": f"^(({_PREFIX_PART}/)?{_NAME_PART})?$"}),
    AfterValidator(_optional_label_key),
]
"""A label key, or empty (with operator Exists: every taint)."""
LabelValue = Annotated[
    str, Field(max_length=63, json_schema_extra={"pattern": _LABEL_VALUE_PATTERN}), AfterValidator(_label_value)
]
NodeSelector = Annotated[
    dict[str, LabelValue],
    Field(max_length=64, json_schema_extra={"x-kubernetes-validations": [_LABEL_KEYS_CEL]}),
    AfterValidator(_label_keys),
]
ExtendedResourceName = Annotated[
    str,
    Field(
        min_length=3,
        max_length=253,
        json_schema_extra={"pattern": _EXTENDED_RESOURCE_PATTERN, "x-kubernetes-validations": [_EXTENDED_RESOURCE_CEL]},
    ),
    AfterValidator(_extended_resource),
]
