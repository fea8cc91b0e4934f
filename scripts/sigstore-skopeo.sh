#!/usr/bin/env bash
# Prints the path of a skopeo that verifies sigstore (cosign) signatures, installing one if
# needed. Debian 12's skopeo 1.9 is built with sigstore support patched out ("Debian-local
# change: sigstore disabled"); Debian 13's skopeo has it, but needs glibc 2.38. So, where the
# system skopeo lacks it, Debian 13's skopeo and the libraries it links are unpacked from
# their Debian packages (apt-get with a private package list; signatures checked against the
# host's Debian archive keyring) into DIR, and run with their own dynamic loader.
#
# Usage: scripts/sigstore-skopeo.sh [DIR]   (default: target/sigstore-skopeo)
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v skopeo >/dev/null && ! grep -q "sigstore disabled" "$(command -v skopeo)"; then
  command -v skopeo
  exit 0
fi

dir=$(realpath -m "${1:-target/sigstore-skopeo}")
wrapper="$dir/skopeo"
if [ -x "$wrapper" ] && "$wrapper" --version >/dev/null 2>&1; then
  echo "$wrapper"
  exit 0
fi

suite=trixie
packages=(skopeo libc6 libgpgme11t64 libsqlite3-0 libassuan9 libgpg-error0)
rm -rf "$dir"
mkdir -p "$dir/lists/partial" "$dir/debs" "$dir/root"
echo "deb http://deb.debian.org/debian $suite main" > "$dir/sources.list"
apt_opts=(-o "Dir::Etc::sourcelist=$dir/sources.list" -o "Dir::Etc::sourceparts=-"
  -o "Dir::State::Lists=$dir/lists" -o "APT::Get::List-Cleanup=0" -o "Debug::NoLocking=1")
apt-get "${apt_opts[@]}" update -qq >&2
(cd "$dir/debs" && apt-get "${apt_opts[@]}" download "${packages[@]}" >&2) ||
  { echo "sigstore-skopeo: downloading ${packages[*]} from Debian $suite failed" >&2; exit 1; }
for deb in "$dir"/debs/*.deb; do
  dpkg-deb -x "$deb" "$dir/root"
done
lib="$dir/root/usr/lib/x86_64-linux-gnu"
cat > "$wrapper" <<EOF
#!/bin/sh
# Debian $suite's skopeo with its own glibc (written by scripts/sigstore-skopeo.sh).
exec "$lib/ld-linux-x86-64.so.2" --library-path "$lib" "$dir/root/usr/bin/skopeo" "\$@"
EOF
chmod +x "$wrapper"
"$wrapper" --version >&2
echo "$wrapper"
