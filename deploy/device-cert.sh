#!/bin/sh
# device-cert.sh: the certificates of HTTPS provisioning with client certificates (mTLS,
# deploy/nginx-gitprov.conf), made with openssl.
#
#   device-cert.sh [-d DIR] ca                     once: the devices CA (nginx trusts it)
#   device-cert.sh [-d DIR] server NAME|IP ...     the server's certificate, from a server CA
#   device-cert.sh [-d DIR] [--days N] device MAC ...    a key and certificate per device
#
# DIR (default: the current directory) gets
#   devices-ca.key devices-ca.crt     signs device certificates; nginx: ssl_client_certificate
#   server-ca.key  server-ca.crt      signs the server certificate; devices trust it
#   server.key     server.crt         nginx: ssl_certificate_key, ssl_certificate
#   devices/MAC.key devices/MAC.crt   what one device holds
# Two CAs: a device's key can be read out of the device, and its certificate must never
# pass for the server, even on firmware that does not check key usage or host names.
#
# A device's certificate has its MAC as subject CN (12 lower-case hex digits, no
# separators): nginx serves a device only the file named after that CN. A device uploads
# server-ca.crt as "Provision CA Certification", devices/MAC.crt as "Provision Client
# Certification", devices/MAC.key as "Provision Private Key".
#
# Keys are never overwritten: `ca` refuses when the CA key exists, and `device`/`server`
# keep an existing key and issue a new certificate for it (a renewal). Keys are RSA 2048,
# signatures SHA-256, private keys unencrypted PEM (PKCS#1, which old device firmware
# reads) with mode 0600.
set -eu

die() { echo "device-cert.sh: $*" >&2; exit 1; }
usage() { sed -n '5,7s/^#  *//p' "$0" >&2; exit 2; }

dir=.
days=""
while [ $# -gt 0 ]; do
    case $1 in
    -d | --dir) [ $# -ge 2 ] || usage; dir=$2; shift 2 ;;
    --days) [ $# -ge 2 ] || usage; days=$2; shift 2 ;;
    -h | --help) sed -n '5,7s/^#  *//p' "$0"; exit 0 ;;
    -*) usage ;;
    *) break ;;
    esac
done
[ $# -ge 1 ] || usage
command=$1
shift
case $days in *[!0-9]* | 0*) die "--days wants a number of days, not '$days'" ;; esac

command -v openssl >/dev/null 2>&1 || die "needs openssl (Debian package openssl)"
# Keys (and a directory made here) for the owner only; certificates are made 0644 below.
umask 077
mkdir -p "$dir"
work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
trap 'exit 1' HUP INT TERM

# One config, a section per kind of certificate: nothing comes from the system's
# openssl.cnf.
cat >"$work/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
[ca_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[device_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = @san
EOF

quietly() { # COMMAND...: openssl's chatter only when it fails
    "$@" 2>"$work/stderr" || { cat "$work/stderr" >&2; die "failed: $*"; }
}

new_key() { # PATH: a new RSA key, unless one is there
    if [ -e "$1" ]; then
        echo "kept $1"
    else
        quietly openssl genrsa -traditional -out "$1.tmp" 2048
        mv "$1.tmp" "$1"
        echo "wrote $1"
    fi
}

make_ca() { # NAME CN: NAME.key and a self-signed NAME.crt, valid 10 years
    [ ! -e "$dir/$1.key" ] || die "$dir/$1.key exists; a CA key is never overwritten"
    new_key "$dir/$1.key"
    quietly openssl req -config "$work/openssl.cnf" -new -x509 -key "$dir/$1.key" -sha256 \
        -days 3650 -subj "/CN=$2" -extensions ca_ext -out "$dir/$1.crt.tmp"
    chmod 644 "$dir/$1.crt.tmp"
    mv "$dir/$1.crt.tmp" "$dir/$1.crt"
    echo "wrote $dir/$1.crt"
}

issue() { # CA EXT CN KEY CRT DAYS: a certificate for KEY, signed by CA
    quietly openssl req -config "$work/openssl.cnf" -new -key "$4" -subj "/CN=$3" \
        -out "$work/req.csr"
    # A random 128-bit serial: no serial file to keep, no collisions between runs.
    serial=0x$(openssl rand -hex 16)
    quietly openssl x509 -req -in "$work/req.csr" -CA "$dir/$1.crt" -CAkey "$dir/$1.key" \
        -set_serial "$serial" -sha256 -days "$6" \
        -extfile "$work/openssl.cnf" -extensions "$2" -out "$5.tmp"
    chmod 644 "$5.tmp"
    mv "$5.tmp" "$5"
    echo "wrote $5"
}

case $command in
ca)
    [ $# -eq 0 ] || usage
    make_ca devices-ca "gitprov devices CA"
    ;;
server)
    [ $# -ge 1 ] || die "server: name the host devices connect to (a DNS name or an IP address)"
    [ -e "$dir/server-ca.key" ] || make_ca server-ca "gitprov provisioning server CA"
    echo "[san]" >>"$work/openssl.cnf"
    n=0
    for name in "$@"; do
        n=$((n + 1))
        case $name in
        *[!0-9.]* | "") kind=DNS ;;
        *) kind=IP ;;
        esac
        case $name in *:*) kind=IP ;; esac
        echo "$kind.$n = $name" >>"$work/openssl.cnf"
    done
    new_key "$dir/server.key"
    issue server-ca server_ext "$1" "$dir/server.key" "$dir/server.crt" "${days:-825}"
    ;;
device)
    [ $# -ge 1 ] || die "device: name at least one MAC"
    [ -e "$dir/devices-ca.key" ] || die "no devices CA in $dir: run \`device-cert.sh ca\` first"
    mkdir -p "$dir/devices"
    for mac in "$@"; do
        # Any spelling (00:21:F2:01:1B:19, 00-21-f2-…, 0021f2011b19) becomes the CN nginx
        # compares with the file name: 12 lower-case hex digits.
        cn=$(printf '%s' "$mac" | tr -d ':.-' | tr 'A-F' 'a-f')
        case $cn in
        [0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]) ;;
        *) die "'$mac' is not a MAC address (12 hex digits)" ;;
        esac
        new_key "$dir/devices/$cn.key"
        issue devices-ca device_ext "$cn" "$dir/devices/$cn.key" "$dir/devices/$cn.crt" \
            "${days:-1825}"
    done
    ;;
*) usage ;;
esac
