#!/bin/sh
# Make the compose network's demo CA and one server certificate per node: certs.sh DIR NAME...
#
# DIR/ca.pem is the CA every node trusts for outbound HTTPS (node.tls_ca); DIR/NAME/cert.pem and
# DIR/NAME/key.pem (mode 0600) are node NAME's certificate, valid for the host name NAME (the compose
# service name, which is the host in its public_url). The CA key is deleted once the certificates exist,
# so nothing more can be signed with it. Runs once: a DIR that already holds ca.pem is left as it is.
# A demo CA for a compose network on one machine; in production use certificates from your own CA.
set -eu
dir="$1"
shift
if [ -f "$dir/ca.pem" ]; then
    echo "certs: $dir/ca.pem exists; keeping the certificates there"
    exit 0
fi
umask 077
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
    -subj "/CN=TDS compose demo CA" -keyout "$work/ca.key" -out "$work/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
for name in "$@"; do
    mkdir -p "$dir/$name"
    printf 'subjectAltName=DNS:%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' \
        "$name" > "$work/ext"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
        -keyout "$dir/$name/key.pem" -out "$work/$name.csr" 2>/dev/null
    openssl x509 -req -in "$work/$name.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
        -CAserial "$work/ca.srl" -days 825 -extfile "$work/ext" -out "$dir/$name/cert.pem" 2>/dev/null
    chmod 600 "$dir/$name/key.pem"
    chmod 644 "$dir/$name/cert.pem"
    echo "certs: $name"
done
cp "$work/ca.pem" "$dir/ca.pem"
chmod 644 "$dir/ca.pem"
