#!/usr/bin/env bash
# `make run`: every service locally on unprivileged ports, a demo domain and user, and how to try them.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

export POSTROOM_NAMESPACE="${POSTROOM_NAMESPACE:-postroom-dev}"
export POSTROOM_HOSTNAME="${POSTROOM_HOSTNAME:-localhost}"
export POSTROOM_SMTP_LISTEN="${POSTROOM_SMTP_LISTEN:-127.0.0.1:2525}"
export POSTROOM_SUBMISSION_LISTEN="${POSTROOM_SUBMISSION_LISTEN:-127.0.0.1:2587}"
export POSTROOM_SMTPS_LISTEN="${POSTROOM_SMTPS_LISTEN:-127.0.0.1:2465}"
export POSTROOM_POP3_LISTEN="${POSTROOM_POP3_LISTEN:-127.0.0.1:2110}"
export POSTROOM_POP3S_LISTEN="${POSTROOM_POP3S_LISTEN:-127.0.0.1:2995}"
export POSTROOM_ADMIN_LISTEN="${POSTROOM_ADMIN_LISTEN:-127.0.0.1:8080}"
export POSTROOM_ADMIN_TOKEN="${POSTROOM_ADMIN_TOKEN:-dev-admin-token}"
DEMO_DOMAIN=example.test
DEMO_USER="demo@$DEMO_DOMAIN"
DEMO_PASSWORD=demo-password

"$BIN/postroom" domain add "$DEMO_DOMAIN" >/dev/null 2>&1 || true
if ! printf '%s\n' "$DEMO_PASSWORD" | "$BIN/postroom" user add "$DEMO_USER" --password-stdin >/dev/null 2>&1; then
    printf '%s\n' "$DEMO_PASSWORD" | "$BIN/postroom" user passwd "$DEMO_USER" --password-stdin >/dev/null
fi

"$BIN/postroom" run &
RUN_PID=$!
trap 'kill -TERM $RUN_PID 2>/dev/null; wait $RUN_PID' INT TERM

# Print the instructions once every service says it is ready (metrics ports 9101-9104), or after 60 s.
for _ in $(seq 120); do
    ready=0
    for port in 9101 9102 9103 9104; do
        python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/readyz', timeout=1)" \
            2>/dev/null && ready=$((ready + 1))
    done
    ((ready == 4)) && break
    kill -0 $RUN_PID 2>/dev/null || exit 1
    sleep 0.5
done

cat <<MSG

  Postroom is running (namespace $POSTROOM_NAMESPACE). Stop it with Ctrl-C.

  SMTP (MX)          $POSTROOM_SMTP_LISTEN
  Submission         $POSTROOM_SUBMISSION_LISTEN   (STARTTLS + AUTH)
  SMTPS              $POSTROOM_SMTPS_LISTEN   (implicit TLS)
  POP3               $POSTROOM_POP3_LISTEN   (STLS)
  POP3S              $POSTROOM_POP3S_LISTEN
  Admin API          http://$POSTROOM_ADMIN_LISTEN/api/v1/  (Bearer $POSTROOM_ADMIN_TOKEN)
  Metrics            http://127.0.0.1:9101/metrics … :9104/metrics
  Demo user          $DEMO_USER / $DEMO_PASSWORD

  Send a message (in another terminal):
    $BIN/python -c "import smtplib; smtplib.SMTP('127.0.0.1', ${POSTROOM_SMTP_LISTEN##*:}).sendmail('friend@elsewhere.test', ['$DEMO_USER'], 'Subject: Hello\r\n\r\nHello from Postroom.\r\n')"

  Fetch it over POP3 (and delete it):
    $BIN/python -c "import poplib; p = poplib.POP3('127.0.0.1', ${POSTROOM_POP3_LISTEN##*:}); p.user('$DEMO_USER'); p.pass_('$DEMO_PASSWORD'); print(b'\n'.join(p.retr(1)[1]).decode()); p.dele(1); p.quit()"

MSG
wait $RUN_PID
