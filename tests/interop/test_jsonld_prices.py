"""A price's terms read by another JSON-LD processor (``pyld``, offline): an offer with prices, in a DSP message
with the DSP context alone or with the node's own context too, expanded and compacted again, still states the
same prices to the node (nothing dropped, no term renamed into something the node reads otherwise)."""

from __future__ import annotations

import pytest
from jsonld_offline import OfflineContexts, round_trip

from connector.protocol import contexts
from usage_policies import parse_policy, pricing, to_dsp
from usage_policies import templates as t

EURO = "http://dbpedia.org/resource/Euro"
OFFER = to_dsp(parse_policy(t.offer("urn:asset:a", permissions=[{"action": "use", "duty": [
    t.price_duty("0.50", "CNY", tiers=["1000:0.40"]), t.price_duty("2", "CNY", per="query"),
    t.price_duty("10.00", "CNY", per="gigabyte", rounding="0.001 half-even"),
    t.price_duty("99", "CNY", per="period", period="P1W")]}, {"action": "read", "duty": [
        t.price_duty("1", EURO, prepaid=True)]}])))


@pytest.mark.parametrize("context", [[contexts.DSP], [contexts.DSP, contexts.TDS]], ids=["dsp", "dsp+tds"])
def test_prices_survive_expansion_and_compaction(context, loader: OfflineContexts):
    message = {"@context": context, "@type": "ContractRequestMessage", "consumerPid": "urn:uuid:c",
               "callbackAddress": "https://parts.example/dsp", "offer": OFFER}
    again = round_trip(message, loader)
    assert again.dropped == []
    assert pricing.price_terms(parse_policy(again.compacted["offer"])) == pricing.price_terms(parse_policy(OFFER))
