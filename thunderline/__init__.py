"""Thunderline: the reference domain (handlers and simulated external systems).

It imports concordia; concordia never imports it.
"""
