"""The documentation pages generated from the code: the DSL reference from the shipped
JSON Schemas, the HTTP API from the service's OpenAPI document.

    python scripts/gen_docs.py          # rewrite docs/reference.md and docs/http-api.md

tests/docs/test_site.py fails when a checked-in page differs from what this makes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("get", "post", "put", "patch", "delete")


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document ``concordia serve`` publishes at /openapi.json."""
    from concordia import AsyncEngine, Catalog, Registry
    from concordia.service.app import create_app

    engine = AsyncEngine(Catalog(), Registry(), "memory://", check_bindings=False)
    document: dict[str, Any] = create_app(engine).openapi()
    return document


def _schema_name(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:  # an optional value: its types but null
        return " or ".join(_schema_name(s) for s in schema["anyOf"] if s.get("type") != "null")
    ref = schema.get("$ref") or (schema.get("items") or {}).get("$ref")
    if ref:
        name = ref.rsplit("/", 1)[-1]
        return f"list of `{name}`" if "items" in schema else f"`{name}`"
    return f"`{schema.get('type', 'any')}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def http_api_markdown(document: dict[str, Any]) -> str:
    """The HTTP API as Markdown: each route with its parameters, body and answers."""
    info = document["info"]
    lines = ["# HTTP API", "",
             f"{info['title']} {info['version']}: the routes `concordia serve` answers. "
             "Generated from its OpenAPI document (`/openapi.json`) by "
             "`python scripts/gen_docs.py`; do not edit by hand. Errors are RFC 9457 "
             "problem details (`application/problem+json`); "
             "[operations](operations.md#serving-over-http) says what each one means.", ""]
    for path, item in document["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            lines += [f"## `{method.upper()} {path}`", ""]
            summary = op.get("summary", "")
            description = op.get("description", "")
            if description:
                lines += [" ".join(description.split()), ""]
            elif summary:
                lines += [summary + ".", ""]
            params = op.get("parameters", [])
            if params:
                lines += ["| parameter | in | required | type | description |",
                          "|---|---|---|---|---|"]
                for p in params:
                    required = "yes" if p.get("required") else "no"
                    lines.append(f"| `{p['name']}` | {p['in']} | {required} "
                                 f"| {_schema_name(p.get('schema', {}))} | "
                                 f"{_cell(p.get('description', ''))} |")
                lines.append("")
            body = op.get("requestBody")
            if body:
                kinds = ", ".join(f"`{k}`" for k in body.get("content", {}))
                schemas = {_schema_name(c.get("schema", {})) for c in body["content"].values()}
                lines += [f"Body: {', '.join(sorted(schemas))} as {kinds}.", ""]
            lines += ["| answer | what |", "|---|---|"]
            for code, answer in op.get("responses", {}).items():
                lines.append(f"| {code} | {_cell(answer.get('description', ''))} |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def pages() -> dict[Path, str]:
    """Each generated page and what it should hold."""
    from concordia.definitions.reference import reference_markdown

    return {ROOT / "docs" / "reference.md": reference_markdown(),
            ROOT / "docs" / "http-api.md": http_api_markdown(openapi_document())}


def main() -> int:
    for path, text in pages().items():
        path.write_text(text, "utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
