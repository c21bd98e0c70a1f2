"""``python -m retain.methods``: print the methods table of docs/METHODS.md from the registry."""

from retain.methods.registry import markdown_table

print(markdown_table())
