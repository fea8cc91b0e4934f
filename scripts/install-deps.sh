#!/usr/bin/env bash
# Installs the Debian packages that `make test` and `make image` need, if missing.
set -euo pipefail

packages=(python3 python3-venv python3-pip openssl ca-certificates
  gpgv gpg gpg-agent debian-archive-keyring binutils skopeo umoci docker-registry apache2-utils
  etcd-server etcd-client xz-utils time)
# kubectl for the live Kubernetes tests: Debian's kubernetes-client where none is installed.
command -v kubectl >/dev/null || packages+=(kubernetes-client)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A python3 from elsewhere (pyenv) may already provide venv; then python3-venv is not needed.
if python3 -c 'import venv, ensurepip' 2>/dev/null; then
  missing=("${missing[@]/python3-venv}")
  missing=("${missing[@]/python3-pip}")
  missing=("${missing[@]/python3}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
