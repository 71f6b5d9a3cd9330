"""A minimal subscriber to the emulator's MQTT events: copy it and change `handle`.

    pip install aiomqtt
    python examples/subscriber.py --mqtt mqtt://127.0.0.1:1883 'market/BTCUSDT/trades' 'account/7/#'

It understands both publishing modes (one event per message, or batches), and
checks each topic's `topic_seq`: duplicates (QoS 1 resends) are skipped, gaps
are reported. Only the standard library and aiomqtt; see docs/events.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import aiomqtt


def events_of(payload: bytes) -> list[dict]:
    """The events in one message, each with its `schema` and `topic_seq`. A batch's events carry neither:
    the event at position i has topic_seq `first_topic_seq + i` and the envelope's schema."""
    obj = json.loads(payload)
    if obj.get("type") != "batch":
        return [obj]
    first, schema = obj["first_topic_seq"], obj["schema"]
    for i, ev in enumerate(obj["events"]):
        ev["topic_seq"] = first + i
        ev["schema"] = schema
    return obj["events"]


def handle(topic: str, ev: dict) -> None:
    """Your code here. Prices are ticks, quantities lots (see the instrument's tick and step)."""
    if ev["type"] == "Trade":
        print(f"{topic}: trade {ev['qty']} @ {ev['price']} ({ev['taker_side']} taker)")
    elif "seq" not in ev:  # a notice of the publisher itself (exchange/system), e.g. a counted Gap
        print(f"{topic}: {ev['type']} {ev}")
    else:
        print(f"{topic}: {ev['type']} seq {ev['seq']}")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("filters", nargs="*", default=["#"], help="topic filters under the prefix")
    ap.add_argument("--mqtt", default="mqtt://127.0.0.1:1883")
    ap.add_argument("--prefix", default="perpex")
    args = ap.parse_args()
    host, _, port = args.mqtt.removeprefix("mqtt://").partition(":")
    last: dict[str, int] = {}  # topic -> last topic_seq seen
    async with aiomqtt.Client(host, int(port or 1883)) as client:
        for f in args.filters:
            await client.subscribe(f"{args.prefix}/{f}", qos=1)
        async for msg in client.messages:
            topic = str(msg.topic)
            for ev in events_of(msg.payload):  # type: ignore[arg-type]
                seen = last.get(topic)
                if seen is not None and ev["topic_seq"] <= seen:
                    continue  # a duplicate: already handled
                if seen is not None and ev["topic_seq"] != seen + 1:
                    print(f"GAP on {topic}: {ev['topic_seq'] - seen - 1} events missed")
                last[topic] = ev["topic_seq"]
                handle(topic, ev)


if __name__ == "__main__":
    asyncio.run(main())
