"""Adapters to other libraries' detection types (optional imports)."""
