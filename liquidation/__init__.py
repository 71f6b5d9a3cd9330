"""Liquidation: the risk monitor (positions indexed by liquidation price) and the liquidation flow.

Uses the domain model in `exchange/` (accounts, positions, brackets, orders), never its runtime.
"""
