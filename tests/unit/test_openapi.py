"""agent/openapi.json is a valid OpenAPI 3.0 document and says exactly what agent/api/ serves."""
from __future__ import annotations

import dataclasses
import json
import os

import pytest
from openapi_spec_validator import validate

from agent import spec
from agent.api import router as api
from agent.model import ContainerInfo
from runtime import limits as rl

DOC_PATH = os.path.join(os.path.dirname(os.path.dirname(api.__file__)), "openapi.json")  # agent/openapi.json


@pytest.fixture(scope="module")
def doc():
    with open(DOC_PATH) as f:
        return json.load(f)


def _openapi_path(pattern) -> str:
    return "/" + "/".join(p for p in pattern)


def test_document_is_valid_openapi(doc):
    validate(doc)
    assert doc["openapi"].startswith("3.0")


def test_every_route_is_documented_and_every_documented_route_exists(doc):
    served = {(_openapi_path(pat), m.lower()) for pat, methods in api.ROUTES for m in methods}
    documented = {(p, m) for p, item in doc["paths"].items() for m in item if m != "parameters"}
    assert served == documented


def test_operation_ids_are_unique(doc):
    ids = [op["operationId"] for item in doc["paths"].values() for m, op in item.items() if m != "parameters"]
    assert len(ids) == len(set(ids))


def test_query_parameters_match_what_the_server_accepts(doc):
    for pat, methods in api.ROUTES:
        item = doc["paths"][_openapi_path(pat)]
        for method, handler in methods.items():
            op = item[method.lower()]
            params = op.get("parameters", []) + item.get("parameters", [])
            documented = {p["name"] for p in params if p["in"] == "query"}
            if handler not in api.QUERY_PARAMS:  # passed through to the ledger
                assert handler == "usage" and documented == set()
                continue
            assert documented == set(api.QUERY_PARAMS[handler]), handler


def test_name_parameter_pattern_is_the_servers(doc):
    for path, item in doc["paths"].items():
        for p in item.get("parameters", []):
            if p["name"] == "name":
                assert p["schema"]["pattern"] == "^" + api.NAME_RE.pattern + "$"
                assert p["schema"]["pattern"] == "^" + spec.NAME_RE.pattern + "$"


def test_create_body_has_exactly_the_fields_spec_accepts(doc):
    props = doc["components"]["schemas"]["ContainerCreate"]["properties"]
    assert set(props) == spec.JSON_KEYS | {"detach"}


def test_limits_input_has_exactly_the_keys_limits_parse_accepts(doc):
    props = set(doc["components"]["schemas"]["LimitsInput"]["properties"])
    accepted = set(rl._ALIASES) | {f.name for f in dataclasses.fields(rl.Limits)} | {"cpus"}
    assert props == accepted
    for key in props:  # and Limits.parse really knows each one
        try:
            rl.Limits.parse(**{key: "bogus-value"})
        except rl.LimitError as e:
            assert "is not a known limit" not in str(e), key


def test_limits_schema_lists_every_limits_field(doc):
    props = set(doc["components"]["schemas"]["Limits"]["properties"])
    assert props == {f.name for f in dataclasses.fields(rl.Limits)}


def test_container_schema_lists_every_container_info_field(doc):
    props = set(doc["components"]["schemas"]["Container"]["properties"])
    assert props == {f.name for f in dataclasses.fields(ContainerInfo)}


def test_every_operation_documents_its_errors_as_json(doc):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            assert "403" in op["responses"] and "default" in op["responses"], (path, method)
            for status, resp in op["responses"].items():
                if status.startswith(("4", "5")) or status == "default":
                    schema = resp["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (path, method, status)
