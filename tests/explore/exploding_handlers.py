"""A handlers module that must never be imported by simulate or prove without
--handlers: importing it fails loudly."""

raise RuntimeError("the explorer imported handlers it was not given")
