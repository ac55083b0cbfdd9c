"""Built-in rule packs; installed as qrewrite.rules."""
