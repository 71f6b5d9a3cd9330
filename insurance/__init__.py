"""The insurance fund: a ledger per settlement asset that absorbs bankrupt positions.

Uses the domain model in `exchange/`, never its runtime.
"""
