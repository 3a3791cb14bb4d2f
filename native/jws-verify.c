/*
 * RSASSA-PKCS1-v1_5 signature checks for JWS RS256, RS384 and RS512 (RFC 7518 §3.3), with the
 * OpenSSL that node itself links, through a verification context prepared once per key and
 * algorithm.
 *
 * Why: node's crypto.verify prepares everything again on every call (a job object, the digest
 * and signature contexts, OpenSSL 3's algorithm fetches), ~5 us of a ~25 us RS256 check on our
 * benchmark host; with the verified-token cache off or missed that is every call's cost
 * (BENCHMARKS.md). The check itself is OpenSSL's, the one crypto.verify reaches:
 * EVP_PKEY_verify over the message digest, with PKCS#1 v1.5 padding and the signature digest
 * set, which decodes the signature, checks the padding and compares the whole DigestInfo
 * (algorithm identifier and digest) with the expected one.
 *
 * What the caller (src/authn/native-verify.ts) has done: chosen the algorithm from the JOSE
 * header, checked that the key may serve it, and the signature's length. What this file checks
 * again, since it cannot trust what it is handed: an RSA modulus of 2048 to 16384 bits and an
 * odd exponent of at least 3, one of the three digests, a verifier that
 * this file made, byte arrays, lengths within them, and a signature of exactly the modulus'
 * length. Nothing here throws into JavaScript: a key it refuses is a string saying why; a
 * verification is 1 (holds), 0 (does not) or -1 (arguments refused). OpenSSL's error queue is
 * emptied after every failure, so nothing stale reaches node's own crypto calls.
 *
 * Built by bin/build-native.js (npm's install step) when a C compiler is there; without it
 * ward checks these signatures with crypto.verify.
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <string.h>

/* Marks the externals this file made: any other value is refused as a verifier. */
static const napi_type_tag VERIFIER_TAG = {0x7761726452534131ULL, 0x6a77732d76657269ULL};

typedef struct {
  EVP_PKEY *pkey;
  EVP_PKEY_CTX *pctx; /* verify-initialised: PKCS#1 v1.5, the signature digest set */
  EVP_MD *md;
  EVP_MD_CTX *mdctx; /* reused for every message digest */
  size_t sig_bytes;  /* the modulus in octets (k of RFC 8017) */
} verifier;

static void verifier_free(verifier *v) {
  if (v == NULL) return;
  EVP_MD_CTX_free(v->mdctx);
  EVP_PKEY_CTX_free(v->pctx);
  EVP_MD_free(v->md);
  EVP_PKEY_free(v->pkey);
  free(v);
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  verifier_free((verifier *)data);
}

static napi_value string_value(napi_env env, const char *s) {
  napi_value out = NULL;
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &out);
  return out;
}

static napi_value int_value(napi_env env, int n) {
  napi_value out = NULL;
  napi_create_int32(env, n, &out);
  return out;
}

/* The bytes of a Uint8Array (a Buffer is one), or 0 when `value` is not one. */
static int bytes_of(napi_env env, napi_value value, const unsigned char **data, size_t *length) {
  bool is_typed = false;
  napi_typedarray_type type;
  void *p = NULL;
  size_t n = 0;
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed) return 0;
  if (napi_get_typedarray_info(env, value, &type, &n, &p, NULL, NULL) != napi_ok || type != napi_uint8_array) return 0;
  if (p == NULL && n != 0) return 0;
  *data = p;
  *length = n;
  return 1;
}

/*
 * rsaVerifier(n, e, digest): a verifier for the RSA public key of modulus `n` and exponent `e`
 * (unsigned big-endian, as a JWK's `n` and `e` decode) and one of "SHA256", "SHA384",
 * "SHA512", or a string saying why not. Built from the numbers (EVP_PKEY_fromdata), not from
 * DER: OpenSSL 3's DER decoders and encoders walk every provider's algorithms and touched ~4 MB
 * of node's code and data in each sidecar that made its first verifier (its peak RSS).
 */
static napi_value rsa_verifier(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  const unsigned char *n = NULL, *e = NULL;
  size_t n_len = 0, e_len = 0;
  char name[8];
  size_t name_len = 0;
  napi_valuetype t;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3) return string_value(env, "three arguments expected");
  /* 2048 to 16384 bits, no leading zero octet (RFC 7518 §6.3.1.1: the fewest octets). */
  if (!bytes_of(env, argv[0], &n, &n_len) || n_len < 256 || n_len > 2048 || n[0] == 0) return string_value(env, "the modulus is not 256 to 2048 octets without a leading zero");
  /* An odd exponent of at least 3 (1 would make every signature its own message), at most 64 bits. */
  if (!bytes_of(env, argv[1], &e, &e_len) || e_len < 1 || e_len > 8 || e[0] == 0 || (e[e_len - 1] & 1) == 0 || (e_len == 1 && e[0] < 3)) {
    return string_value(env, "the exponent is not odd, at least 3 and at most 64 bits");
  }
  if (napi_typeof(env, argv[2], &t) != napi_ok || t != napi_string ||
      napi_get_value_string_utf8(env, argv[2], name, sizeof name, &name_len) != napi_ok || name_len != 6 ||
      (strcmp(name, "SHA256") != 0 && strcmp(name, "SHA384") != 0 && strcmp(name, "SHA512") != 0)) {
    return string_value(env, "the digest is not SHA256, SHA384 or SHA512");
  }

  const char *why = NULL;
  verifier *v = calloc(1, sizeof *v);
  if (v == NULL) return string_value(env, "out of memory");
  BIGNUM *bn_n = BN_bin2bn(n, (int)n_len, NULL), *bn_e = BN_bin2bn(e, (int)e_len, NULL);
  OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
  OSSL_PARAM *params = NULL;
  EVP_PKEY_CTX *kctx = NULL;
  if (bn_n == NULL || bn_e == NULL || bld == NULL || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
      !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) || (params = OSSL_PARAM_BLD_to_param(bld)) == NULL) {
    why = "out of memory";
  } else if ((kctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) == NULL || EVP_PKEY_fromdata_init(kctx) != 1 ||
             EVP_PKEY_fromdata(kctx, &v->pkey, EVP_PKEY_PUBLIC_KEY, params) != 1 || v->pkey == NULL) {
    why = "OpenSSL refused the key";
  } else if (!EVP_PKEY_is_a(v->pkey, "RSA")) why = "not an rsaEncryption key";
  else if (EVP_PKEY_get_bits(v->pkey) < 2048 || EVP_PKEY_get_bits(v->pkey) > 16384) why = "an RSA key of fewer than 2048 or more than 16384 bits";
  else if ((v->md = EVP_MD_fetch(NULL, name, NULL)) == NULL) why = "the digest is not available";
  else if ((v->mdctx = EVP_MD_CTX_new()) == NULL || (v->pctx = EVP_PKEY_CTX_new_from_pkey(NULL, v->pkey, NULL)) == NULL) why = "out of memory";
  else if (EVP_PKEY_verify_init(v->pctx) != 1 || EVP_PKEY_CTX_set_rsa_padding(v->pctx, RSA_PKCS1_PADDING) != 1 ||
           EVP_PKEY_CTX_set_signature_md(v->pctx, v->md) != 1) {
    why = "OpenSSL refused the verification context";
  }
  EVP_PKEY_CTX_free(kctx);
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(bld);
  BN_free(bn_n);
  BN_free(bn_e);
  int bytes = why == NULL ? EVP_PKEY_get_size(v->pkey) : 0;
  if (why == NULL && bytes <= 0) why = "the key has no size";
  if (why != NULL) {
    ERR_clear_error();
    verifier_free(v);
    return string_value(env, why);
  }
  v->sig_bytes = (size_t)bytes;

  napi_value out;
  if (napi_create_external(env, v, finalize, NULL, &out) != napi_ok) {
    verifier_free(v);
    return string_value(env, "could not create the verifier");
  }
  /* From here the finalizer owns v. */
  if (napi_type_tag_object(env, out, &VERIFIER_TAG) != napi_ok) return string_value(env, "could not tag the verifier");
  return out;
}

/* A length argument: an integer from 0 to `max`, or -1. */
static double length_of(napi_env env, napi_value value, size_t max) {
  double n = -1;
  if (napi_get_value_double(env, value, &n) != napi_ok || !(n >= 0) || n > (double)max || n != (double)(size_t)n) return -1;
  return n;
}

/*
 * rsaVerify(verifier, message, length, signature, signatureLength): 1 when
 * signature[0, signatureLength) is a valid RSASSA-PKCS1-v1_5 signature of message[0, length) for
 * the verifier's key and digest, 0 when it is not, -1 when the arguments are refused. (Lengths,
 * so that the caller can pass the scratch buffers it decodes into, without a view per call.)
 */
static napi_value rsa_verify(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  bool tagged = false;
  verifier *v = NULL;
  const unsigned char *msg = NULL, *sig = NULL;
  size_t msg_len = 0, sig_len = 0;
  double length = -1, sig_length = -1;
  napi_valuetype t;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 5) return int_value(env, -1);
  /* An external first: the tag check on null or undefined would throw into JavaScript. */
  if (napi_typeof(env, argv[0], &t) != napi_ok || t != napi_external ||
      napi_check_object_type_tag(env, argv[0], &VERIFIER_TAG, &tagged) != napi_ok || !tagged ||
      napi_get_value_external(env, argv[0], (void **)&v) != napi_ok || v == NULL) {
    return int_value(env, -1);
  }
  if (!bytes_of(env, argv[1], &msg, &msg_len) || !bytes_of(env, argv[3], &sig, &sig_len)) return int_value(env, -1);
  if ((length = length_of(env, argv[2], msg_len)) < 0 || (sig_length = length_of(env, argv[4], sig_len)) < 0) return int_value(env, -1);
  sig_len = (size_t)sig_length;
  /* RFC 8017 §8.2.2 step 1: exactly k octets, no shorter spelling of the same integer. */
  if (sig_len != v->sig_bytes) return int_value(env, 0);

  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  int ok = EVP_DigestInit_ex(v->mdctx, v->md, NULL) == 1 && EVP_DigestUpdate(v->mdctx, msg, (size_t)length) == 1 &&
           EVP_DigestFinal_ex(v->mdctx, digest, &digest_len) == 1 &&
           EVP_PKEY_verify(v->pctx, sig, sig_len, digest, digest_len) == 1;
  if (!ok) ERR_clear_error();
  return int_value(env, ok ? 1 : 0);
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "rsaVerifier", NAPI_AUTO_LENGTH, rsa_verifier, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "rsaVerifier", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "rsaVerify", NAPI_AUTO_LENGTH, rsa_verify, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "rsaVerify", fn) != napi_ok) return NULL;
  return exports;
}
