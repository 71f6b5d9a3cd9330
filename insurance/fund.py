"""The insurance fund: one per settlement asset, an account of the exchange's own.

mechanics.md Part 1 "Insurance fund" and "Liquidation process" step 5: the
fund receives clearance fees and leftover margin, takes over what the book
did not absorb at the bankruptcy price when it can carry it, and offloads it.
It is an ordinary account of the clearing (id `FUND_ACCOUNT`), so a position
it holds is margined and settled like any other; its futures wallet is its
balance. Every change is an `InsuranceFundUpdated` event with its cause.
"""

from __future__ import annotations

from exchange.clearing import FUND_ACCOUNT, Clearing
from exchange.events import Event, InsuranceFundUpdated


class InsuranceFund:
    """The fund's ledger and policy over the clearing's fund account."""

    def __init__(self, clearing: Clearing, floor: dict[str, int] | None = None, max_notional_ppm: int = 1_000_000
                 ) -> None:
        self.clearing = clearing
        self.floor = dict(floor or {})  # ADL starts when a take-over would leave the fund below this
        self.max_notional_ppm = max_notional_ppm  # the fund's net notional may not exceed this share of its balance

    @property
    def history(self) -> list[InsuranceFundUpdated]:
        """Every change of the fund's balance, as published, oldest first."""
        return self.clearing.fund_history

    def query(self, asset: str | None = None, cause: str | None = None, liquidation_id: int | None = None,
              account: int | None = None, since: int | None = None, until: int | None = None
              ) -> list[InsuranceFundUpdated]:
        """The fund's history filtered: by asset, cause, liquidation id, the account whose liquidation caused
        it, and virtual time (`since` ≤ ts < `until`, ms), oldest first. Every argument left None matches all."""
        return [
            e for e in self.clearing.fund_history
            if (asset is None or e.asset == asset) and (cause is None or e.cause == cause)
            and (liquidation_id is None or e.liquidation_id == liquidation_id)
            and (account is None or e.account == account)
            and (since is None or e.ts >= since) and (until is None or e.ts < until)
        ]

    def balance(self, asset: str) -> int:
        acct = self.clearing.accounts.get(FUND_ACCOUNT)
        return acct.wallet.get(asset, 0) if acct is not None else 0

    def credit(self, out: list[Event], asset: str, amount: int, cause: str, liquidation_id: int = 0,
               account: int = 0, symbol: str = "") -> None:
        """Move `amount` (negative: out) to the fund and publish it; the caller books the other side."""
        acct = self.clearing.fund_account()
        acct.wallet[asset] = acct.wallet.get(asset, 0) + amount
        self.record(out, asset, amount, cause, liquidation_id, account, symbol)

    def record(self, out: list[Event], asset: str, amount: int, cause: str, liquidation_id: int = 0,
               account: int = 0, symbol: str = "", balance: int | None = None) -> None:
        """Publish a change of the fund's balance that has already been booked (e.g. by a settlement).

        `balance` is the fund's balance right after this change (default: its balance now).
        """
        m = self.clearing.markets.get(symbol) if symbol else None
        self.clearing.fund_event(out, m, asset, amount, cause, account, liquidation_id, balance)

    def can_take_over(self, asset: str, loss_at_mark: int, notional_after: int) -> bool:
        """mechanics.md step 5: its balance covers the loss at the current mark, and its net notional stays
        under its limit (default 100% of its balance), and it stays above its floor."""
        bal = self.balance(asset)
        if loss_at_mark > bal - self.floor.get(asset, 0):
            return False
        return notional_after * 1_000_000 <= bal * self.max_notional_ppm
