"""Plain handlers for the constructs corpus, as ``--handlers`` takes them."""

from concordia.definitions.catalog import Catalog
from tests.explore.conftest import CONSTRUCTS, plain_registry

registry = plain_registry(Catalog.load_strict([str(CONSTRUCTS / "definitions"),
                                               str(CONSTRUCTS / "policies")]))
