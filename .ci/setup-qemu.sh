#!/usr/bin/env bash
# Usage: .ci/setup-qemu.sh DEST
# Puts a statically linked qemu-aarch64 of version 10 or later under DEST and prints its path.
#
# Why not Debian 12's own qemu-user (7.2): it keeps running its stale translation of code
# that was patched through the writable alias of a memfd dual mapping, so the DualMap tests
# fail under it for reasons that have nothing to do with our code. bookworm-backports has
# qemu 10, which gets this right. The package is fetched with throwaway apt state in a temp
# dir, so the machine's apt sources are left exactly as they were.
#
# On failure, the last line on stderr is the reason.
set -euo pipefail

dest=${1:?usage: $0 DEST}
bin=$dest/usr/bin/qemu-aarch64
min_major=10

fail() {
    echo "setup-qemu: $*" >&2
    exit 1
}

major_version() {
    local v
    v=$("$1" --version 2>/dev/null | sed -n 's/^qemu-aarch64 version \([0-9][0-9]*\)\..*/\1/p')
    echo "${v:-0}"
}

# A developer re-running .ci/run keeps target/, so reuse what an earlier run unpacked.
if [[ -x $bin ]] && (($(major_version "$bin") >= min_major)); then
    echo "$bin"
    exit 0
fi

command -v apt-get >/dev/null || fail "apt-get not found"
command -v dpkg-deb >/dev/null || fail "dpkg-deb not found"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/sources" "$work/lists/partial" "$work/cache/archives/partial"
cat >"$work/sources/bookworm-backports.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

apt_opts=(
    -o Dir::Etc::SourceList=/dev/null
    -o "Dir::Etc::SourceParts=$work/sources"
    -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache=$work/cache"
    -o Acquire::Retries=3
)
# As root apt downloads as the _apt user, which cannot write into our private temp dir:
# that works anyway but warns. Downloading as root here is what would happen regardless.
if ((EUID == 0)); then
    apt_opts+=(-o APT::Sandbox::User=root)
fi

echo "fetching qemu-user from bookworm-backports" >&2
timeout 300 apt-get "${apt_opts[@]}" -q --error-on=any update >&2 ||
    fail "apt-get update of bookworm-backports failed"
(cd "$work" && timeout 600 apt-get "${apt_opts[@]}" -q download qemu-user/bookworm-backports >&2) ||
    fail "apt-get download qemu-user/bookworm-backports failed"

debs=("$work"/qemu-user_*.deb)
[[ -f ${debs[0]} ]] || fail "apt-get download left no qemu-user .deb"

# The package holds every qemu-* binary (hundreds of MB unpacked); only one is needed.
rm -rf "$dest"
mkdir -p "$dest"
dpkg-deb --fsys-tarfile "${debs[0]}" | tar -x -C "$dest" ./usr/bin/qemu-aarch64 ||
    fail "could not unpack usr/bin/qemu-aarch64 from ${debs[0]##*/}"

found=$(major_version "$bin")
((found >= min_major)) ||
    fail "bookworm-backports has qemu $found, need $min_major or later"
echo "$bin"
