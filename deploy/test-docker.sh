#!/usr/bin/env bash
# The compose data space, run for real: `make test-docker` (needs root: it starts a private Docker engine).
#
# Starts a Docker engine of its own with docker-local.sh (TDS_DOCKER_LOCAL, default
# ../shared/tools/docker-local.sh next to the repository), makes the base image tds-base:bookworm there if it
# is missing, builds tds-connector:dev from deploy/wheelhouse/ (made by `pip wheel` on the host if it holds no
# wheel), runs `docker-compose up` with deploy/docker-compose.yml, waits for the three nodes' health checks and
# tells the story across the containers with `docker-compose exec … tds …`, one line per step:
#   every node verifies the others over HTTPS with the compose CA; ACME publishes a core dataset (at most
#   2 uses for R&D) and vouches for its partners' regions with signed credentials; Pearl River Parts and the
#   SME gz-sensors hosted on ACME's node each negotiate, pull the data sealed, use it twice and are refused
#   the third use with the reason; ACME revokes Pearl River Parts' agreement and receives the signed deletion
#   receipt; Isar Optics, with no verified region, is refused by export control.
# Exits non-zero on the first step that does not behave; always runs `docker-compose down -v` and stops
# the engine if it started it. The compose project is named by COMPOSE_PROJECT_NAME (default tds): Compose
# v1 (1.29) refuses a top-level `name:` in the compose file.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started=$SECONDS
docker_local=${TDS_DOCKER_LOCAL:-$root/../shared/tools/docker-local.sh}
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-tds}
export TDS_BASE_IMAGE=${TDS_BASE_IMAGE:-tds-base:bookworm}
compose=(docker-compose -f deploy/docker-compose.yml)
step=0

say() { printf '%5.0fs  %s\n' "$((SECONDS - started))" "$*"; }
fail() { say "FAILED: $*"; exit 1; }
ok() { step=$((step + 1)); say "ok $step  $*"; }
# tds in a node's container: on NAME's node, as its own participant
tds_on() { local node=$1; shift; "${compose[@]}" exec -T "$node" tds "$@" --dir /data; }
# tds in acme's container, as the hosted participant gz-sensors (its first token, written on first start)
tds_sme() { "${compose[@]}" exec -T acme sh -c 'tds "$@" --node http://127.0.0.1:8182 --token "$(cat /data/tokens/gz-sensors.token)"' tds "$@"; }
field() { python3 -c 'import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1].split("."):
    value = value[int(key)] if isinstance(value, list) else value.get(key)
    if value is None:
        break
print("" if value is None else value)' "$1"; }

engine_started=""
cleanup() {
    local rc=$?
    if [ -n "${DOCKER_HOST:-}" ]; then
        [ "$rc" -eq 0 ] || "${compose[@]}" logs --no-color --tail 5 >&2 2>&1 || true
        "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
        say "docker-compose down -v: done"
    fi
    if [ -n "$engine_started" ]; then "$docker_local" stop; say "engine stopped"; fi
    say "$([ "$rc" -eq 0 ] && echo PASSED || echo FAILED) in $((SECONDS - started)) s"
    exit "$rc"
}
trap cleanup EXIT

[ -x "$docker_local" ] || fail "$docker_local not found (set TDS_DOCKER_LOCAL)"
sock=${TDS_DOCKER_ROOT:-${TMPDIR:-/tmp}/tds-docker}/docker.sock
DOCKER_HOST=unix://$sock docker info >/dev/null 2>&1 || engine_started=1
eval "$("$docker_local" start)"
say "engine: $DOCKER_HOST$([ -n "$engine_started" ] && echo ' (started)' || echo ' (already running: left running)')"
"$docker_local" base-image "$TDS_BASE_IMAGE" >/dev/null || fail "base image $TDS_BASE_IMAGE"
if ! ls deploy/wheelhouse/*.whl >/dev/null 2>&1; then
    "${PYTHON:-.venv/bin/python}" -m pip wheel --quiet -w deploy/wheelhouse . "setuptools>=77" \
        || fail "pip wheel: no index reachable for the wheels"
fi
"${compose[@]}" build --quiet >/dev/null 2>&1 || fail "image build (see above)"
ok "image tds-connector:dev built from $TDS_BASE_IMAGE and deploy/wheelhouse/"

"${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
"${compose[@]}" up -d >/dev/null 2>&1 || fail "docker-compose up"
nodes=(acme parts isar-optics)
deadline=$((SECONDS + 120))
for node in "${nodes[@]}"; do
    while :; do
        state=$(docker inspect -f '{{.State.Health.Status}}' "$("${compose[@]}" ps -q "$node")" 2>/dev/null || true)
        [ "$state" = healthy ] && break
        [ $SECONDS -lt $deadline ] || fail "$node is not healthy after 120 s ($state)"
        sleep 1  # ok-sleep: polling the health status with a deadline
    done
done
ok "docker-compose up: acme, parts, isar-optics healthy (HTTPS, dev mode off)"

for a in "${nodes[@]}"; do
    for b in "${nodes[@]}"; do
        [ "$a" = "$b" ] && continue
        tds_on "$a" peer verify "https://$b:8443" >/dev/null || fail "$a cannot verify $b"
    done
done
ok "each node verifies the two others over HTTPS with the compose CA (signed self-descriptions)"

acme_did=$(tds_on acme info --json | field did)
parts_did=$(tds_on parts info --json | field did)
sme_did="${acme_did%:participants:*}:participants:gz-sensors"  # hosted: under its node's did:web
[ -n "$acme_did" ] && [ -n "$parts_did" ] || fail "no DIDs from tds info"
tds_on acme trust add "$acme_did" --claims region >/dev/null || fail "acme trust add"
for holder in "$parts_did" "$sme_did"; do
    tds_on acme credential issue "$holder" --kind region --region CN-GD >/dev/null || fail "credential for $holder"
done
ok "ACME vouches for the regions of Pearl River Parts and gz-sensors (CN-GD, signed credentials delivered)"

"${compose[@]}" exec -T acme sh -c 'mkdir -p /data/files/acme &&
    printf "part,defects\nA-1,0\nA-2,3\n" > /data/files/acme/qi.csv'
tds_on acme asset add qi-2026 --title "Quality inspection" --data-class core --file /data/files/acme/qi.csv \
    >/dev/null || fail "asset add"
tds_on acme policy add members >/dev/null || fail "policy add members"
tds_on acme policy add rnd --purpose 'R&D' --max-uses 2 --log-uses >/dev/null || fail "policy add rnd"
tds_on acme offer add qi --access members --contract rnd --asset qi-2026 >/dev/null || fail "offer add"
ok "ACME publishes qi-2026 (class core; R&D, at most 2 uses, each logged)"

# consume WHO CLI...: verify ACME, find the offer, negotiate, pull sealed, two uses, the third refused
consume() {
    local who=$1; shift
    "$@" peer verify https://acme:8443 >/dev/null || fail "$who: peer verify acme"
    offer=$("$@" catalog https://acme:8443 --json | field dataset.0.hasPolicy.0.@id)
    [ -n "$offer" ] || fail "$who sees no offer in ACME's catalog"
    negotiation=$("$@" negotiate https://acme:8443 "$offer" --json) || fail "$who: negotiation: $negotiation"
    agreement=$(field agreementId <<<"$negotiation")
    [ -n "$agreement" ] || fail "$who: no agreement: $negotiation"
    ok "$who negotiates over HTTPS: FINALIZED, agreement $agreement"
    transfer=$("$@" transfer https://acme:8443 "$agreement" --json 2>/dev/null) || fail "$who: transfer: $transfer"
    [ "$(field state <<<"$transfer")" = COMPLETED ] || fail "$who: transfer $transfer"
    transfer_id=$(field transferId <<<"$transfer")
    "$@" transfers show "$transfer_id" --json | grep -q '"sealed"' || fail "$who: the core data did not travel sealed"
    ok "$who pulls it sealed end to end (X25519, AES-256-GCM), manifest verified"
    for i in 1 2; do
        "$@" use "$agreement" --use-id "use-$i" --purpose 'R&D' >/dev/null || fail "$who: use $i refused"
    done
    if refusal=$("$@" use "$agreement" --use-id use-3 --purpose 'R&D' 2>&1); then
        fail "$who: the third use was permitted"
    fi
    ok "$who uses it twice; the third use is refused: $(tr '\n' ' ' <<<"$refusal" | cut -c1-140)"
}
consume "Pearl River Parts" tds_on parts
parts_agreement=$agreement
consume "gz-sensors (hosted on ACME's node)" tds_sme

tds_on acme agreement revoke "$parts_agreement" --reason "quarterly refresh" >/dev/null || fail "revoke"
deadline=$((SECONDS + 30))
until tds_on acme usage report "$parts_agreement" --json | grep -q '"deletionReceipt": *{'; do
    [ $SECONDS -lt $deadline ] || fail "no deletion receipt within 30 s"
    sleep 0.5  # ok-sleep: polling the provider's report with a deadline
done
if refusal=$(tds_on parts use "$parts_agreement" --use-id after --purpose 'R&D' 2>&1); then
    fail "a use after revocation was permitted"
fi
ok "ACME revokes; Pearl River Parts' node deletes the data and returns the signed deletion receipt"

tds_on isar-optics peer verify https://acme:8443 >/dev/null || fail "isar-optics: peer verify acme"
if refusal=$(tds_on isar-optics negotiate https://acme:8443 "$offer" 2>&1); then
    fail "Isar Optics was granted the core dataset"
fi
grep -q "does not offer" <<<"$refusal" || fail "Isar Optics refused otherwise: $refusal"
[ -z "$(tds_on isar-optics catalog https://acme:8443 --json | field dataset.0)" ] || fail "Isar Optics sees the offer"
ok "Isar Optics (DE-BY, no verified region) is refused by export control: the core offer is hidden and not granted"
