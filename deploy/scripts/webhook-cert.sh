#!/usr/bin/env bash
# The injector's serving certificate without cert-manager: a private CA and a server
# certificate for ward-injector.<namespace>.svc, stored as Secret ward-injector-tls (which the
# injector mounts and re-reads when it changes), with the CA put into the webhook's caBundle.
#
#   deploy/scripts/webhook-cert.sh                      # create, or rotate: run it again
#   deploy/scripts/webhook-cert.sh --out DIR --dry-run  # only write ca.crt, tls.crt, tls.key to DIR
#
# Options: --namespace NS (default ward-system), --days N (default 365), --out DIR, --dry-run.
# Rotation does not interrupt admission: the caBundle keeps the previous CA next to the new one,
# so the API server trusts the injector's old and new certificates while the Secret propagates.
# Needs openssl and (unless --dry-run) kubectl with rights on the Secret and the webhook.
set -euo pipefail

NS=ward-system
DAYS=365
OUT=""
DRY_RUN=0
SVC=ward-injector
SECRET=ward-injector-tls
WEBHOOK=ward-sidecar-injector

while [ $# -gt 0 ]; do
  case "$1" in
    --namespace) NS="$2"; shift 2 ;;
    --days) DAYS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "webhook-cert.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

if [ -z "$OUT" ]; then
  OUT="$(mktemp -d)"
  trap 'rm -rf "$OUT"' EXIT
fi
mkdir -p "$OUT"
umask 077

HOST="$SVC.$NS.svc"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$OUT/ca.key" -out "$OUT/ca.crt" -days "$DAYS" -subj "/CN=ward-injector-ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$OUT/tls.key" -out "$OUT/tls.csr" -subj "/CN=$HOST" 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:%s.cluster.local\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n' "$HOST" "$HOST" > "$OUT/ext.cnf"
openssl x509 -req -in "$OUT/tls.csr" -CA "$OUT/ca.crt" -CAkey "$OUT/ca.key" -CAcreateserial \
  -out "$OUT/tls.crt" -days "$DAYS" -extfile "$OUT/ext.cnf" 2>/dev/null
rm -f "$OUT/tls.csr" "$OUT/ext.cnf" "$OUT/ca.srl"
# The CA key is not needed again (each run makes a new CA): do not leave it around.
rm -f "$OUT/ca.key"

if [ "$DRY_RUN" = 1 ]; then
  echo "webhook-cert.sh: wrote $OUT/ca.crt, $OUT/tls.crt, $OUT/tls.key for $HOST"
  exit 0
fi

kubectl -n "$NS" create secret tls "$SECRET" --cert "$OUT/tls.crt" --key "$OUT/tls.key" \
  --dry-run=client -o yaml | kubectl apply -f -

# New CA first, plus the CA the webhook trusted until now (if any).
OLD_CA="$(kubectl get mutatingwebhookconfiguration "$WEBHOOK" -o jsonpath='{.webhooks[0].clientConfig.caBundle}' | base64 -d 2>/dev/null | awk '/BEGIN CERTIFICATE/{n++} n==1' || true)"
BUNDLE="$( { cat "$OUT/ca.crt"; [ -n "$OLD_CA" ] && printf '%s\n' "$OLD_CA"; } | base64 | tr -d '\n')"
COUNT="$(kubectl get mutatingwebhookconfiguration "$WEBHOOK" -o jsonpath='{range .webhooks[*]}x{end}' | wc -c)"
PATCH="["
for i in $(seq 0 $((COUNT - 1))); do
  [ "$i" -gt 0 ] && PATCH="$PATCH,"
  PATCH="$PATCH{\"op\":\"add\",\"path\":\"/webhooks/$i/clientConfig/caBundle\",\"value\":\"$BUNDLE\"}"
done
PATCH="$PATCH]"
kubectl patch mutatingwebhookconfiguration "$WEBHOOK" --type=json -p "$PATCH"
echo "webhook-cert.sh: Secret $NS/$SECRET and the caBundle of $WEBHOOK updated"
