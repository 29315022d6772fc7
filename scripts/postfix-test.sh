#!/usr/bin/env bash
# Delivers mail through a real Postfix (Debian's package) to the receiver: installs Postfix if
# it is missing, gives it a configuration of its own that relays one test domain (cockpit.test)
# to the receiver on 127.0.0.1 and refuses everything else, then runs tests/postfix.rs (ignored
# in the default `cargo test`, as it needs root and a system Postfix). Idempotent; needs root.
#
# The test writes the transport (the receiver's port is chosen at start), starts Postfix,
# sends through it, and stops it again; Postfix's log is /var/log/postfix-cockpit-test.log.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "postfix-test: needs root (installs and starts Postfix)" >&2
    exit 1
fi

if ! command -v postfix >/dev/null; then
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
fi

postfix stop >/dev/null 2>&1 || true
cat > /etc/postfix/main.cf <<'CONF'
# Written by cockpit's scripts/postfix-test.sh: a Postfix that relays cockpit.test to the
# receiver under test and nothing anywhere else.
compatibility_level = 3.6
myhostname = postfix.test
mydomain = postfix.test
myorigin = postfix.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = cockpit.test
transport_maps = texthash:/etc/postfix/cockpit_transport
relay_transport = error:5.7.1 this Postfix relays only cockpit.test
default_transport = error:5.7.1 this Postfix relays only cockpit.test
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
smtputf8_enable = yes
message_size_limit = 20971520
alias_maps =
alias_database =
local_recipient_maps =
biff = no
smtpd_tls_security_level = none
smtp_tls_security_level = none
maillog_file = /var/log/postfix-cockpit-test.log
# Retry deferred mail quickly: the test flushes the queue anyway.
minimal_backoff_time = 10s
maximal_backoff_time = 20s
queue_run_delay = 10s
CONF
: > /etc/postfix/cockpit_transport
postfix check

cargo test --locked --test postfix -- --ignored --nocapture
