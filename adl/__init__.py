"""Auto-deleveraging: ranking of opposite-side positions and their forced closing.

Uses the domain model in `exchange/`, never its runtime.
"""
