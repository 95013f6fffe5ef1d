"""A small shop domain for the service's tests: two sagas, their events, their handlers."""
