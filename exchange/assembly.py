"""Putting an exchange together: engine, clearing, liquidation engine, insurance fund and ADL.

The one place that knows every package; everything else depends one way
(liquidation/, insurance/ and adl/ on the domain model in exchange/).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from adl.ranking import AdlRanking
from exchange.brackets import BracketTable
from exchange.clearing import Clearing
from exchange.clock import Clock
from exchange.engine import Engine
from exchange.funding import FundingSchedule
from exchange.instrument import Instrument
from exchange.venue import BINANCE, VenueProfile
from insurance.fund import InsuranceFund
from liquidation.monitor import RiskMonitor
from liquidation.process import Liquidator


def build_exchange(
    instruments: Iterable[Instrument] | None = None,
    clock: Clock | None = None,
    profile: VenueProfile = BINANCE,
    insurance_fund: dict[str, int] | None = None,
    insurance_floor: dict[str, int] | None = None,
    insurance_max_notional_ppm: int = 1_000_000,
    brackets: dict[str, BracketTable] | None = None,
    adl_ranking: AdlRanking | None = None,
    adl_seed: int = 0,
    adl_interval_ms: int = 30_000,
    margin_call_ratio_ppm: int | None = None,
    funding_schedule: FundingSchedule | Mapping[str, FundingSchedule] | None = None,
) -> Engine:
    """A full exchange: matching with margin, liquidations, the insurance fund and ADL.

    `adl_ranking` overrides the venue profile's (`VenueProfile.adl_ranking`) when given."""
    clearing = Clearing(profile=profile, brackets=brackets, insurance_fund=insurance_fund)
    engine = Engine(instruments, clock, clearing, funding_schedule)
    fund = InsuranceFund(clearing, floor=insurance_floor, max_notional_ppm=insurance_max_notional_ppm)
    monitor = RiskMonitor(clearing, margin_call_ratio_ppm)
    ranking = adl_ranking if adl_ranking is not None else profile.adl_ranking
    engine.risk = Liquidator(clearing, engine, fund, monitor, ranking, adl_seed, adl_interval_ms)
    return engine
