"""The management API's OpenAPI 3.1 document, derived from the route table and the msgspec structs.

Nothing here is written by hand that the code already says: paths and methods come from
``connector.http.management.routes``, request and response schemas from the structs the handlers
decode and encode (so the document cannot drift from the code). Stored records are shown as the API
returns them: camelCase properties, without the owning participant's id.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from connector.http.management import PREFIX, Route
from connector.store.records import (
    AgreementRecord,
    Asset,
    ContractDefinition,
    NegotiationEvent,
    NegotiationRecord,
    PolicyRecord,
)
from connector.store.repository import Peer, TokenInfo

REF = "#/components/schemas/{name}"
CAMELISED = {t.__name__ for t in (Asset, PolicyRecord, ContractDefinition, NegotiationRecord, NegotiationEvent,
                                  AgreementRecord, Peer, TokenInfo)} | {"NegotiationOut", "AgreementOut"}
ERROR = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "error code"},
        "message": {"type": "string"},
        "path": {"type": "string", "description": "JSON path of the offending field"},
    },
    "required": ["error", "message"],
}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


def _camelise(schema: dict[str, Any]) -> dict[str, Any]:
    props = {_camel(k): v for k, v in schema.get("properties", {}).items() if k != "participant_id"}
    required = [_camel(r) for r in schema.get("required", []) if r != "participant_id"]
    out = {**schema, "properties": props}
    if required:
        out["required"] = required
    else:
        out.pop("required", None)
    return out


def _readable_names(schemas: tuple[dict[str, Any], ...], components: dict[str, Any]
                    ) -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
    """msgspec names a schema after its type, with the module's path when two types share a name (the
    negotiation's and the transfer's ``State``: ``connector.protocol.transfer.State``); such a name is shown
    as the module's name and the type's (``TransferState``), in the components and in every reference."""
    renamed = {name: "".join(w.capitalize() for w in name.split(".")[-2].split("_")) + name.split(".")[-1]
               for name in components if "." in name}
    if not renamed:
        return schemas, components
    text = msgspec.json.encode([schemas, components]).decode()
    for old, new in renamed.items():
        text = text.replace(f'"{REF.format(name=old)}"', f'"{REF.format(name=new)}"')
    schemas_out, components_out = msgspec.json.decode(text)
    return tuple(schemas_out), {renamed.get(name, name): schema for name, schema in components_out.items()}


def document(routes: list[Route], *, version: str = "0.1.0", max_request_bytes: int | None = None) -> dict[str, Any]:
    """The OpenAPI document of *routes*; *max_request_bytes* (``node.max_request_bytes``) is the body limit."""
    types: list[Any] = []
    for route in routes:
        for kind in (route.body, route.response):
            if kind is not None and kind not in types:
                types.append(kind)
    schemas, components = _readable_names(*msgspec.json.schema_components(types, ref_template=REF))
    by_type = dict(zip(types, schemas, strict=True))
    components = {name: (_camelise(s) if name in CAMELISED else s) for name, s in components.items()}
    components["Error"] = ERROR
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": _operation_id(route),
            "tags": [route.tag] if route.tag else [],
            "security": [{"bearer": []}],
            "responses": _responses(route, by_type, max_request_bytes),
        }
        params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                  for name in re.findall(r"{(\w+)}", route.path)]
        params += [{"name": name, "in": "query", "required": False, "description": query.description,
                    "schema": query.schema} for name, query in route.query.items()]
        if params:
            op["parameters"] = params
        if route.body is not None:
            content: dict[str, Any] = {"schema": by_type[route.body]}
            if route.example is not None:
                content["example"] = route.example
            op["requestBody"] = {"required": route.body_required, "content": {"application/json": content}}
        paths.setdefault(PREFIX + route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "TDS Connector management API",
            "version": version,
            "description": "Operators and applications manage one participant per token. Errors are JSON "
                           "objects naming the offending field. Request bodies are JSON objects of at most "
                           f"{max_request_bytes or 'node.max_request_bytes'} bytes (node.max_request_bytes).",

        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation_id(route: Route) -> str:
    words = re.sub(r"[{}]", "", route.path).strip("/").replace("-", "/").split("/")
    return route.method.lower() + "".join(w.title() for w in words if w)


def _responses(route: Route, by_type: dict[Any, Any], max_request_bytes: int | None) -> dict[str, Any]:
    """Every answer the route can give: its success, the errors every route shares, and its own."""
    error = {"content": {"application/json": {"schema": {"$ref": REF.format(name="Error")}}}}
    out: dict[str, Any] = {}
    if route.status == 204:
        out["204"] = {"description": "done"}
    else:
        body: dict[str, Any] = {"description": "OK"}
        schema = by_type[route.response] if route.response is not None else {"type": "object"}
        body["content"] = {"application/json": {"schema": schema}}
        if route.data_headers:
            # The data itself: its own media type, guessed from its file name (application/octet-stream when
            # unknown), so any media type can come back; the headers say which use released it.
            data = {"schema": {"type": "string", "format": "binary"}}
            body["description"] = "the decision (JSON), or the data itself with the decision in its headers"
            body["content"].update({"application/octet-stream": data, "*/*": data})
            body["headers"] = {name: {"description": text,
                                      "schema": {"type": "integer" if name.endswith("-Seq") else "string"}}
                               for name, text in route.data_headers.items()}
        for media in route.media:
            body["content"][media] = {"schema": {"type": "string"}}
        out[str(route.status)] = body
    out["400"] = {"description": "invalid request (names the field or parameter)", **error}
    out["401"] = {"description": "missing, unknown or revoked token", **error}
    if route.admin:
        out["403"] = {"description": "not the node's admin token", **error}
    else:
        out["404"] = {"description": "not found, or not this participant's (the admin token reads no "
                                     "participant's data)", **error}
    if route.body is not None:
        limit = f"{max_request_bytes} bytes" if max_request_bytes else "the node's limit"
        out["413"] = {"description": f"request body over {limit} (node.max_request_bytes)", **error}
    out["429"] = {"description": "over this participant's request rate; see Retry-After", **error,
                  "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}}
    if route.path.startswith(("/peers", "/catalog", "/negotiations", "/transfers")) and route.method == "POST":
        out["502"] = {"description": "the peer could not be reached or answered badly", **error}
    out["503"] = {"description": "the node's store or vault failed; nothing was done, try again", **error}
    for status, text in route.answers.items():
        if status == 403 and route.response is not None:  # a decision, not an error: same shape as 200
            out[str(status)] = {"description": text,
                                "content": {"application/json": {"schema": by_type[route.response]}}}
        else:
            out[str(status)] = {"description": text, **error}
    return dict(sorted(out.items()))


DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>TDS Connector management API</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}
h1{font-size:1.4em} h2{font-size:1.1em;margin-top:2em;border-bottom:1px solid #ddd}
.op{margin:.6em 0;padding:.5em .8em;border:1px solid #e3e3e3;border-radius:6px}
.m{display:inline-block;min-width:4.5em;font-weight:600} code,pre{background:#f6f6f6;border-radius:4px}
pre{padding:.6em;overflow:auto;font-size:12px} details summary{cursor:pointer;color:#555}
</style></head><body>
<h1>TDS Connector management API</h1>
<p>Every route needs <code>Authorization: Bearer TOKEN</code>. The machine-readable document is
<a href="openapi.json">openapi.json</a>.</p>
<div id="ops">Loading…</div>
<script>
fetch("openapi.json").then(r => r.json()).then(doc => {
  const byTag = {};
  for (const [path, ops] of Object.entries(doc.paths))
    for (const [method, op] of Object.entries(ops))
      (byTag[(op.tags || ["other"])[0]] ||= []).push([method, path, op]);
  const esc = s => String(s).replace(/[&<>]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;"}[c]));
  const out = [];
  for (const [tag, ops] of Object.entries(byTag)) {
    out.push(`<h2>${esc(tag)}</h2>`);
    for (const [method, path, op] of ops) {
      const body = op.requestBody ? op.requestBody.content["application/json"] : null;
      out.push(`<div class="op"><span class="m">${method.toUpperCase()}</span><code>${esc(path)}</code>
        <div>${esc(op.summary)}</div>` +
        (body ? `<details><summary>request body</summary>` +
          `<pre>${esc(JSON.stringify(body.schema, null, 2))}</pre>` +
          (body.example ? `<pre>${esc(JSON.stringify(body.example, null, 2))}</pre>` : "") + `</details>` : "") +
        `<details><summary>responses</summary>` +
        `<pre>${esc(JSON.stringify(op.responses, null, 2))}</pre></details></div>`);
    }
  }
  out.push(`<h2>schemas</h2><pre>${esc(JSON.stringify(doc.components.schemas, null, 2))}</pre>`);
  document.getElementById("ops").innerHTML = out.join("");
});
</script></body></html>
"""
