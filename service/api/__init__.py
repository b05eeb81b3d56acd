"""The HTTP API, one router per resource (CONTRACT.md §4)."""
