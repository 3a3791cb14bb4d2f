#!/usr/bin/env bash
# The control plane's TLS certificate without cert-manager: a private CA kept in Secret
# ward-control-plane-ca, a server certificate it signs for ward-control-plane.<namespace>.svc in
# Secret ward-control-plane-tls (which the control plane mounts and re-reads when it changes), and
# the CA as ConfigMap ward-control-plane-ca (key ca.crt) in every namespace whose sidecars reach
# the control plane (the injector's --control-plane-ca mounts it into them).
#
#   deploy/scripts/control-plane-cert.sh                      # create, or renew: run it again
#   deploy/scripts/control-plane-cert.sh --namespaces shop,web
#   deploy/scripts/control-plane-cert.sh --out DIR --dry-run  # only write ca.crt, tls.crt, tls.key to DIR
#
# Options: --namespace NS (the control plane's, default ward-system), --namespaces A,B (where the
# CA ConfigMap goes; default every namespace labelled ward.dev/inject=enabled), --days N (server
# certificate, default 90), --ca-days N (CA, default 3650), --new-ca (replace the CA), --out DIR,
# --dry-run.
# Renewal keeps the CA; the control plane picks the new certificate up within 10 s. With --new-ca
# the ConfigMaps (the new and the previous CA) are written before the certificate; sidecars read
# their CA file again whenever they connect, so none needs a restart.
# Needs openssl and (unless --dry-run) kubectl with rights on those Secrets and ConfigMaps.
set -euo pipefail

NS=ward-system
TARGETS=""
DAYS=90
CA_DAYS=3650
NEW_CA=0
OUT=""
DRY_RUN=0
SVC=ward-control-plane
SECRET=ward-control-plane-tls
CA_SECRET=ward-control-plane-ca
CA_CONFIGMAP=ward-control-plane-ca

while [ $# -gt 0 ]; do
  case "$1" in
    --namespace) NS="$2"; shift 2 ;;
    --namespaces) TARGETS="$2"; shift 2 ;;
    --days) DAYS="$2"; shift 2 ;;
    --ca-days) CA_DAYS="$2"; shift 2 ;;
    --new-ca) NEW_CA=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "control-plane-cert.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
for n in "$DAYS" "$CA_DAYS"; do
  case "$n" in ''|*[!0-9]*) echo "control-plane-cert.sh: --days and --ca-days take a number of days, got '$n'" >&2; exit 2 ;; esac
done

if [ -z "$OUT" ]; then
  OUT="$(mktemp -d)"
  trap 'rm -rf "$OUT"' EXIT
fi
mkdir -p "$OUT"
umask 077

HOST="$SVC.$NS.svc"

# The CA: the one already in the cluster, unless there is none or --new-ca.
OLD_CA=""
HAVE_CA=0
if [ "$DRY_RUN" = 0 ] && kubectl -n "$NS" get secret "$CA_SECRET" >/dev/null 2>&1; then
  kubectl -n "$NS" get secret "$CA_SECRET" -o jsonpath='{.data.tls\.crt}' | base64 -d > "$OUT/ca.crt"
  if [ "$NEW_CA" = 1 ]; then
    OLD_CA="$(cat "$OUT/ca.crt")"
  else
    kubectl -n "$NS" get secret "$CA_SECRET" -o jsonpath='{.data.tls\.key}' | base64 -d > "$OUT/ca.key"
    HAVE_CA=1
  fi
fi
if [ "$HAVE_CA" = 0 ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$OUT/ca.key" -out "$OUT/ca.crt" -days "$CA_DAYS" -subj "/CN=ward-control-plane-ca" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$OUT/tls.key" -out "$OUT/tls.csr" -subj "/CN=$HOST" 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:%s.cluster.local\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n' "$HOST" "$HOST" > "$OUT/ext.cnf"
openssl x509 -req -in "$OUT/tls.csr" -CA "$OUT/ca.crt" -CAkey "$OUT/ca.key" -CAcreateserial \
  -out "$OUT/tls.crt" -days "$DAYS" -extfile "$OUT/ext.cnf" 2>/dev/null
rm -f "$OUT/tls.csr" "$OUT/ext.cnf" "$OUT/ca.srl"

if [ "$DRY_RUN" = 1 ]; then
  rm -f "$OUT/ca.key"
  echo "control-plane-cert.sh: wrote $OUT/ca.crt, $OUT/tls.crt, $OUT/tls.key for $HOST"
  exit 0
fi

# 1. The CA, kept for the next renewal.
if [ "$HAVE_CA" = 0 ]; then
  kubectl -n "$NS" create secret tls "$CA_SECRET" --cert "$OUT/ca.crt" --key "$OUT/ca.key" \
    --dry-run=client -o yaml | kubectl apply -f -
fi
rm -f "$OUT/ca.key"

# 2. The CA where the sidecars read it (with the previous CA after --new-ca), before the
#    control plane serves a certificate it signed.
if [ -z "$TARGETS" ]; then
  TARGETS="$(kubectl get namespaces -l ward.dev/inject=enabled -o jsonpath='{range .items[*]}{.metadata.name},{end}')"
fi
{ cat "$OUT/ca.crt"; [ -n "$OLD_CA" ] && printf '%s\n' "$OLD_CA"; } > "$OUT/bundle.crt"
IFS=',' read -r -a NAMESPACES <<< "$TARGETS"
for target in "${NAMESPACES[@]}"; do
  [ -z "$target" ] && continue
  kubectl -n "$target" create configmap "$CA_CONFIGMAP" --from-file=ca.crt="$OUT/bundle.crt" \
    --dry-run=client -o yaml | kubectl apply -f -
done

# 3. The server certificate (with the CA, as cert-manager writes it).
kubectl -n "$NS" create secret generic "$SECRET" --type=kubernetes.io/tls \
  --from-file=tls.crt="$OUT/tls.crt" --from-file=tls.key="$OUT/tls.key" --from-file=ca.crt="$OUT/ca.crt" \
  --dry-run=client -o yaml | kubectl apply -f -
echo "control-plane-cert.sh: Secret $NS/$SECRET for $HOST; ConfigMap $CA_CONFIGMAP in: ${TARGETS:-no namespace}"
