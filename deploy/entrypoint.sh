#!/bin/sh
# Start a node in a container: the first time from the mounted settings, then as it is.
#
#   TDS_DIR     the data folder, a volume (default /data)
#   TDS_CONFIG  the node's tds.toml, mounted read-only from deploy/nodes/NAME.toml (default
#               /etc/tds/node.toml)
#   TDS_HOSTED  optional: participants this node hosts, one a line as NAME|LEGAL NAME|REGION|INDUSTRY
#               (default /etc/tds/hosted.txt; lines starting with # are skipped). Each one's first
#               management token is written to TDS_DIR/tokens/NAME.token (mode 0600), never to the log.
#
# First start (no tds.toml in TDS_DIR yet): `tds init --config` makes the node key, the participant's
# keys, the database and the tokens and copies TDS_CONFIG in. If TDS_HOSTED lists participants, the node
# is started once in the background on its local management API, each is added with
# `tds participant add`, and that node is stopped again. A marker file then records that the first start
# finished; a first start cut short is not silently half-done: remove the volume and start again.
# Every later start uses TDS_CONFIG again (so edits to the mounted file take effect) and starts the node.
# The node itself refuses a config whose public_url no longer gives the participants' did:web.
set -eu
umask 077  # what is written into the node's folder is the node's alone (files 0600, folders 0700)
dir="${TDS_DIR:-/data}"
config="${TDS_CONFIG:-/etc/tds/node.toml}"
hosted="${TDS_HOSTED:-/etc/tds/hosted.txt}"
here="$(dirname "$0")"
done_marker="$dir/.first-start-done"

wait_healthy() {
    # Poll the node's /healthz for up to 30 s.
    tries=0
    while ! python "$here/healthcheck.py" 2>/dev/null; do
        tries=$((tries + 1))
        if [ "$tries" -ge 300 ] || ! kill -0 "$1" 2>/dev/null; then
            echo "entrypoint: the node did not become healthy" >&2
            return 1
        fi
        sleep 0.1  # ok-sleep: polling a starting node with a deadline
    done
}

refuse() {
    # A node that cannot start says why once (docker compose logs NAME) and then waits, unhealthy, for the
    # operator to fix the mount and restart it: no restart loop that repeats the message.
    echo "entrypoint: $*" >&2
    trap 'exit 1' TERM INT
    while :; do sleep 3600 & wait $!; done  # ok-sleep: idles until stopped
}

[ -f "$config" ] || refuse "no node config at $config: mount the node's deploy/nodes/NAME.toml there"
missing="$(python - "$config" <<'EOF'
import os, sys, tomllib
try:
    with open(sys.argv[1], "rb") as f:
        node = tomllib.load(f).get("node", {})
except (OSError, tomllib.TOMLDecodeError) as exc:
    print(f"the node config {sys.argv[1]} cannot be read: {exc}")
    sys.exit()
for key in ("tls_cert", "tls_key", "tls_ca"):
    path = node.get(key)
    if path and not os.access(path, os.R_OK):
        print(f"node.{key} {path} (from {sys.argv[1]}) is missing or unreadable: is the certs volume mounted?")
        break
EOF
)"
[ -z "$missing" ] || refuse "$missing"

if [ ! -f "$dir/tds.toml" ]; then
    tds init --dir "$dir" --config "$config"
    if [ -f "$hosted" ] && grep -q '^[^#]' "$hosted"; then
        tds serve --dir "$dir" &
        pid=$!
        wait_healthy "$pid"
        mkdir -p -m 700 "$dir/tokens"
        grep '^[^#]' "$hosted" | while IFS='|' read -r name legal region industry; do
            out="$(tds participant add "$name" --legal-name "$legal" --region "$region" \
                --industry "${industry:-}" --dir "$dir")"
            (umask 077 && printf '%s\n' "$out" | sed -n 's/^  token *//p' > "$dir/tokens/$name.token")
            printf '%s\n' "$out" | grep -v '^  token' | sed "s|^  (shown once.*|  token         in $dir/tokens/$name.token|"
        done
        kill -TERM "$pid"
        wait "$pid"
    fi
    touch "$done_marker"
elif [ ! -f "$done_marker" ]; then
    echo "entrypoint: the first start in $dir did not finish; remove the volume and start again" >&2
    exit 1
else
    cp "$config" "$dir/tds.toml.new"
    chmod 600 "$dir/tds.toml.new"
    mv "$dir/tds.toml.new" "$dir/tds.toml"
fi
exec tds serve --dir "$dir"
