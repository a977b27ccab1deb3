#!/bin/sh
# Installs the Debian packages that the end-to-end tests talk to, when they are missing
# and we are root (as in CI). Elsewhere it only says what is missing: those tests then
# skip and name the package.
set -u
# prometheus: only for `promtool check metrics`, which lints the watcher's exposition.
# npm: yaml-language-server for the editor tests; shellcheck lints the action's scripts;
# kea-dhcp4-server checks and runs deploy/'s option-66 example; chromium renders the HTML
# report of `gitprov fleet` headless.
PKGS="curl openssl tftp-hpa tftpd-hpa busybox dnsmasq-base nginx iproute2 prometheus npm shellcheck kea-dhcp4-server chromium"
# Daemons the tests start themselves, on free ports: installed by this script, they stay
# stopped and disabled.
NO_SERVICE="nginx tftpd-hpa prometheus kea-dhcp4-server"
missing=""
for p in $PKGS; do
  # npm also comes with other builds of node (nodesource's nodejs bundles it, and
  # conflicts with Debian's npm): the command is what counts.
  [ "$p" = npm ] && command -v npm >/dev/null 2>&1 && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
  echo "install-peers: all present ($PKGS)" >&2
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-peers: not root or no apt-get; tests needing$missing will skip" >&2
  exit 0
fi
echo "install-peers: installing$missing" >&2
# The tests start every daemon they need themselves, on free ports: a package's postinst
# must start none (a system nginx or tftpd would hold ports 80 and 69, a prometheus would
# scrape for months). policy-rc.d exit 101 is Debian's "do not start"; one already there
# (Docker images ship one) is the admin's and stays as it is.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  trap 'rm -f "$policy"' EXIT
  trap 'exit 130' INT TERM
  printf '#!/bin/sh\n# install-peers.sh: no service starts while it installs\nexit 101\n' >"$policy"
  chmod 755 "$policy"
fi
apt-get update -q >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1 \
  || echo "install-peers: apt-get failed; tests needing$missing will skip" >&2
for p in $NO_SERVICE; do
  case " $missing " in *" $p "*) ;; *) continue ;; esac
  # postinst enabled it for the next boot; systemctl edits the links without a running
  # systemd (and disables the SysV script through update-rc.d).
  if command -v systemctl >/dev/null 2>&1; then
    systemctl stop "$p.service" >/dev/null 2>&1 || true
    systemctl disable "$p.service" >/dev/null 2>&1 || true
  fi
  if command -v update-rc.d >/dev/null 2>&1 && [ -e "/etc/init.d/$p" ]; then
    update-rc.d "$p" disable >/dev/null 2>&1 || true
  fi
done
exit 0
