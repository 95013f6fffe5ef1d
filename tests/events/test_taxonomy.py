"""Events against the taxonomy: unknown types, versions, and each kind of bad payload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from concordia.definitions import Catalog
from concordia.errors import EventError
from concordia.events import Envelope, new_event, resolve_event, validate_event, validate_payload
from concordia.ids import new_id
from concordia.jsonvalidation import validator_for
from tests.conftest import DEFINITIONS, POLICIES

ORDERS = """\
domain: shop
events:
  - name: shop.order.placed
    version: 1
    payload_schema:
      order_id: {type: uuid, required: true}
      placed_at: {type: datetime, required: true}
      email: {type: email, required: true}
      total: {type: number, required: true, minimum: 0}
      lines:
        type: list
        items:
          type: map
          fields:
            sku: {type: string, required: true}
            qty: {type: integer, required: true}
    reliability: persistent
  - name: shop.order.placed
    version: 2
    payload_schema:
      order_id: {type: uuid, required: true}
      currency: {type: string, required: true, enum: [EUR, USD]}
    reliability: persistent
"""


@pytest.fixture(scope="module")
def shipped() -> Catalog:
    catalog = Catalog.load([DEFINITIONS, POLICIES])
    assert catalog.errors == []
    return catalog


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    path: Path = tmp_path_factory.mktemp("tax") / "shop.yaml"
    path.write_text(ORDERS)
    catalog = Catalog.load([str(path)])
    assert catalog.errors == []
    return catalog


def _order(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"order_id": new_id(), "placed_at": "2026-11-27T09:30:00Z",
                            "email": "ada@example.com", "total": 12.5,
                            "lines": [{"sku": "A-1", "qty": 2}]}
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return data


def _refused(catalog: Catalog, data: Any, version: int | None = 1) -> EventError:
    with pytest.raises(EventError) as info:
        validate_payload(catalog, "shop.order.placed", version, data)
    assert info.value.event_type == "shop.order.placed"
    return info.value


def test_valid_events_pass_and_name_their_entry(shipped: Catalog, shop: Catalog) -> None:
    run = new_id()
    event = new_event("ml.run.completed",
                      {"run_id": run, "model_version_id": new_id(), "score": 0.93},
                      source="/thunderline/cerebros", version=1)
    entry = validate_event(shipped, event)
    assert (entry.name, entry.version) == ("ml.run.completed", 1)
    assert validate_payload(shop, "shop.order.placed", 1, _order()).version == 1


def test_unknown_type_suggests_the_close_name(shipped: Catalog) -> None:
    event = new_event("ml.run.complete", {}, source="/t")
    with pytest.raises(EventError) as info:
        validate_event(shipped, event)
    assert "unknown event type 'ml.run.complete'" in str(info.value)
    assert "did you mean 'ml.run.completed'?" in str(info.value)
    assert info.value.field == "type"
    assert info.value.event_type == "ml.run.complete"


def test_unknown_type_without_a_close_name(shipped: Catalog) -> None:
    with pytest.raises(EventError, match="add it to the taxonomy"):
        validate_payload(shipped, "billing.invoice.sent", None, {})


def test_unknown_version_lists_the_known_ones(shop: Catalog) -> None:
    with pytest.raises(EventError, match=r"has no version 7 \(known: 1, 2\)") as info:
        resolve_event(shop, "shop.order.placed", 7)
    assert info.value.field == "dataschema"


def test_version_comes_from_the_envelope_else_the_latest(shop: Catalog) -> None:
    v2 = {"order_id": new_id(), "currency": "EUR"}
    latest = new_event("shop.order.placed", v2, source="/shop")
    assert validate_event(shop, latest).version == 2
    pinned = new_event("shop.order.placed", _order(), source="/shop", version=1)
    assert validate_event(shop, pinned).version == 1
    raw = pinned.to_dict()
    del raw["dataschema"]
    raw["dataversion"] = "1"
    assert validate_event(shop, Envelope.from_dict(raw)).version == 1
    # The v1 payload against v2 (the latest) fails: the version really is honoured.
    with pytest.raises(EventError, match="v2"):
        validate_payload(shop, "shop.order.placed", None, _order())


@pytest.mark.parametrize(("changes", "field", "fragment"), [
    ({"order_id": ...}, "order_id", "field 'order_id': required field is missing"),
    ({"total": "12.50"}, "total", "field 'total': '12.50' is not of type 'number'"),
    ({"total": True}, "total", "True is not of type 'number'"),
    ({"order_id": "x"}, "order_id", "field 'order_id': 'x' is not a 'uuid'"),
    ({"placed_at": "yesterday"}, "placed_at", "field 'placed_at': 'yesterday' is not a "
                                              "'date-time'"),
    ({"placed_at": "2026-11-27 09:30"}, "placed_at", "is not a 'date-time'"),
    ({"email": "ada.example.com"}, "email", "is not a 'email'"),
    ({"coupon": "X"}, "coupon", "field 'coupon': unknown field"),
    ({"totl": 1}, "totl", "did you mean 'total'?"),
    ({"total": -1}, "total", "field 'total': -1 is less than the minimum of 0"),
    ({"lines": [{"sku": "A", "qty": "two"}]}, "lines[0].qty",
     "field 'lines[0].qty': 'two' is not of type 'integer'"),
    ({"lines": [{"qty": 1}]}, "lines[0].sku", "field 'lines[0].sku': required field"),
])
def test_each_kind_of_bad_payload_is_refused_naming_the_field(
        shop: Catalog, changes: dict[str, Any], field: str, fragment: str) -> None:
    error = _refused(shop, _order(**changes))
    assert error.field == field
    assert fragment in str(error)


def test_enum_violation(shop: Catalog) -> None:
    error = _refused(shop, {"order_id": new_id(), "currency": "GBP"}, version=2)
    assert "field 'currency': 'GBP' is not one of 'EUR', 'USD'" in str(error)


def test_every_problem_is_reported_in_one_message(shop: Catalog) -> None:
    error = _refused(shop, _order(order_id="x", total="1", placed_at=..., extra=1))
    text = str(error)
    assert "payload has 4 problems" in text
    for name in ("order_id", "total", "placed_at", "extra"):
        assert f"field {name!r}" in text
    assert error.field == "extra"  # the first, in a stable (alphabetical) order


def test_payload_that_is_not_an_object(shop: Catalog) -> None:
    error = _refused(shop, ["not", "an", "object"])
    assert "is not of type 'object'" in str(error)
    assert error.field is None


def test_long_values_are_shortened_in_messages(shop: Catalog) -> None:
    error = _refused(shop, _order(order_id="z" * 500))
    assert "z" * 100 not in str(error)
    assert "..." in str(error)


def test_the_shipped_taxonomy_refuses_bad_payloads(shipped: Catalog) -> None:
    event = new_event("ai.upm.snapshot.activated",
                      {"snapshot_id": new_id(), "activated_at": "soon", "adapter_count": 3},
                      source="/thunderline/upm", version=1)
    with pytest.raises(EventError, match="field 'activated_at': 'soon' is not a 'date-time'"):
        validate_event(shipped, event)
    signup = new_event("user.signup.requested",
                       {"email": "ada@example.com", "display_name": "Ada",
                        "redirect": "not a url"}, source="/web")
    with pytest.raises(EventError, match="field 'redirect': 'not a url' is not a 'uri'"):
        validate_event(shipped, signup)


def test_validators_are_compiled_once_per_entry(shop: Catalog) -> None:
    entry = shop.event("shop.order.placed", 1)
    assert validator_for(entry.payload_schema) is validator_for(entry.payload_schema)
