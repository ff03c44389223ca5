"""The DSP compatibility kit's MET, CAT, CN, CN_C, TP and TP_C scenarios (tests/shared/DSP-TCK.md), by scenario id.

Each scenario starts a node in conformance mode (``connector.conformance``) and the kit's side
(``tck_kit.Kit``) on 127.0.0.1, and plays the kit's messages with the kit's seeded ids. → is a message the
kit sends, ← one the CUT sends. The counts per group are printed at the end of the run (conftest.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from tck_kit import CONFORMANCE, ConsumerRun, Kit, ProviderRun, TransferConsumerRun, TransferProviderRun, message

from connector.testing import NodeFactory, RunningNode


class Tck:
    def __init__(self, kit: Kit, cut: RunningNode) -> None:
        self.kit, self.cut = kit, cut

    def provider(self, dataset: str) -> ProviderRun:
        return ProviderRun(self.kit, self.cut, dataset)

    def consumer(self, dataset: str) -> ConsumerRun:
        return ConsumerRun(self.kit, self.cut, dataset)

    def transfer_provider(self, agreement: str) -> TransferProviderRun:
        return TransferProviderRun(self.kit, self.cut, agreement)

    def transfer_consumer(self, agreement: str) -> TransferConsumerRun:
        return TransferConsumerRun(self.kit, self.cut, agreement)


@pytest.fixture
async def tck(tmp_path):
    factory = NodeFactory(tmp_path)
    kit = Kit()
    await kit.start()
    try:
        cut = await factory.start("cut", conformance=CONFORMANCE)
        yield Tck(kit, cut)
    finally:
        await factory.close()
        await kit.stop()
    assert kit.unread() == [], "the CUT sent messages the scenario did not expect"
    assert kit.invalid == [], "messages or answers that do not validate against the DSP schemas"
    assert factory.invalid == [], "messages the CUT sent that do not validate against the DSP schemas"


Scenario = Callable[[Tck], Awaitable[None]]
SCENARIOS: dict[str, Scenario] = {}


def scenario(scenario_id: str) -> Callable[[Scenario], Scenario]:
    def register(fn: Scenario) -> Scenario:
        SCENARIOS[scenario_id] = fn
        return fn

    return register


# -- metadata -------------------------------------------------------------------------------------------


@scenario("MET:01-01")
async def met_01_01(t: Tck) -> None:
    # http.base.url = <public url>/api/dsp
    status, body = await t.kit.get(f"{t.cut.public_url}/api/dsp/.well-known/dspace-version", authorization=None)
    assert status == 200, body
    [entry] = [v for v in body["protocolVersions"] if v.get("version") == "2025-1"]
    assert entry["path"] and entry["binding"]
    # the versioned path is the CUT's DSP base (http.url)
    assert t.cut.public_url + entry["path"] == t.cut.participant.dsp_base


# -- catalog --------------------------------------------------------------------------------------------


@scenario("CAT:01-01")
async def cat_01_01(t: Tck) -> None:
    status, body = await t.kit.post(f"{t.cut.participant.dsp_base}/catalog/request", message("CatalogRequestMessage"))
    assert status == 200, body
    t.kit.check(body, "catalog")
    datasets = body["dataset"] if isinstance(body["dataset"], list) else [body["dataset"]]
    assert "CAT0101" in [d["@id"] for d in datasets]


@scenario("CAT:01-02")
async def cat_01_02(t: Tck) -> None:
    status, body = await t.kit.get(f"{t.cut.participant.dsp_base}/catalog/datasets/CAT0101")
    assert status == 200, body
    t.kit.check(body, "dataset")
    assert body["@type"] == "Dataset" and body["@id"] == "CAT0101"


@scenario("CAT:01-03")
async def cat_01_03(t: Tck) -> None:
    status, body = await t.kit.get(f"{t.cut.participant.dsp_base}/catalog/datasets/CAT_UNKNOWN")
    assert 400 <= status < 500, body
    t.kit.check(body, "catalog error")
    assert body["@type"] == "CatalogError"


# -- contract negotiation, CUT as provider ----------------------------------------------------------------


@scenario("CN:01-01")
async def cn_01_01(t: Tck) -> None:
    run = t.provider("ACN0101")
    await run.request()
    await run.receive("ContractOfferMessage", "OFFERED")
    await run.termination()


@scenario("CN:01-02")
async def cn_01_02(t: Tck) -> None:
    run = t.provider("ACN0102")
    await run.request()
    await run.receive("ContractOfferMessage", "OFFERED")
    await run.counter_request(then=None)
    await run.receive("ContractNegotiationTerminationMessage", "TERMINATED")


@scenario("CN:01-03")
async def cn_01_03(t: Tck) -> None:
    run = t.provider("ACN0103")
    await run.request()
    await run.receive("ContractOfferMessage", "OFFERED")
    await run.accepted(then=None)
    await run.receive("ContractAgreementMessage", "AGREED")
    await run.verification(then=None)
    await run.receive("ContractNegotiationEventMessage", "FINALIZED", event="FINALIZED")


@scenario("CN:01-04")
async def cn_01_04(t: Tck) -> None:
    run = t.provider("ACN0104")
    await run.request()
    agreement = await run.receive("ContractAgreementMessage", "AGREED")
    assert agreement["agreement"]["target"] == "ACN0104"
    await run.verification(then=None)
    await run.receive("ContractNegotiationEventMessage", "FINALIZED", event="FINALIZED")


@scenario("CN:02-01")
async def cn_02_01(t: Tck) -> None:
    run = t.provider("ACN0201")
    await run.request()
    await run.receive("ContractNegotiationTerminationMessage", "TERMINATED")


@scenario("CN:02-02")
async def cn_02_02(t: Tck) -> None:
    run = t.provider("ACN0202")
    await run.request()
    await run.then_state("REQUESTED")  # no scripted step: the CUT waits
    await run.termination()


@scenario("CN:02-03")
async def cn_02_03(t: Tck) -> None:
    run = t.provider("ACN0203")
    await run.request()
    await run.receive("ContractAgreementMessage", "AGREED")
    await run.termination()


@scenario("CN:02-04")
async def cn_02_04(t: Tck) -> None:
    run = t.provider("ACN0204")
    await run.request()
    await run.receive("ContractOfferMessage", "OFFERED")
    await run.termination()


@scenario("CN:02-05")
async def cn_02_05(t: Tck) -> None:
    run = t.provider("ACN0205")
    await run.request()
    await run.receive("ContractOfferMessage", None)  # OFFERED, or already TERMINATED: the CUT ends it at once
    await run.receive("ContractNegotiationTerminationMessage", "TERMINATED")


@scenario("CN:02-06")
async def cn_02_06(t: Tck) -> None:
    run = t.provider("ACN0206")
    await run.request()
    await run.receive("ContractOfferMessage", "OFFERED")
    await run.accepted(then=None)
    await run.receive("ContractNegotiationTerminationMessage", "TERMINATED")


@scenario("CN:02-07")
async def cn_02_07(t: Tck) -> None:
    run = t.provider("ACN0207")
    await run.request()
    await run.receive("ContractAgreementMessage", "AGREED")
    await run.verification(then=None)
    await run.receive("ContractNegotiationTerminationMessage", "TERMINATED")


@scenario("CN:03-01")
async def cn_03_01(t: Tck) -> None:
    run = t.provider("ACN0301")
    await run.request()
    await run.receive("ContractAgreementMessage", "AGREED")
    await run.verification(then=None)
    await run.receive("ContractNegotiationEventMessage", "FINALIZED", event="FINALIZED")
    await run.termination(refused=True)
    await run.then_state("FINALIZED")


@scenario("CN:03-02")
async def cn_03_02(t: Tck) -> None:
    run = t.provider("ACN0302")
    await run.request()
    await run.receive("ContractOfferMessage", "OFFERED")
    await run.verification(refused=True)


@scenario("CN:03-03")
async def cn_03_03(t: Tck) -> None:
    run = t.provider("ACN0303")
    await run.request()
    await run.receive("ContractOfferMessage", "OFFERED")
    await run.accepted()
    await run.verification(refused=True)


@scenario("CN:03-04")
async def cn_03_04(t: Tck) -> None:
    run = t.provider("ACN0304")
    await run.request()
    await run.receive("ContractOfferMessage", "OFFERED")
    await run.counter_request()
    await run.counter_request(refused=True)


# -- contract negotiation, CUT as consumer ----------------------------------------------------------------


@scenario("CN_C:01-01")
async def cn_c_01_01(t: Tck) -> None:
    run = t.consumer("ACNC0101")
    await run.initiate()
    await run.offer(then=None)
    await run.receive("ContractNegotiationEventMessage", "ACCEPTED", event="ACCEPTED")
    await run.agreement(then=None)
    await run.receive("ContractAgreementVerificationMessage", "VERIFIED")
    await run.finalized()


@scenario("CN_C:01-02")
async def cn_c_01_02(t: Tck) -> None:
    run = t.consumer("ACNC0102")
    await run.initiate()
    await run.offer(then=None)
    counter = await run.receive("ContractRequestMessage", "REQUESTED")
    assert counter["offer"]["target"] == "ACNC0102"
    await run.termination()


@scenario("CN_C:01-03")
async def cn_c_01_03(t: Tck) -> None:
    run = t.consumer("ACNC0103")
    await run.initiate()
    await run.offer(then=None)
    await run.receive("ContractNegotiationTerminationMessage", "TERMINATED")


@scenario("CN_C:01-04")
async def cn_c_01_04(t: Tck) -> None:
    run = t.consumer("ACNC0104")
    await run.initiate()
    await run.agreement(then=None)
    await run.receive("ContractAgreementVerificationMessage", "VERIFIED")
    await run.finalized()


@scenario("CN_C:02-01")
async def cn_c_02_01(t: Tck) -> None:
    run = t.consumer("ACNC0201")
    await run.initiate()
    await run.termination()


@scenario("CN_C:02-02")
async def cn_c_02_02(t: Tck) -> None:
    run = t.consumer("ACNC0202")
    await run.initiate()
    await run.receive("ContractNegotiationTerminationMessage", "TERMINATED")


@scenario("CN_C:02-03")
async def cn_c_02_03(t: Tck) -> None:
    run = t.consumer("ACNC0203")
    await run.initiate()
    await run.agreement(then=None)
    await run.receive("ContractNegotiationTerminationMessage", "TERMINATED")


@scenario("CN_C:02-04")
async def cn_c_02_04(t: Tck) -> None:
    run = t.consumer("ACNC0204")
    await run.initiate()
    await run.offer()
    await run.termination()


@scenario("CN_C:02-05")
async def cn_c_02_05(t: Tck) -> None:
    run = t.consumer("ACNC0205")
    await run.initiate()
    await run.offer(then=None)
    await run.receive("ContractNegotiationEventMessage", "ACCEPTED", event="ACCEPTED")
    await run.termination()


@scenario("CN_C:02-06")
async def cn_c_02_06(t: Tck) -> None:
    run = t.consumer("ACNC0206")
    await run.initiate()
    await run.agreement(then=None)
    await run.receive("ContractAgreementVerificationMessage", "VERIFIED")
    await run.termination()


@scenario("CN_C:03-01")
async def cn_c_03_01(t: Tck) -> None:
    run = t.consumer("ACNC0301")
    await run.initiate()
    await run.finalized(refused=True)


@scenario("CN_C:03-02")
async def cn_c_03_02(t: Tck) -> None:
    run = t.consumer("ACNC0302")
    await run.initiate()
    await run.offer()
    await run.agreement(refused=True)


@scenario("CN_C:03-03")
async def cn_c_03_03(t: Tck) -> None:
    run = t.consumer("ACNC0303")
    await run.initiate()
    await run.offer()
    await run.finalized(refused=True)


@scenario("CN_C:03-04")
async def cn_c_03_04(t: Tck) -> None:
    run = t.consumer("ACNC0304")
    await run.initiate()
    await run.offer(then=None)
    await run.receive("ContractNegotiationEventMessage", "ACCEPTED", event="ACCEPTED")
    await run.finalized(refused=True)


@scenario("CN_C:03-05")
async def cn_c_03_05(t: Tck) -> None:
    run = t.consumer("ACNC0305")
    await run.initiate()
    await run.offer(then=None)
    await run.receive("ContractNegotiationEventMessage", "ACCEPTED", event="ACCEPTED")
    await run.offer(refused=True)


@scenario("CN_C:03-06")
async def cn_c_03_06(t: Tck) -> None:
    run = t.consumer("ACNC0306")
    await run.initiate()
    await run.agreement()
    await run.finalized(refused=True)
    await run.then_state("AGREED")


# -- transfer process, CUT as provider (agreements ATPxxyy are seeded; TP:02-04 is disabled in the kit) -----


@scenario("TP:01-01")
async def tp_01_01(t: Tck) -> None:
    run = t.transfer_provider("ATP0101")
    await run.request()
    start = await run.receive("TransferStartMessage", None)
    assert start["dataAddress"]["endpoint"].startswith(t.cut.participant.base_url), start
    await run.receive("TransferTerminationMessage", "TERMINATED")


@scenario("TP:01-02")
async def tp_01_02(t: Tck) -> None:
    run = t.transfer_provider("ATP0102")
    await run.request()
    await run.receive("TransferStartMessage", None)
    await run.receive("TransferCompletionMessage", "COMPLETED")


@scenario("TP:01-03")
async def tp_01_03(t: Tck) -> None:
    run = t.transfer_provider("ATP0103")
    await run.request()
    await run.receive("TransferStartMessage", None)
    await run.receive("TransferSuspensionMessage", None)
    await run.receive("TransferTerminationMessage", "TERMINATED")


@scenario("TP:01-04")
async def tp_01_04(t: Tck) -> None:
    run = t.transfer_provider("ATP0104")
    await run.request()
    await run.receive("TransferStartMessage", None)
    await run.receive("TransferSuspensionMessage", None)
    await run.receive("TransferStartMessage", None)
    await run.receive("TransferCompletionMessage", "COMPLETED")


@scenario("TP:01-05")
async def tp_01_05(t: Tck) -> None:
    run = t.transfer_provider("ATP0105")
    await run.request()
    await run.receive("TransferTerminationMessage", "TERMINATED")


@scenario("TP:02-01")
async def tp_02_01(t: Tck) -> None:
    run = t.transfer_provider("ATP0201")
    await run.request()
    await run.receive("TransferStartMessage", "STARTED")
    await run.termination()


@scenario("TP:02-02")
async def tp_02_02(t: Tck) -> None:
    run = t.transfer_provider("ATP0202")
    await run.request()
    await run.receive("TransferStartMessage", "STARTED")
    await run.completion()


@scenario("TP:02-03")
async def tp_02_03(t: Tck) -> None:
    run = t.transfer_provider("ATP0203")
    await run.request()
    await run.receive("TransferStartMessage", "STARTED")
    await run.suspension()
    await run.termination()


@scenario("TP:02-05")
async def tp_02_05(t: Tck) -> None:
    run = t.transfer_provider("ATP0205")
    await run.request()
    await run.then_state("REQUESTED")  # no scripted step: the CUT waits
    await run.termination()


@scenario("TP:03-01")
async def tp_03_01(t: Tck) -> None:
    run = t.transfer_provider("ATP0301")
    await run.request()
    await run.completion(refused=True)
    await run.then_state("REQUESTED")


@scenario("TP:03-02")
async def tp_03_02(t: Tck) -> None:
    run = t.transfer_provider("ATP0302")
    await run.request()
    await run.suspension(refused=True)
    await run.then_state("REQUESTED")


@scenario("TP:03-03")
async def tp_03_03(t: Tck) -> None:
    run = t.transfer_provider("ATP0303")
    await run.request()
    await run.receive("TransferStartMessage", "STARTED")
    await run.suspension()
    await run.completion(refused=True)


@scenario("TP:03-04")
async def tp_03_04(t: Tck) -> None:
    run = t.transfer_provider("ATP0304")
    await run.request()
    await run.receive("TransferStartMessage", "STARTED")
    await run.termination()
    await run.start(refused=True)


@scenario("TP:03-05")
async def tp_03_05(t: Tck) -> None:
    run = t.transfer_provider("ATP0305")
    await run.request()
    await run.receive("TransferStartMessage", "STARTED")
    await run.termination()
    await run.suspension(refused=True)


@scenario("TP:03-06")
async def tp_03_06(t: Tck) -> None:
    run = t.transfer_provider("ATP0306")
    await run.request()
    await run.receive("TransferStartMessage", "STARTED")
    await run.termination()
    await run.completion(refused=True)


# -- transfer process, CUT as consumer (agreements ATPCxxyy are seeded; TP_C:02-04 is disabled in the kit) --


@scenario("TP_C:01-01")
async def tp_c_01_01(t: Tck) -> None:
    run = t.transfer_consumer("ATPC0101")
    await run.initiate()
    await run.start()
    await run.termination()


@scenario("TP_C:01-02")
async def tp_c_01_02(t: Tck) -> None:
    run = t.transfer_consumer("ATPC0102")
    await run.initiate()
    await run.start()
    await run.completion()


@scenario("TP_C:01-03")
async def tp_c_01_03(t: Tck) -> None:
    run = t.transfer_consumer("ATPC0103")
    await run.initiate()
    await run.start()
    await run.suspension()
    await run.termination()


@scenario("TP_C:01-04")
async def tp_c_01_04(t: Tck) -> None:
    run = t.transfer_consumer("ATPC0104")
    await run.initiate()
    await run.start()
    await run.suspension()
    await run.start()
    await run.completion()


@scenario("TP_C:01-05")
async def tp_c_01_05(t: Tck) -> None:
    run = t.transfer_consumer("ATPC0105")
    await run.initiate()
    await run.termination()


@scenario("TP_C:02-01")
async def tp_c_02_01(t: Tck) -> None:
    run = t.transfer_consumer("ATPC0201")
    await run.initiate()
    await run.start(then=None)
    await run.receive("TransferTerminationMessage", "TERMINATED")


@scenario("TP_C:02-02")
async def tp_c_02_02(t: Tck) -> None:
    run = t.transfer_consumer("ATPC0202")
    await run.initiate()
    await run.start(then=None)
    await run.receive("TransferCompletionMessage", "COMPLETED")


@scenario("TP_C:02-03")
async def tp_c_02_03(t: Tck) -> None:
    run = t.transfer_consumer("ATPC0203")
    await run.initiate()
    await run.start(then=None)
    await run.receive("TransferSuspensionMessage", None)
    await run.receive("TransferTerminationMessage", "TERMINATED")


@scenario("TP_C:02-05")
async def tp_c_02_05(t: Tck) -> None:
    run = t.transfer_consumer("ATPC0205")
    await run.initiate(then=None)  # the CUT withdraws at once; REQUESTED may already be over
    await run.receive("TransferTerminationMessage", "TERMINATED")


@scenario("TP_C:03-01")
async def tp_c_03_01(t: Tck) -> None:
    run = t.transfer_consumer("ATPC0301")
    await run.initiate()
    await run.completion(refused=True)
    await run.then_state("REQUESTED")


@scenario("TP_C:03-02")
async def tp_c_03_02(t: Tck) -> None:
    run = t.transfer_consumer("ATPC0302")
    await run.initiate()
    await run.suspension(refused=True)


@scenario("TP_C:03-03")
async def tp_c_03_03(t: Tck) -> None:
    run = t.transfer_consumer("ATPC0303")
    await run.initiate()
    await run.start()
    await run.suspension()
    await run.completion(refused=True)


@scenario("TP_C:03-04")
async def tp_c_03_04(t: Tck) -> None:
    run = t.transfer_consumer("ATPC0304")
    await run.initiate()
    await run.start()
    await run.termination()
    await run.start(refused=True)


@scenario("TP_C:03-05")
async def tp_c_03_05(t: Tck) -> None:
    run = t.transfer_consumer("ATPC0305")
    await run.initiate()
    await run.start()
    await run.termination()
    await run.suspension(refused=True)


@scenario("TP_C:03-06")
async def tp_c_03_06(t: Tck) -> None:
    run = t.transfer_consumer("ATPC0306")
    await run.initiate()
    await run.start()
    await run.termination()
    await run.completion(refused=True)


@pytest.mark.parametrize("scenario_id", list(SCENARIOS))
async def test_scenario(tck: Tck, scenario_id: str) -> None:
    await SCENARIOS[scenario_id](tck)
