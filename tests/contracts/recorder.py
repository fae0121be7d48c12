"""Records every exchange that goes through the one HTTP seam and checks it
against the JSON Schemas transcribed from the providers' descriptions
(``tests/contracts/schemas/<provider>.json``):

- a request body against the operation's ``request`` schema, and the query
  string against its ``query`` schema where one is transcribed (each
  parameter as the list of its values, as the URL carries them);
- a response against the schema of its status (errors against the
  provider's error schema);
- every key an adapter reads from a decoded answer (``HttpAdapter.decode``
  hands it a ``RecordingDict``) against the properties that schema declares,
  so an adapter relying on a field the provider does not document fails;
- an exchange with no operation in any schema is itself a violation.

``ContractRecorder.install(monkeypatch)`` hooks ``HttpClient.request`` and
``HttpAdapter.decode``; ``violations`` lists what broke the contract.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import requests

from connectors.http import HttpClient
from connectors.http_adapter import HttpAdapter

SCHEMAS = Path(__file__).parent / "schemas"
PROVIDERS = ("github_actions", "cursor", "devin")


@dataclass(frozen=True)
class Operation:
    provider_id: str
    method: str
    path: str
    pattern: re.Pattern[str]
    request: dict[str, Any] | None
    query: dict[str, Any] | None
    responses: dict[str, dict[str, Any] | None]
    error: dict[str, Any]
    definitions: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.provider_id} {self.method} {self.path}"

    def rooted(self, schema: dict[str, Any]) -> dict[str, Any]:
        """``schema`` with the document's definitions, so ``$ref`` resolves."""
        return {"definitions": self.definitions, **schema}


def _pattern(template: str) -> re.Pattern[str]:
    regex = re.sub(r"\{[^}]+\+\}", ".+", template)
    regex = re.sub(r"\{[^}]+\}", "[^/]+", regex)
    return re.compile(f"^{regex}$")


@cache
def operations() -> tuple[Operation, ...]:
    found = []
    for provider_id in PROVIDERS:
        document = json.loads((SCHEMAS / f"{provider_id}.json").read_text())
        for op in document["operations"]:
            found.append(
                Operation(
                    provider_id,
                    op["method"],
                    op["path"],
                    _pattern(op["path"]),
                    op.get("request"),
                    op.get("query"),
                    op["responses"],
                    document["error"],
                    document.get("definitions", {}),
                )
            )
    return tuple(found)


def find_operation(method: str, path: str) -> Operation | None:
    # The most specific template wins (``/v1/agents/{id}`` before ``{path+}``).
    matches = [op for op in operations() if op.method == method and op.pattern.match(path)]
    return min(matches, key=lambda op: op.path.count("{"), default=None)


def properties_of(schema: Any, definitions: dict[str, Any]) -> set[str] | None:
    """Property names a schema declares (through ``$ref`` and ``allOf``); None
    when it declares none (anything goes)."""
    if not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        return properties_of(definitions[schema["$ref"].rsplit("/", 1)[-1]], definitions)
    names: set[str] | None = None
    if "properties" in schema:
        names = set(schema["properties"])
    for part in schema.get("allOf", ()):
        more = properties_of(part, definitions)
        if more is not None:
            names = (names or set()) | more
    return names


def subschema(schema: Any, key: str, definitions: dict[str, Any]) -> Any:
    if not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        return subschema(definitions[schema["$ref"].rsplit("/", 1)[-1]], key, definitions)
    found = (schema.get("properties") or {}).get(key)
    if found is None:
        for part in schema.get("allOf", ()):
            found = found or subschema(part, key, definitions)
    return found


def items_of(schema: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(schema, dict) and "$ref" in schema:
        return items_of(definitions[schema["$ref"].rsplit("/", 1)[-1]], definitions)
    return schema.get("items") if isinstance(schema, dict) else None


class RecordingDict(dict):
    """A decoded answer that reports reads of keys its schema does not declare."""

    def __init__(self, data: dict, schema: Any, where: str, recorder: ContractRecorder, defs):
        super().__init__(
            {
                k: recorder.wrap(v, subschema(schema, k, defs), f"{where}.{k}", defs)
                for k, v in data.items()
            }
        )
        self._schema, self._where, self._recorder, self._defs = schema, where, recorder, defs

    def _note(self, key: Any) -> None:
        declared = properties_of(self._schema, self._defs)
        if declared is not None and key not in declared:
            self._recorder.violations.append(
                f"adapter read {self._where}.{key}, which the schema does not declare"
            )

    def get(self, key: Any, default: Any = None) -> Any:
        self._note(key)
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self._note(key)
        return super().__getitem__(key)

    def __contains__(self, key: Any) -> bool:
        self._note(key)
        return super().__contains__(key)


@dataclass
class Exchange:
    operation: str
    status: int
    request_body: Any = None


@dataclass
class ContractRecorder:
    exchanges: list[Exchange] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def install(self, monkeypatch) -> ContractRecorder:
        recorder, original_request, original_decode = self, HttpClient.request, HttpAdapter.decode

        def request(client: HttpClient, method: str, path: str, **kwargs: Any):
            response = original_request(client, method, path, **kwargs)
            recorder.record(client, method, path, kwargs, response)
            return response

        def decode(adapter: HttpAdapter, response: requests.Response, what: str):
            body = original_decode(adapter, response, what)
            operation = recorder.operation_of(response)
            schema = operation.responses.get(str(response.status_code)) if operation else None
            if operation is None or schema is None:
                return body
            return recorder.wrap(body, schema, operation.name, operation.definitions)

        monkeypatch.setattr(HttpClient, "request", request)
        monkeypatch.setattr(HttpAdapter, "decode", decode)
        return self

    @staticmethod
    def operation_of(response: requests.Response) -> Operation | None:
        request = response.request
        if request is None:
            return None
        return find_operation(str(request.method), _api_path(str(request.url)))

    def wrap(self, value: Any, schema: Any, where: str, defs: dict[str, Any]) -> Any:
        if isinstance(value, dict) and not isinstance(value, RecordingDict):
            return RecordingDict(value, schema, where, self, defs)
        if isinstance(value, list):
            item = items_of(schema, defs)
            return [self.wrap(v, item, f"{where}[]", defs) for v in value]
        return value

    def record(self, client: HttpClient, method: str, path: str, kwargs, response) -> None:
        url = client.url(path)
        api_path = _api_path(url, prefix=urlsplit(client.base_url).path)
        operation = find_operation(method, api_path)
        if operation is None:
            self.violations.append(f"no schema for {method} {api_path}")
            return
        body = kwargs.get("json")
        self.exchanges.append(Exchange(operation.name, response.status_code, body))
        if operation.request is not None and body is not None:
            self._check(body, operation.rooted(operation.request), f"{operation.name} request")
        if operation.query is not None:
            query = parse_qs(_query_of(response, url, kwargs), keep_blank_values=True)
            self._check(query, operation.rooted(operation.query), f"{operation.name} query")
        status = response.status_code
        if status >= 400:
            schema: dict[str, Any] | None = operation.error
        elif str(status) in operation.responses:
            schema = operation.responses[str(status)]
        else:
            self.violations.append(f"{operation.name}: undocumented status {status}")
            return
        if schema is None or kwargs.get("stream"):
            return  # no JSON body (204, 302) or a stream the adapter reads itself
        try:
            answer = response.json()
        except ValueError:
            self.violations.append(f"{operation.name}: HTTP {status} without a JSON body")
            return
        self._check(answer, operation.rooted(schema), f"{operation.name} {status}")

    def _check(self, instance: Any, schema: dict[str, Any], where: str) -> None:
        validator = jsonschema.Draft7Validator(schema)
        for error in validator.iter_errors(instance):
            at = "/".join(str(p) for p in error.absolute_path) or "(root)"
            self.violations.append(f"{where}: {at}: {error.message[:200]}")

    def operations_seen(self) -> set[str]:
        return {exchange.operation for exchange in self.exchanges}


def _query_of(response: requests.Response, url: str, kwargs: dict[str, Any]) -> str:
    """The query string sent: the prepared request's, else built from ``params``."""
    if response.request is not None and response.request.url:
        return urlsplit(str(response.request.url)).query
    prepared = requests.Request("GET", url, params=kwargs.get("params")).prepare()
    return urlsplit(str(prepared.url)).query


def _api_path(url: str, prefix: str = "") -> str:
    path = urlsplit(url).path
    prefix = prefix.rstrip("/")
    return path[len(prefix) :] if prefix and path.startswith(prefix) else path


def iter_schemas() -> Iterator[tuple[str, dict[str, Any]]]:
    for provider_id in PROVIDERS:
        yield provider_id, json.loads((SCHEMAS / f"{provider_id}.json").read_text())
