#!/usr/bin/env bash
# Installs the Debian packages recstream needs when they are missing: redis-server,
# a Java runtime 17 or newer, Maven, OpenBLAS (the native libblas.so.3 and
# liblapack.so.3 that Spark's ALS uses instead of its slower pure-Java fallback), and
# chromium (the headless browser of the console's test), and openssl (the local TLS
# certificates). As root it installs them; otherwise it prints
# the exact command and fails, so that `make setup` never half-succeeds.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
java_major() {
    java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1
}
major=""
command -v java >/dev/null 2>&1 && major=$(java_major)
if [ -z "$major" ] || [ "$major" -lt 17 ]; then
    missing+=(openjdk-17-jre-headless)
fi
command -v mvn >/dev/null 2>&1 || missing+=(maven)
native_blas() {
    /sbin/ldconfig -p 2>/dev/null | grep -q 'libblas\.so\.3 ' \
        && /sbin/ldconfig -p 2>/dev/null | grep -q 'liblapack\.so\.3 '
}
native_blas || missing+=(libopenblas0-pthread)
# The console's browser test drives a real headless browser (Playwright, pointed at it).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# The local CA and the services' TLS certificates are made with it.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)

if [ ${#missing[@]} -eq 0 ]; then
    echo "system: redis-server, java $major, maven, a native BLAS, chromium and openssl are present"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing ${missing[*]}; this is not a Debian-like system, install them with your package manager" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "error: missing ${missing[*]}; install them with:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi
echo "system: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
